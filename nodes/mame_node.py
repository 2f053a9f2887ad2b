"""The MaMe node: MODEL in, a clone patched with MaMe/MaRe token merging out."""
from __future__ import annotations

import logging

from ..mame_core import (
    DEFAULTS,
    LEVEL_CHOICES,
    MAX_REUSE_STEPS,
    MODES,
    MaMeConfigError,
    MergeSettings,
    Reuse,
    Schedule,
    parse_levels,
    parse_rules,
)
from .attention_patch import patch_unet
from .dit_patch import patch_dit
from .families import merging_titles
from .merge_recorder import MAP_TYPE, recorder_for
from .model_inspect import inspect_model
from .schedule_node import OVERRIDES_HELP, SCHEDULE_TYPE

log = logging.getLogger("comfyui-mame")


class MaMe:
    DESCRIPTION = (
        "Speeds up SD1.x, SD2.x and SDXL UNets by merging similar tokens before each self-attention "
        "(MaMe) and restoring them afterwards (MaRe), with dense matrix ops only. Patches a copy of "
        f"the model; the input model is not changed. On DiTs and video models ({merging_titles()}) it "
        "merges the image tokens at each attention call (text tokens untouched); other model families "
        "pass through unchanged with a warning that says why."
    )
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL", MAP_TYPE)
    RETURN_NAMES = ("model", "merge_map")
    OUTPUT_TOOLTIPS = ("The model with MaMe patched in.",
                       "Connect to a MaMe Merge Map node to see which tokens were merged (recorded only then).")
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model to speed up."}),
                "ratio": ("FLOAT", {
                    "default": DEFAULTS["ratio"], "min": 0.0, "max": 0.95, "step": 0.01,
                    "tooltip": "Share of tokens merged away in each affected block, exactly, on any "
                               "image size. The most redundant tokens of the whole image go first (flat "
                               "areas give more, detailed ones less). 0 turns MaMe off exactly; 0.5 "
                               "halves the self-attention sequence. Higher is faster and smoother."}),
                "threshold": ("FLOAT", {
                    "default": DEFAULTS["threshold"], "min": -1.0, "max": 1.0, "step": 0.01,
                    "tooltip": "tau: the cosine similarity a merged token needs to its destination to be "
                               "averaged into it. Below tau the destination keeps its own features and "
                               "the merged token takes the destination's output back. tau never changes "
                               "how many tokens attention runs on, nor which tokens stay unmerged (the "
                               "least similar ones always do). -1 averages every merged pair; higher "
                               "keeps destinations sharper."}),
                "mode": (list(MODES), {
                    "default": DEFAULTS["mode"],
                    "tooltip": "qkv: merge queries, keys and values and restore the output (fastest). "
                               "kv: merge only keys and values, keep every query (higher fidelity, "
                               "less speed-up)."}),
                "tile_size": ("INT", {
                    "default": DEFAULTS["tile_size"], "min": 2, "max": 32, "step": 1,
                    "tooltip": "Side, in latent tokens, of the square tiles a token looks for its "
                               "match in: tokens merge only with a destination of their own tile. How "
                               "many merge is decided over the whole image."}),
                "levels": (list(LEVEL_CHOICES), {
                    "default": DEFAULTS["levels"],
                    "tooltip": "Resolution levels to merge at: d1 = full latent resolution, d2 = half, "
                               "d4 = quarter. auto picks the finest level that has self-attention "
                               "(d1 on SD1.x/2.x, d2 on SDXL), where almost all the time goes."}),
                "start_percent": ("FLOAT", {
                    "default": DEFAULTS["start_percent"], "min": 0.0, "max": 1.0, "step": 0.001,
                    "tooltip": "Merging starts at this point of sampling (0 = first step)."}),
                "end_percent": ("FLOAT", {
                    "default": DEFAULTS["end_percent"], "min": 0.0, "max": 1.0, "step": 0.001,
                    "tooltip": "Merging stops after this point of sampling (1 = last step). E.g. 0.8 "
                               "leaves the last fifth of the steps at full quality."}),
                "seed": ("INT", {
                    "default": DEFAULTS["seed"], "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                    "tooltip": "Seeds the placement of merge destinations per block and step. The same "
                               "seed always gives the same image."}),
                "overrides": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Optional per-block ratios that win over everything else (a Block "
                               "Schedule's overrides and sliders included), e.g. "
                               "'output_9-11 = 0.7, input_1 = off'. " + OVERRIDES_HELP}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
            "optional": {
                "schedule": (SCHEDULE_TYPE, {
                    "tooltip": "Per-block ratios from a MaMe Block Schedule node; they win over ratio "
                               "and levels where they are set (this node's overrides win over them)."}),
                "plan_reuse_steps": ("INT", {
                    "default": 1, "min": 1, "max": MAX_REUSE_STEPS, "step": 1,
                    "tooltip": "Each block's merge plan serves this many sampling steps (1 = a new plan every "
                               "step). Planning is most of MaMe's own cost on a GPU, so 2-3 saves time there; "
                               "each step of reuse adds some error (docs/benchmarks.md, plan reuse)."}),
                "share_layers": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "The later transformer layers of a block (SDXL: 2 or 10 per block) use the first "
                               "layer's merge plan instead of planning their own: cheaper, but less exact."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, start_percent=0.0, end_percent=1.0, overrides=""):
        if start_percent > end_percent:
            return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
        try:
            parse_rules(overrides)
        except MaMeConfigError as err:
            return f"overrides: {err}"
        return True

    def patch(self, model, ratio, threshold, mode, tile_size, levels, start_percent, end_percent, seed,
              overrides="", schedule=None, plan_reuse_steps=1, share_layers=False, prompt=None, unique_id=None):
        recorder = recorder_for(prompt, unique_id)
        settings = MergeSettings(ratio=ratio, threshold=threshold, mode=mode, tile=int(tile_size))
        schedule = Schedule(
            ratio=ratio,
            levels=parse_levels(levels),
            rules=tuple(schedule or ()) + parse_rules(overrides),  # tiers rank them, not their order
            start_percent=start_percent,
            end_percent=end_percent,
        )
        reuse = Reuse(layers=share_layers, steps=plan_reuse_steps)
        found = inspect_model(model)
        if found.reason is not None:
            log.warning("MaMe: %s; passing it through unchanged", found.reason)
            return (model, recorder)
        if found.dit is not None:
            return (patch_dit(model, found.dit, settings, schedule, int(seed), recorder, reuse), recorder)
        return (patch_unet(model, found.unet_blocks, settings, schedule, int(seed), recorder, reuse), recorder)
