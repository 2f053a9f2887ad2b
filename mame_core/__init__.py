"""MaMe/MaRe token merging and restoring in pure PyTorch (no ComfyUI imports).

Typical use inside a transformer block, with ``x`` the normed ``[B, N, C]`` tokens on an
``h x w`` grid::

    plan = plan_merge(x, h, w, MergeSettings(ratio=0.5), pattern)   # pattern: int or 0-dim tensor
    q, k, v = ...projections of plan.merge(x)...
    q, k, v, back = add_size_channel(q, k, v, plan.key_log_size, heads)  # proportional attention
    y = plan.restore(out_proj(back(attention(q, k, v))))                   # mode "qkv"
"""
from .dense_merge import DensePlan
from .destinations import pattern_for
from .grid import infer_grid, level_sizes
from .merge import (
    IdentityPlan,
    MergePlan,
    merged_tokens_for,
    plan_merge,
    plan_seeded,
)
from .merge_map import MergeMap, describe_merges, draw_merge_map
from .payoff import FORCE_ENV, pays
from .plan_reuse import MAX_REUSE_STEPS, Reuse
from .routes import ROUTE_ENV, ROUTES, engine_route
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
from .size_bias import add_size_channel, key_bias_mask
from .workspace import release_scratch

__all__ = [
    "BlockAddress",
    "BlockStep",
    "DEFAULTS",
    "add_size_channel",
    "DensePlan",
    "FORCE_ENV",
    "MAX_REUSE_STEPS",
    "Reuse",
    "pays",
    "ROUTES",
    "ROUTE_ENV",
    "engine_route",
    "key_bias_mask",
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
    "describe_merges",
    "merged_tokens_for",
    "draw_merge_map",
    "infer_grid",
    "level_sizes",
    "parse_levels",
    "parse_rules",
    "pattern_for",
    "plan_merge",
    "plan_seeded",
    "release_scratch",
]

# last: block_step imports the names above from this package
from .block_step import DEFAULTS, BlockAddress, BlockStep  # noqa: E402
