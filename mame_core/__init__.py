"""MaMe/MaRe token merging and restoring in pure PyTorch (no ComfyUI imports).

Typical use inside a transformer block, with ``x`` the normed ``[B, N, C]`` tokens on an
``h x w`` grid::

    plan = plan_seeded(x, h, w, MergeSettings(ratio=0.5), seed, "input_1", step)
    y = plan.restore(self_attention(plan.merge(x)))      # mode "qkv"
"""
from .destinations import destination_indices, pattern_for, seeded_shift
from .grid import infer_grid, level_sizes
from .merge_map import MergeMap, describe_merges, draw_merge_map
from .merge import IdentityPlan, MergePlan, destinations_per_tile, plan_merge, plan_seeded, shift_for
from .schedule import (
    LEVEL_CHOICES,
    LEVELS,
    STAGES,
    MaMeScheduleError,
    Rule,
    Schedule,
    check_window,
    parse_levels,
    parse_rules,
)
from .settings import GATES, MODES, MaMeConfigError, MergeSettings

__all__ = [
    "GATES",
    "LEVELS",
    "LEVEL_CHOICES",
    "MODES",
    "STAGES",
    "IdentityPlan",
    "MaMeConfigError",
    "MaMeScheduleError",
    "MergePlan",
    "MergeMap",
    "MergeSettings",
    "Rule",
    "Schedule",
    "check_window",
    "destination_indices",
    "describe_merges",
    "destinations_per_tile",
    "draw_merge_map",
    "infer_grid",
    "level_sizes",
    "parse_levels",
    "parse_rules",
    "pattern_for",
    "plan_merge",
    "plan_seeded",
    "seeded_shift",
    "shift_for",
]
