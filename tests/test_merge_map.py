"""describe_merges / draw_merge_map: exact groups on a known synthetic input."""
import torch

from conftest import seeded
from mame_core import MergeSettings, describe_merges, destination_indices, draw_merge_map


def two_regions(h=16, w=16, boundary=4, c=8):
    """Left of column ``boundary`` every token is vector a, right of it vector b (orthogonal)."""
    a, b = torch.zeros(c), torch.zeros(c)
    a[0], b[1] = 1.0, 1.0
    x = torch.empty(h, w, c)
    x[:, :boundary] = a
    x[:, boundary:] = b
    return x.reshape(h * w, c)


def test_two_flat_regions_give_exactly_the_expected_groups():
    settings = MergeSettings(ratio=0.5, tile=8, threshold=0.5)
    m = describe_merges(two_regions(), 16, 16, settings)
    dests = destination_indices(8, 8, 32)
    for y in range(16):
        for x in range(16):
            ty, tx = y // 8, x // 8
            tile = ty * 2 + tx
            left = x < 4
            # the token joins the first destination (raster order) of its tile in its own region
            first = next(j for j, d in enumerate(dests) if ((tx * 8 + d % 8) < 4) == left)
            i = (y % 8) * 8 + (x % 8)
            expected = tile * 32 + (dests.index(i) if i in dests else first)
            assert int(m.group[y, x]) == expected, (y, x)
    assert m.above_threshold.all()
    s = m.stats()
    assert s["border_tokens"] == 0 and s["share_below_threshold"] == 0.0
    assert s["share_merged"] == 0.5  # every non-destination token is averaged into one
    # a tile wholly in one region: its first destination takes all 32 other tokens, plus itself
    assert s["max_group_size"] == 33
    assert s["groups"] == 4 * 32


def test_orthogonal_tokens_fall_below_tau_and_border_stays_clear():
    x = torch.randn(13 * 19, 64, generator=seeded(0))
    m = describe_merges(x, 13, 19, MergeSettings(ratio=0.5, tile=8, threshold=0.9))
    s = m.stats()
    assert s["border_tokens"] == 13 * 19 - 8 * 16
    assert s["share_below_threshold"] == 64 / (13 * 19) and s["share_merged"] == 0.0  # every non-destination
    assert (m.group[8:] == -1).all() and (m.group[:, 16:] == -1).all()


def test_drawing_keeps_the_image_size_and_marks_groups():
    m = describe_merges(two_regions(), 16, 16, MergeSettings(ratio=0.5, tile=8))
    image = torch.full((128, 128, 3), 0.5)
    drawn = draw_merge_map(image, m)
    assert drawn.shape == image.shape
    assert not torch.equal(drawn, image)
    assert float(drawn.min()) >= 0.0 and float(drawn.max()) <= 1.0
