"""The invariants of the design note, each pinned by a test, for the region-matching engine."""
import pytest
import torch
from conftest import seeded

from bench.gpu_suite.inputs import copies_of_destinations
from mame_core import IdentityPlan, MergeSettings, merged_tokens_for, pattern_for, plan_merge, plan_seeded
from mame_core.merge import tiling_for
from mame_core.size_bias import biased_attention_reference


def tokens(b, n, c, seed=0, dtype=torch.float32):
    return torch.randn(b, n, c, generator=seeded(seed)).to(dtype)


def test_ratio_zero_returns_the_same_tensor():
    x = tokens(2, 256, 8)
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.0))
    assert isinstance(plan, IdentityPlan) and plan.key_log_size is None
    assert plan.merge(x) is x and plan.restore(x) is x


def test_grid_with_nothing_to_remove_is_identity():
    x = tokens(1, 16, 4)  # a 4x4 grid at ratio 0.03 removes round(0.48) = 0 tokens
    assert plan_merge(x, 4, 4, MergeSettings(ratio=0.03, tile=2)).merge(x) is x


@pytest.mark.parametrize("frames,h,w", [(1, 16, 16), (1, 13, 19), (1, 10, 24), (3, 9, 10)])
@pytest.mark.parametrize("pattern", [0, 12345])
def test_qkv_restores_tokenwise_functions_exactly_on_copies(frames, h, w, pattern):
    settings = MergeSettings(ratio=0.5, tile=(4, 4))
    x = copies_of_destinations(3, frames, h, w, 32, settings, pattern, seed=1)
    f = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.GELU())
    with torch.no_grad():
        for p in f.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(2)) * 0.3)
        plan = plan_merge(x, h, w, settings, torch.tensor(pattern), frames)
        merged = plan.merge(x)
        assert merged.shape[1] == merged_tokens_for(h, w, settings, frames) < x.shape[1]
        torch.testing.assert_close(plan.restore(f(merged)), f(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_shapes_and_dtypes_are_kept(dtype, mode):
    x = tokens(3, 13 * 19, 16, dtype=dtype)
    plan = plan_merge(x, 13, 19, MergeSettings(ratio=0.5, mode=mode))
    merged = plan.merge(x)
    assert merged.dtype == dtype and merged.shape == (3, plan.merged_tokens, 16)
    assert plan.key_log_size.shape == (3, plan.merged_tokens)
    restored = plan.restore(merged)
    assert restored.shape == x.shape and restored.dtype == dtype
    assert torch.isfinite(restored.float()).all()


# (h, w) of UNet levels d1/d2/d4 for 832x1216, 896x1152, 640x960, 768x1344, and a 12x12 grid
LEVEL_GRIDS = [
    (104, 152), (52, 76), (26, 38),
    (112, 144), (56, 72), (28, 36),
    (80, 120), (40, 60), (20, 30),
    (96, 168), (48, 84), (24, 42),
    (12, 12),
]


@pytest.mark.parametrize("h,w", LEVEL_GRIDS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_every_grid_merges_at_the_ratio_asked_for(h, w, ratio):
    settings = MergeSettings(ratio=ratio)
    tiling = tiling_for(h, w, settings)
    removed = h * w - merged_tokens_for(h, w, settings)
    assert abs(removed - ratio * h * w) <= 0.5  # the whole grid, within half a token
    assert sum(b.tiles * b.tile_tokens for b in tiling.blocks) == h * w  # no strip left out
    if h * w <= 52 * 76:
        x = tokens(1, h * w, 8)
        plan = plan_merge(x, h, w, settings, 3)
        assert plan.merge(x).shape[1] == plan.merged_tokens == h * w - removed
        torch.testing.assert_close(plan.key_log_size.exp().sum(), torch.tensor(float(h * w)))


def test_video_grids_with_a_frame_count_that_is_not_a_multiple_of_the_tile():
    x = tokens(2, 5 * 12 * 10, 8)
    settings = MergeSettings(ratio=0.5, tile_frames=2)
    plan = plan_merge(x, 12, 10, settings, torch.tensor(9), frames=5)
    assert plan.merged_tokens == merged_tokens_for(12, 10, settings, 5) == 300
    assert plan.restore(plan.merge(x)).shape == x.shape
    blocks = tiling_for(12, 10, settings, 5).blocks
    assert {b.shape[0] for b in blocks} == {1, 2}  # 3-D tiles of 1 and 2 frames
    # tiles span frames: in a still video each destination's twin in the other frame merges
    # into it, so at ratio 1/8 (one per 2x2x2 cell) the restore is exact
    still = tokens(1, 12 * 12, 8, seed=4).repeat(1, 2, 1)
    plan = plan_merge(still, 12, 12, MergeSettings(ratio=0.125), 0, frames=2)
    assert plan.merged_tokens == 2 * 144 - 36
    torch.testing.assert_close(plan.restore(plan.merge(still)), still)


def test_each_batch_item_gets_its_own_matrices():
    x = tokens(2, 64, 8)
    alone = plan_merge(x[1:], 8, 8, MergeSettings(ratio=0.5)).merge(x[1:])
    together = plan_merge(x, 8, 8, MergeSettings(ratio=0.5)).merge(x)
    torch.testing.assert_close(together[1:], alone)


def test_same_seed_is_bit_identical_and_global_rng_untouched():
    x = tokens(2, 32 * 32, 16)
    state = torch.get_rng_state()
    a = plan_seeded(x, 32, 32, MergeSettings(ratio=0.5), 1234, "input", 1, 0.5)
    b = plan_seeded(x, 32, 32, MergeSettings(ratio=0.5), 1234, "input", 1, 0.5)
    assert torch.equal(a.restore(a.merge(x)), b.restore(b.merge(x)))
    assert torch.equal(state, torch.get_rng_state())


def test_pattern_changes_the_destinations():
    x = tokens(1, 32 * 32, 16)
    settings = MergeSettings(ratio=0.5)
    merged = [plan_merge(x, 32, 32, settings, pattern_for(1, "input", step)).merge(x) for step in range(4)]
    assert all(not torch.equal(merged[0], m) for m in merged[1:])


def attention(x, heads=2, log_size=None, kv=None):
    kv = x if kv is None else kv
    size = torch.zeros(kv.shape[:2], dtype=x.dtype) if log_size is None else log_size
    return biased_attention_reference(x * 3.0, kv, kv, size, heads)


def test_a_distinct_token_keeps_its_key_and_its_output():
    # 16x16 copies of one vector, one unique token: merging must not drop the unique key.
    c = 8
    x = tokens(1, 1, c, seed=5).expand(1, 256, c).clone()
    unique = tokens(1, 1, c, seed=6)[0, 0] * 3
    x[0, 77] = unique
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.5), 11)
    merged = plan.merge(x)
    assert (merged[0] - unique).norm(dim=-1).min() < 1e-5  # its key is still in attention
    full = attention(x)
    out = plan.restore(attention(merged, log_size=plan.key_log_size))
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)  # exact with proportional attention
    torch.testing.assert_close(out[0, 77], full[0, 77])
    # and without the unique key the output would be visibly different
    no_unique = attention(x, kv=torch.cat([x[:, :77], x[:, 78:]], dim=1))
    assert (no_unique - full).abs().max() > 1e-2


def test_content_decides_what_merges_under_a_fixed_count():
    # Left half of an 8x8 tile repeats one token, right half is random: every merge is taken
    # from the redundant left half, and none of the distinct right-half tokens merges.
    grid = torch.randn(8, 8, 16, generator=seeded(7))
    grid[:, :4] = grid[0, 0]
    x = grid.reshape(1, 64, 16)
    plan = plan_merge(x, 8, 8, MergeSettings(ratio=0.25), 3)
    slots = plan.groups()[0].reshape(8, 8)
    sizes = torch.bincount(slots.flatten(), minlength=plan.merged_tokens)
    right = sizes[slots[:, 4:].flatten()]
    assert (right == 1).all()  # every right-half token is alone in its slot
    assert plan.merged_tokens == 48


def test_redundant_tiles_give_more_than_their_share():
    # 16x16 grid in 8x8 tiles: the two left tiles repeat one token, the two right ones are
    # random. At ratio 0.3 all 77 merges come from the left tiles (more than 0.3 of them),
    # and the right tiles keep every token, so the share follows content across tiles.
    grid = torch.randn(16, 16, 16, generator=seeded(8))
    grid[:, :8] = grid[0, 0]
    x = grid.reshape(1, 256, 16)
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.3, tile=8), 5)
    assert plan.merged_tokens == 256 - round(0.3 * 256)
    slots = plan.groups()[0].reshape(16, 16)
    sizes = torch.bincount(slots.flatten(), minlength=plan.merged_tokens)
    assert (sizes[slots[:, 8:].flatten()] == 1).all()
    torch.testing.assert_close(plan.restore(plan.merge(x))[0, :].reshape(16, 16, 16), grid)


def test_threshold_decides_what_is_averaged_not_what_merges():
    x = tokens(1, 256, 8, seed=5)
    loose = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=-1.0), 4)
    tight = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=1.0), 4)
    assert torch.equal(loose.key_log_size, tight.key_log_size)  # same groups
    assert torch.equal(loose.groups(), tight.groups())
    # at τ = 1 no pair is averaged: every merged token is one of the input tokens exactly
    merged = tight.merge(x)[0]
    assert (torch.cdist(merged, x[0], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values < 1e-5).all()
    averaged = loose.merge(x)[0]
    assert (torch.cdist(averaged, x[0], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values > 1e-3).any()


@pytest.mark.parametrize(
    "settings",
    [
        MergeSettings(ratio=0.5, tile=(3, 3)),  # the shipped gate and τ
        MergeSettings(ratio=0.5, tile=(3, 3), gate="sigmoid", threshold=0.1, gate_width=0.3),  # soft
    ],
)
def test_gradcheck(settings):
    x = tokens(2, 30, 4, seed=3, dtype=torch.float64).requires_grad_(True)

    def merge_restore(inp):
        plan = plan_merge(inp, 6, 5, settings)
        return plan.restore(torch.tanh(plan.merge(inp)))

    assert torch.autograd.gradcheck(merge_restore, (x,), eps=1e-6, atol=1e-5)
