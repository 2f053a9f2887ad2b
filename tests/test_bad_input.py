"""Bad settings fail early with a message naming the field; odd inputs behave defined."""
import pytest
import torch
from conftest import seeded

from mame_core import MaMeConfigError, MergeSettings, plan_merge


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.2}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"ratio": "half"}, "ratio"),
        ({"threshold": 1.5}, "threshold"),
        ({"mode": "q"}, "mode must be one of qkv, kv"),
        ({"tile": 0}, "tile"),
        ({"tile": (8, 8, 8)}, "tile"),
        ({"gate": "soft"}, "gate must be one of hard, sigmoid"),
    ],
)
def test_bad_settings(kwargs, field):
    with pytest.raises(MaMeConfigError, match=field.replace("(", r"\(")):
        MergeSettings(**kwargs)


def test_grid_mismatch_is_a_clear_error():
    x = torch.zeros(1, 100, 4)
    with pytest.raises(MaMeConfigError, match="grid 9x9 does not match the 100 tokens"):
        plan_merge(x, 9, 9, MergeSettings())


def test_wrong_rank_and_dtype():
    with pytest.raises(MaMeConfigError, match=r"\[batch, tokens, channels\]"):
        plan_merge(torch.zeros(64, 4), 8, 8, MergeSettings())
    with pytest.raises(MaMeConfigError, match="floating-point"):
        plan_merge(torch.zeros(1, 64, 4, dtype=torch.long), 8, 8, MergeSettings())


def test_empty_batch_gives_empty_results():
    x = torch.zeros(0, 13 * 19, 8)
    plan = plan_merge(x, 13, 19, MergeSettings(ratio=0.5))
    merged = plan.merge(x)
    assert merged.shape == (0, plan.merged_tokens, 8)
    assert plan.restore(merged).shape == x.shape


def test_nan_stays_inside_its_batch_item_and_tile():
    x = torch.randn(2, 16 * 16, 8, generator=seeded(0))
    x[0, 0, 0] = float("nan")  # token (0, 0): tile (0, 0) of batch item 0
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.5))
    restored = plan.restore(plan.merge(x)).reshape(2, 16, 16, 8)
    assert torch.isfinite(restored[1]).all()
    assert torch.isnan(restored[0, :8, :8]).any()
    assert torch.isfinite(restored[0, 8:]).all() and torch.isfinite(restored[0, :, 8:]).all()
