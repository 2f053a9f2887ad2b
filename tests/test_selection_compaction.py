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
