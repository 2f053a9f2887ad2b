import pytest

from mame_core import MaMeScheduleError, Schedule, infer_grid, parse_levels, parse_rules


def test_text_rules_resolve_by_specificity():
    sched = Schedule.from_text(
        """
        default = 0.1
        output = 0.2          # a stage
        d1 = 0.5, d2 = 0.4
        output.d1 = 0.6; output_11 = off
        input_4-5 = 0.3
        """,
        ratio=0.9,
    )
    assert sched.ratio_for("input", 1, 1) == 0.5
    assert sched.ratio_for("output", 9, 1) == 0.6
    assert sched.ratio_for("output", 11, 1) == 0.0
    assert sched.ratio_for("input", 4, 2) == 0.3
    assert sched.ratio_for("input", 7, 4) == 0.1
    assert sched.ratio_for("output", 3, 4) == 0.2
    assert sched.ratio_for("middle", 0, 8) == 0.1


def test_base_ratio_applies_on_chosen_levels_only():
    sched = Schedule(ratio=0.5, levels=parse_levels("d1,d2"))
    assert sched.ratio_for("input", 1, 1) == 0.5
    assert sched.ratio_for("output", 4, 2) == 0.5
    assert sched.ratio_for("middle", 0, 8) == 0.0


def test_auto_levels_pick_the_finest_attention_level():
    assert Schedule(ratio=0.5).resolve_levels([2, 4]).levels == frozenset({2})  # SDXL
    assert Schedule(ratio=0.5).resolve_levels([1, 2, 4, 8]).levels == frozenset({1})  # SD1.5


def test_later_rules_win_when_merged():
    base = Schedule.from_text("d1 = 0.5")
    merged = base.with_rules(parse_rules("d1 = 0.2"))
    assert merged.ratio_for("input", 1, 1) == 0.2


def test_window():
    sched = Schedule(start_percent=0.2, end_percent=0.6)
    assert not sched.active_at(0.1) and sched.active_at(0.2) and sched.active_at(0.6)
    assert not sched.active_at(0.7)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("d3 = 0.5", "unknown block key 'd3'"),
        ("input_4 0.5", "expected 'key = ratio'"),
        ("d1 = fast", "not a number"),
        ("d1 = 1.0", "[0, 1)"),
        ("d1 = -0.1", "[0, 1)"),
        ("d1 = nan", "[0, 1)"),
        ("output_5-3 = 0.2", "runs backwards"),
        ("d1 = 0.5, d1 = 0.2", "already set by entry 1"),
        ("sideways.d1 = 0.3", "allowed keys"),
        ("= 0.3", "expected 'key = ratio'"),
    ],
)
def test_bad_schedule_text_names_the_problem(text, fragment):
    with pytest.raises(MaMeScheduleError) as err:
        parse_rules(text)
    assert fragment in str(err.value)
    assert "schedule entry" in str(err.value)


@pytest.mark.parametrize("spec", ["d3", "fast", "1,16"])
def test_bad_levels(spec):
    with pytest.raises(MaMeScheduleError, match="levels"):
        parse_levels(spec)


@pytest.mark.parametrize("start,end", [(-0.1, 1.0), (0.0, 1.5), (0.8, 0.2)])
def test_bad_window(start, end):
    with pytest.raises(MaMeScheduleError, match="percent"):
        Schedule(start_percent=start, end_percent=end)


def test_empty_text_is_no_rules():
    assert parse_rules("  \n# nothing\n") == ()


@pytest.mark.parametrize(
    "latent,tokens,expected",
    [
        ((2, 4, 64, 64), 4096, (1, 64, 64)),
        ((2, 4, 64, 64), 256, (4, 16, 16)),
        ((1, 4, 152, 104), 76 * 52, (2, 76, 52)),  # 832x1216 portrait SDXL
        ((1, 4, 152, 104), 19 * 13, (8, 19, 13)),
        ((1, 4, 75, 50), 38 * 25, (2, 38, 25)),  # odd sizes round up
        ((1, 4, 64, 64), 1000, None),
    ],
)
def test_infer_grid(latent, tokens, expected):
    assert infer_grid(tokens, latent) == expected
