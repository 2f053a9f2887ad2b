"""The one block step every host calls: window, ratio, grid, pattern tensor, plan, records."""
import logging

import pytest
import torch
from conftest import seeded

from mame_core import MergeSettings, Schedule, parse_levels, parse_rules, plan_merge
from mame_core.block_step import DEFAULTS, BlockAddress, BlockStep

D1 = BlockAddress("input", 1, 0, 1)


def kept_16x16(ratio):
    """Tokens a 16x16 grid keeps at the ratio asked for."""
    return 256 - round(ratio * 256)


def tokens(n=1024, c=16, batch=2, seed=0):
    return torch.randn(batch, n, c, generator=seeded(seed))


def test_defaults_come_from_the_engine_settings():
    s = MergeSettings()
    assert (DEFAULTS["ratio"], DEFAULTS["threshold"], DEFAULTS["mode"]) == (s.ratio, s.threshold, s.mode)
    assert DEFAULTS["tile_size"] == s.tile[0] and DEFAULTS["levels"] == "auto"


def test_plan_equals_plan_merge_with_the_step_pattern_plus_the_block_offset():
    step = BlockStep(MergeSettings(ratio=0.5), Schedule(ratio=0.5), seed=3)
    step.start_call(0.25)
    x = tokens()
    plan = step.plan(x, D1, (32, 32))
    assert plan.merged_tokens == 512
    reference = plan_merge(x, 32, 32, MergeSettings(ratio=0.5), pattern=step.pattern_of(D1))
    torch.testing.assert_close(plan.merge(x), reference.merge(x), rtol=0, atol=0)
    assert step.records["input_1"].tokens == 1024 and step.records["input_1"].merged_tokens == 512


def test_pattern_tensor_is_updated_in_place_and_changes_with_the_step():
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    tensor = step.pattern
    seen = set()
    for progress in (0.0, 0.1, 0.2, 0.3):
        step.start_call(progress)
        assert step.pattern is tensor and step.pattern.dim() == 0
        seen.add(int(step.pattern))
    assert len(seen) == 4
    step.start_call(0.1)
    again = int(step.pattern)
    other = BlockStep(MergeSettings(), Schedule(), seed=1)
    other.start_call(0.1)
    assert int(other.pattern) != again  # the seed changes every step's pattern


def test_blocks_get_different_patterns_in_one_step():
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    step.start_call(0.5)
    x = tokens()
    a = step.plan(x, BlockAddress("input", 1, 0, 1), (32, 32)).merge(x)
    b = step.plan(x, BlockAddress("output", 11, 0, 1), (32, 32)).merge(x)
    assert not torch.equal(a, b)


def test_window_off_gives_identity_and_no_record():
    step = BlockStep(MergeSettings(), Schedule(start_percent=0.2, end_percent=0.6), seed=0)
    x = tokens()
    step.start_call(0.1)
    assert step.plan(x, D1, (32, 32)).is_identity and step.records == {}
    step.start_call(0.4)
    assert not step.plan(x, D1, (32, 32)).is_identity and set(step.records) == {"input_1"}
    step.start_call(0.7)
    assert step.plan(x, D1, (32, 32)).is_identity and step.records == {}


def test_levels_and_rules_pick_the_ratio():
    schedule = Schedule(ratio=0.5, levels=parse_levels("d1"), rules=parse_rules("output_11 = off, input_4 = 0.3"))
    step = BlockStep(MergeSettings(), schedule, seed=0)
    step.start_call(0.0)
    assert step.plan(tokens(), BlockAddress("output", 11, 0, 1), (32, 32)).is_identity
    assert step.plan(tokens(256), BlockAddress("input", 4, 0, 2), (16, 16)).merged_tokens == kept_16x16(0.3)
    assert step.plan(tokens(256), BlockAddress("input", 7, 0, 4), (16, 16)).is_identity  # d4 not in levels


def test_layers_of_one_block_are_recorded_together():
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    step.start_call(0.0)
    for layer in range(3):
        step.plan(tokens(256), BlockAddress("input", 4, layer, 1), (16, 16))
    assert step.records["input_4"].layers == frozenset({0, 1, 2})


@pytest.mark.parametrize("address,rules,expected", [
    (BlockAddress("double", 3), "double_0-18 = 0.25", 0.25),
    (BlockAddress("single", 30), "single_* = off", 0.0),
    (BlockAddress("single", 30), "single = off", 0.0),
    (BlockAddress("blocks", 12), "blocks_10-20 = 0.3", 0.3),
    (BlockAddress("blocks", 21), "blocks_10-20 = 0.3", 0.5),
    (BlockAddress("double", 3), "d1 = off", 0.5),  # levels do not apply to DiT blocks
    (BlockAddress("double", 3), "default = 0.2", 0.2),
])
def test_dit_addresses(address, rules, expected):
    schedule = Schedule(ratio=0.5, levels=frozenset({2}), rules=parse_rules(rules))  # d2 only: ignored by DiTs
    step = BlockStep(MergeSettings(), schedule, seed=0)
    step.start_call(0.0)
    assert step.ratio_for(address) == expected
    plan = step.plan(tokens(256), address, (16, 16))
    assert plan.merged_tokens == kept_16x16(expected)


def test_grid_mismatch_is_a_clear_error():
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    step.start_call(0.0)
    with pytest.raises(ValueError, match="does not hold the 1024 tokens of input_1"):
        step.plan(tokens(), D1, (16, 16))


def test_a_grid_that_is_not_the_blocks_level_warns_once_with_the_shapes(caplog):
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        for _ in range(3):
            assert step.grid_for(600, (2, 4, 64, 64), D1, exact_hw=(20, 30)) == (20, 30)
            assert step.grid_for(1000, (2, 4, 64, 64), D1) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "20x30 token grid, which is not level d1 of the 64x64 latent" in messages[0]
    assert "cannot place the 1000 tokens of input_1 on a grid of latent (64, 64)" in messages[1]


def test_inferred_grid_at_another_level_warns(caplog):
    step = BlockStep(MergeSettings(), Schedule(), seed=0)
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        assert step.grid_for(1024, (1, 4, 64, 64), BlockAddress("input", 4, 0, 1)) == (32, 32)
    assert "a 32x32 grid at d2, not at its level d1" in caplog.text
