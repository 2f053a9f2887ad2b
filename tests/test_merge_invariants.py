"""The invariants of mame-algorithm.md, each pinned by a test."""
import pytest
import torch

from conftest import seeded
from mame_core import (
    IdentityPlan,
    MergeSettings,
    destination_indices,
    destinations_per_tile,
    plan_merge,
    plan_seeded,
)


def tokens(b, h, w, c, seed=0, dtype=torch.float32):
    return torch.randn(b, h * w, c, generator=seeded(seed)).to(dtype)


def test_ratio_zero_returns_the_same_tensor():
    x = tokens(2, 16, 16, 8)
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.0))
    assert isinstance(plan, IdentityPlan)
    assert plan.merge(x) is x
    assert plan.restore(x) is x


def test_tile_with_nothing_to_remove_is_identity():
    # A 2x2 tile at ratio 0.1 removes round(0.4) = 0 tokens.
    x = tokens(1, 8, 8, 4)
    plan = plan_merge(x, 8, 8, MergeSettings(ratio=0.1, tile=2))
    assert plan.merge(x) is x


def copies_of_destinations(b, h, w, c, tile, k, shift, seed):
    """Tokens where every tiled token is an exact copy of one of its tile's destinations."""
    gen = seeded(seed)
    th, tw = tile
    dests = destination_indices(th, tw, k, *shift)
    x = torch.randn(b, h, w, c, generator=gen)
    for ty in range(h // th):
        for tx in range(w // tw):
            patch = x[:, ty * th : (ty + 1) * th, tx * tw : (tx + 1) * tw].reshape(b, th * tw, c)
            choice = torch.randint(0, k, (th * tw,), generator=gen)
            for i in range(th * tw):
                if i not in dests:
                    patch[:, i] = patch[:, dests[choice[i]]]
            x[:, ty * th : (ty + 1) * th, tx * tw : (tx + 1) * tw] = patch.reshape(b, th, tw, c)
    return x.reshape(b, h * w, c)


@pytest.mark.parametrize("h,w", [(16, 16), (13, 19), (10, 24)])
@pytest.mark.parametrize("shift", [(0, 0), (3, 5)])
def test_qkv_restores_tokenwise_functions_exactly_on_copies(h, w, shift):
    settings = MergeSettings(ratio=0.5, tile=(4, 4), threshold=0.5)
    k = destinations_per_tile(16, 0.5)
    x = copies_of_destinations(3, h, w, 32, (4, 4), k, shift, seed=1)
    f = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU())
    with torch.no_grad():
        for p in f.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(2)) * 0.3)
        plan = plan_merge(x, h, w, settings, shift)
        merged = plan.merge(x)
        assert merged.shape[1] < x.shape[1]
        restored = plan.restore(f(merged))
        torch.testing.assert_close(restored, f(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_shapes_and_dtypes_are_kept(dtype, mode):
    x = tokens(3, 13, 19, 16, dtype=dtype)
    plan = plan_merge(x, 13, 19, MergeSettings(ratio=0.5, mode=mode))
    merged = plan.merge(x)
    assert merged.dtype == dtype
    assert merged.shape == (3, plan.merged_tokens, 16)
    restored = plan.restore(merged)
    assert restored.shape == x.shape and restored.dtype == dtype
    assert torch.isfinite(restored.float()).all()


def test_border_tokens_pass_through_unmerged():
    x = tokens(2, 10, 11, 8)
    plan = plan_merge(x, 10, 11, MergeSettings(ratio=0.5, tile=4))
    merged = plan.merge(x)
    grid = x.reshape(2, 10, 11, 8)
    border = torch.cat([grid[:, :8, 8:].reshape(2, -1, 8), grid[:, 8:].reshape(2, -1, 8)], dim=1)
    assert torch.equal(merged[:, -border.shape[1] :], border)
    restored = plan.restore(merged)
    assert torch.equal(restored.reshape(2, 10, 11, 8)[:, :, 8:], grid[:, :, 8:])
    assert torch.equal(restored.reshape(2, 10, 11, 8)[:, 8:], grid[:, 8:])


def test_each_batch_item_gets_its_own_matrices():
    x = tokens(2, 8, 8, 8)
    alone = plan_merge(x[1:], 8, 8, MergeSettings(ratio=0.5)).merge(x[1:])
    together = plan_merge(x, 8, 8, MergeSettings(ratio=0.5)).merge(x)
    torch.testing.assert_close(together[1:], alone)


def test_same_seed_is_bit_identical_and_global_rng_untouched():
    x = tokens(2, 32, 32, 16)
    state = torch.get_rng_state()
    a = plan_seeded(x, 32, 32, MergeSettings(ratio=0.5), 1234, "input", 1, 0.5)
    b = plan_seeded(x, 32, 32, MergeSettings(ratio=0.5), 1234, "input", 1, 0.5)
    assert torch.equal(a.restore(a.merge(x)), b.restore(b.merge(x)))
    assert torch.equal(state, torch.get_rng_state())


def test_seed_and_step_change_the_destination_pattern():
    # At ratio 0.5 the even patterns are the two checkerboards, so look across steps.
    x = tokens(1, 32, 32, 16)
    settings = MergeSettings(ratio=0.5)
    for seed in (1, 2):
        merged = [plan_seeded(x, 32, 32, settings, seed, "input", 1, step).merge(x) for step in range(8)]
        assert any(not torch.equal(merged[0], m) for m in merged[1:])


def test_higher_threshold_keeps_merged_tokens_closer_to_destinations():
    # τ decides who is averaged in: at τ near 1 a merged token is its destination alone.
    x = tokens(1, 16, 16, 8, seed=5)
    loose = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=-1.0)).merge(x)
    tight = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=0.999)).merge(x)
    dests = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=0.999))
    select = torch.tensor(destination_indices(8, 8, 32))
    tiles, _ = dests.grid.split(x)
    torch.testing.assert_close(tight.reshape(4, 32, 8), tiles[:, select])
    assert (loose.reshape(4, 32, 8) - tiles[:, select]).abs().sum() > 0


@pytest.mark.parametrize("gate", ["sigmoid", "hard"])
def test_gradcheck(gate):
    x = tokens(2, 6, 5, 4, seed=3, dtype=torch.float64).requires_grad_(True)
    settings = MergeSettings(ratio=0.5, tile=(3, 3), temperature=0.2, gate=gate, threshold=0.1, gate_width=0.3)

    def merge_restore(inp):
        plan = plan_merge(inp, 6, 5, settings)
        return plan.restore(torch.tanh(plan.merge(inp)))

    assert torch.autograd.gradcheck(merge_restore, (x,), eps=1e-6, atol=1e-5)
