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


# Rule tiers (issue 15, bug 2): MaMe-node overrides > schedule-node overrides > schedule-node
# sliders > ratio/levels, whatever the specificity; specificity only within a tier.
from mame_core.schedule import NODE_OVERRIDES, SCHEDULE_OVERRIDES, SLIDERS, Rule  # noqa: E402


def _tiered(*rules, levels="d1"):
    return Schedule(ratio=0.5, levels=parse_levels(levels), rules=tuple(rules))


@pytest.mark.parametrize("strong,weak", [
    (NODE_OVERRIDES, SCHEDULE_OVERRIDES), (NODE_OVERRIDES, SLIDERS), (SCHEDULE_OVERRIDES, SLIDERS)])
@pytest.mark.parametrize("order", ["strong first", "weak first"])
def test_a_stronger_tier_wins_even_when_less_specific(strong, weak, order):
    general = parse_rules("d1 = off", tier=strong)  # rank 2
    specific = (Rule(0.3, stage="input", level=1, tier=weak),) + parse_rules("input_1 = 0.4", tier=weak)  # ranks 3, 4
    rules = general + specific if order == "strong first" else specific + general
    assert _tiered(*rules).ratio_for("input", 1, 1) == 0.0


@pytest.mark.parametrize("tier", [SLIDERS, SCHEDULE_OVERRIDES, NODE_OVERRIDES])
def test_any_rule_wins_over_ratio_and_levels(tier):
    sched = _tiered(*parse_rules("d2 = 0.3, input_1 = off", tier=tier))
    assert sched.ratio_for("input", 4, 2) == 0.3  # d2 is not among the levels, the rule still applies
    assert sched.ratio_for("input", 1, 1) == 0.0
    assert sched.ratio_for("input", 2, 1) == 0.5  # no rule: the ratio on the chosen levels


def test_specificity_decides_within_a_tier():
    rules = parse_rules("input_1 = 0.4", tier=SLIDERS) + (Rule(0.3, stage="input", level=1, tier=SLIDERS),)
    assert _tiered(*rules).ratio_for("input", 1, 1) == 0.4


def test_the_node_override_beats_a_schedule_slider_issue_example():
    slider = Rule(0.5, stage="input", level=1, tier=SLIDERS)  # Block Schedule input_d1 = 0.5
    assert _tiered(slider, *parse_rules("d1 = off")).ratio_for("input", 1, 1) == 0.0


@pytest.mark.parametrize("key,stage,index,hit", [
    ("double_0-18", "double", 18, True), ("double_0-18", "double", 19, False), ("double_0-18", "single", 3, False),
    ("single_*", "single", 37, True), ("single", "single", 0, True), ("blocks_10-20", "blocks", 10, True),
    ("blocks", "blocks", 39, True), ("d1", "double", 0, False), ("input", "double", 0, False),
])
def test_dit_keys(key, stage, index, hit):
    sched = Schedule(ratio=0.5, rules=parse_rules(f"{key} = 0.2"))
    assert sched.ratio_for(stage, index, 1) == (0.2 if hit else 0.5)


def test_dit_blocks_ignore_levels():
    assert Schedule(ratio=0.5, levels=frozenset({2})).ratio_for("double", 0) == 0.5
    with pytest.raises(MaMeScheduleError, match="unknown block key 'double.d1'"):
        parse_rules("double.d1 = 0.3")
