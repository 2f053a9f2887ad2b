"""MaMe Block Schedule: per-block merge ratios set in the graph, plugged into the MaMe node."""
from __future__ import annotations

from ..mame_core import MaMeConfigError, Rule, parse_rules
from ..mame_core.schedule import SCHEDULE_OVERRIDES, SLIDERS
from .families import FAMILIES

SCHEDULE_TYPE = "MAME_SCHEDULE"
INHERIT = -1.0

# Widgets in UNet order: down the encoder, the middle, back up the decoder.
LEVEL_WIDGETS = (
    ("input_d1", "input", 1),
    ("input_d2", "input", 2),
    ("input_d4", "input", 4),
    ("middle", "middle", None),
    ("output_d4", "output", 4),
    ("output_d2", "output", 2),
    ("output_d1", "output", 1),
)

OVERRIDES_HELP = (
    "Exact per-block ratios, one 'key = ratio' per line or comma-separated. Order: the MaMe node's "
    "overrides win over the Block Schedule's overrides, which win over its sliders, which win over the "
    "MaMe node's ratio and levels; within one of these the most specific key wins. Keys: input_4, "
    "output_3-5 (block ranges), output.d2 (stage at a level), d1/d2/d4/d8 (a level), input/middle/output "
    "(a stage), default; DiT models, by stage and block number (e.g. double_0-18, single_*, blocks_10-20): "
    + "; ".join(f"{f.title}: {', '.join(f.stages)}" for f in FAMILIES if f.merges)
    + ". Ratios in [0, 1) or 'off'. "
    "'#' starts a comment."
)


def _ratio_widget(tooltip: str):
    return ("FLOAT", {"default": INHERIT, "min": INHERIT, "max": 0.95, "step": 0.01, "tooltip": tooltip})


class MaMeBlockSchedule:
    """Per-block merge ratios. -1 on a slider means 'use the MaMe node's ratio and levels'."""

    DESCRIPTION = (
        "Sets the merge ratio per UNet stage and resolution level (d1 = full latent resolution, "
        "d2 = half, d4 = quarter), with exact per-block overrides. Connect it to the MaMe node's "
        "schedule input. -1 keeps the MaMe node's own ratio for that part; 0 turns merging off there."
    )
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = (SCHEDULE_TYPE,)
    RETURN_NAMES = ("schedule",)
    OUTPUT_TOOLTIPS = ("Per-block ratios for the MaMe node's schedule input.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        required = {}
        for name, stage, level in LEVEL_WIDGETS:
            where = "the middle block" if level is None else f"{stage} blocks at 1/{level} latent resolution (d{level})"
            required[name] = _ratio_widget(f"Merge ratio for {where}. -1 inherits the MaMe node's ratio; 0 is off.")
        required["overrides"] = ("STRING", {"default": "", "multiline": True, "tooltip": OVERRIDES_HELP})
        return {"required": required}

    @classmethod
    def VALIDATE_INPUTS(cls, overrides=""):
        try:
            parse_rules(overrides if isinstance(overrides, str) else str(overrides))
        except MaMeConfigError as err:
            return f"overrides: {err}"
        return True

    def build(self, overrides="", **ratios):
        rules = []
        for name, stage, level in LEVEL_WIDGETS:
            value = float(ratios.get(name, INHERIT))
            if value != INHERIT:
                if not 0.0 <= value < 1.0:
                    raise MaMeConfigError(f"{name} must be -1 (inherit) or in [0, 1), got {value}")
                rules.append(Rule(value, stage=stage, level=level, tier=SLIDERS))
        return (tuple(rules) + parse_rules(overrides, tier=SCHEDULE_OVERRIDES),)
