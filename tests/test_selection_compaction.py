"""The two sort-free pieces of the whole-grid choice against references that sort and index:
the radix selection of the r highest scores, and the shift packing of the kept tokens."""
import pytest
import torch
from conftest import seeded

from mame_core.compaction import Compaction
from mame_core.selection import top_count_mask


def sorted_reference(score_row: torch.Tensor, count: int) -> torch.Tensor:
    keys = [(-round(float(v) * 2**20), i) for i, v in enumerate(score_row)]
    chosen = [i for _, i in sorted(keys)[:count]]
    mask = torch.zeros(score_row.shape[0], dtype=torch.bool)
    mask[chosen] = True
    return mask


@pytest.mark.parametrize("trial", range(12))
def test_selection_picks_exactly_the_highest_scores(trial):
    gen = seeded(100 + trial)
    n = int(torch.randint(1, 400, (1,), generator=gen))
    count = int(torch.randint(0, n + 1, (1,), generator=gen))
    score = torch.rand(3, n, generator=gen) * 2 - 1
    if trial % 2:
        score = torch.round(score * 4) / 4  # many ties: broken by position, earlier first
    mask = top_count_mask(score, count)
    assert (mask.sum(dim=1) == count).all()
    for row in range(3):
        assert torch.equal(mask[row], sorted_reference(score[row], count))


def test_selection_rejects_a_count_outside_the_row():
    with pytest.raises(ValueError, match="count must be in"):
        top_count_mask(torch.zeros(1, 5), 6)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("trial", range(6))
def test_shift_packing_keeps_the_kept_tokens_in_order_and_expands_back(trial, grad):
    gen = seeded(200 + trial)
    n = int(torch.randint(2, 500, (1,), generator=gen))
    removed_count = int(torch.randint(0, n, (1,), generator=gen))
    removed = top_count_mask(torch.rand(2, n, generator=gen), removed_count)
    packing = Compaction(removed, removed_count)
    x = torch.randn(2, n, 7, generator=gen).requires_grad_(grad)  # grad: the functional path
    packed = packing.compact(x)
    assert packed.shape == (2, n - removed_count, 7)
    for row in range(2):
        torch.testing.assert_close(packed[row], x[row][~removed[row]], rtol=0, atol=0)
    back = packing.expand(packed)
    keep = ~removed.unsqueeze(-1)
    torch.testing.assert_close(torch.where(keep, back, 0.0), torch.where(keep, x, 0.0), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("channels, parent_channels", [(7, 7), (8, 8), (2, 3)])
@pytest.mark.parametrize("large", [False, True])
def test_packing_moves_the_bits_untouched_nan_and_inf_included(dtype, channels, parent_channels, large, monkeypatch):
    # The no-graph path selects on integer words as wide as a token's row allows (16, 32 or
    # 64 bits; 2 of 3 channels: rows whose strides no wider word divides); it must agree bit
    # for bit with the plain graph path (torch.where) and with the indexing reference,
    # whatever the values. ``large``: 16-bit tensors as if they did not fit in cache (where on
    # wide words instead of the 16-bit arithmetic).
    if large:
        monkeypatch.setattr("mame_core.compaction.CACHE_RESIDENT_BYTES", 0)
    gen = seeded(300 + channels)
    n, removed_count = 301, 117
    removed = top_count_mask(torch.rand(2, n, generator=gen), removed_count)
    packing = Compaction(removed, removed_count)
    x = torch.randn(2, n, parent_channels, generator=gen).to(dtype)[..., :channels]
    x[0, 5, 1], x[1, 40, 0], x[1, 41, -1], x[0, 7, 0] = float("nan"), float("inf"), float("-inf"), -0.0
    x[1, 42, 1] = -float("nan")
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    packed = packing.compact(x)
    for row in range(2):
        assert torch.equal(packed[row].view(bits), x[row][~removed[row]].view(bits))
    with torch.enable_grad():
        graph = packing.compact(x.clone().requires_grad_(dtype.is_floating_point)).detach()
    assert torch.equal(graph.view(bits), packed.view(bits))
    back = packing.expand(packed)
    keep = ~removed
    assert torch.equal(back[keep].view(bits), x[keep].view(bits))


@pytest.mark.parametrize("dtype, shape, expected", [
    (torch.bfloat16, (2, 5, 320), torch.int64), (torch.bfloat16, (2, 5, 6), torch.int32),
    (torch.bfloat16, (2, 5, 7), torch.int16), (torch.float32, (2, 5, 1), torch.int32),
    (torch.float32, (2, 5), torch.int32), (torch.float64, (2, 5, 3), torch.int64),
    (torch.float32, (2, 5, 3), torch.int32), (torch.bfloat16, (2, 5, 3), torch.int16),
])
def test_packing_words_never_span_two_tokens(dtype, shape, expected):
    from mame_core.compaction import word_dtype

    # the first two channels of three: rows whose strides the 64- and 32-bit words do not divide
    tensor = torch.zeros(shape, dtype=dtype)
    if shape[-1] == 3 and dtype != torch.float64:
        tensor = tensor[..., :2]
    assert word_dtype(tensor) is expected


def test_results_never_share_the_reused_scratch_buffers():
    from mame_core import MergeSettings, plan_merge

    gen = seeded(400)
    first_x, second_x = torch.randn(2, 2, 256, 16, generator=gen)
    first = plan_merge(first_x, 16, 16, MergeSettings(ratio=0.5))
    merged = first.merge(first_x)
    restored = first.restore(merged * 2)
    kept_merged, kept_restored = merged.clone(), restored.clone()
    second = plan_merge(second_x, 16, 16, MergeSettings(ratio=0.5))
    second.restore(second.merge(second_x) * 3)  # writes every scratch buffer again
    assert torch.equal(merged, kept_merged) and torch.equal(restored, kept_restored)
    # one tile covering the whole grid: joining the tiles is then a view, which must not leak
    single = plan_merge(first_x[:, :64], 8, 8, MergeSettings(ratio=0.5, tile=(8, 8)))
    out = single.restore(single.merge(first_x[:, :64]))
    kept = out.clone()
    second.restore(second.merge(second_x))
    assert torch.equal(out, kept)


def test_scratch_made_in_inference_mode_is_not_reused_outside_it():
    from mame_core import MergeSettings, plan_merge

    x = torch.randn(1, 256, 8, generator=seeded(401))
    with torch.inference_mode():
        inside = plan_merge(x, 16, 16, MergeSettings(ratio=0.5))
        inside.restore(inside.merge(x))
    outside = plan_merge(x, 16, 16, MergeSettings(ratio=0.5))
    torch.testing.assert_close(outside.restore(outside.merge(x)), inside.restore(inside.merge(x)), rtol=0, atol=0)
