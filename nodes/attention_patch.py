"""The attn1 patch pair a MaMe node installs: merge before self-attention, restore after.

ComfyUI calls, inside every transformer block and in this order,
``attn1_patch(n, context, value, extra_options)`` with the normed tokens, then the
self-attention, then ``attn1_output_patch(out, extra_options)`` before the residual add.
The two halves share the plan of the current block through this object.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..mame_core import MergeSettings, Schedule, infer_grid, level_sizes, plan_merge, shift_for
from .merge_recorder import MergeRecorder
from .model_inspect import AttentionBlock

log = logging.getLogger("comfyui-mame")

# Set in a block's extra_options once a MaMe patch has merged there, so a second MaMe
# node in the chain (a stacked node) leaves that block alone.
MERGED_MARK = "mame_merged"


@dataclass
class BlockRecord:
    """What the patch did in one block during the latest pass (for logs and the merge map)."""

    tokens: int
    merged_tokens: int
    ratio: float
    grid: tuple[int, int]
    layers: frozenset = frozenset({0})


@dataclass
class MaMeAttentionPatch:
    settings: MergeSettings
    schedule: Schedule
    seed: int
    blocks: list[AttentionBlock]
    sigma_start: float = float("inf")
    sigma_end: float = 0.0
    recorder: MergeRecorder = field(default_factory=MergeRecorder)
    last_pass: dict[str, BlockRecord] = field(default_factory=dict)
    _pending: object = None
    _sigma_tensor: object = None
    _sigma_value: float = 0.0
    _logged: set = field(default_factory=set)
    _warned: set = field(default_factory=set)

    def __post_init__(self) -> None:
        last = self.blocks[-1] if self.blocks else None
        self._final_block = (last.stage, last.index, last.depth - 1) if last else None
        self._window_is_full = self.schedule.start_percent == 0.0 and self.schedule.end_percent == 1.0

    # ComfyUI entry points -------------------------------------------------------------

    def merge(self, n, context, value, extra_options):
        self._pending = None
        try:
            merged = self._merge(n, context, value, extra_options)
        except Exception as err:  # never take the user's sampling down with us
            self._warn_once(("error", type(err).__name__), f"MaMe: merging skipped after an error: {err!r}")
            merged = None
        finally:
            self._maybe_log(extra_options)
        if merged is None:
            return n, context, value
        if self.settings.mode == "qkv":
            return merged, merged, merged
        return n, merged, merged

    def restore(self, out, extra_options):
        plan, self._pending = self._pending, None
        if plan is None:
            return out
        if out.shape[1] != plan.merged_tokens:
            self._warn_once("length", f"MaMe: attention output has {out.shape[1]} tokens, expected {plan.merged_tokens}; left as is")
            return out
        return plan.restore(out)

    # internals --------------------------------------------------------------------------

    def _merge(self, n, context, value, extra_options):
        block = extra_options.get("block")
        if block is None or extra_options.get(MERGED_MARK):
            return None
        if context is not n or value is not n:
            # Another patch changed the self-attention inputs first (or the block attends
            # to a context); merging n alone would pair tokens that no longer match.
            return None
        stage, index = block[0], int(block[1])
        depth_index = int(extra_options.get("block_index", 0))
        grid = self._grid(n, extra_options)
        if grid is None:
            self._warn_once(("grid", n.shape[1]), f"MaMe: cannot place {n.shape[1]} tokens on a grid at {stage}_{index}; skipped")
            return None
        level, h, w = grid
        ratio = self.schedule.ratio_for(stage, index, level)
        key = f"{stage}_{index}"
        sigma = self._sigma(extra_options)
        if ratio == 0.0 or not (self._window_is_full or self.sigma_end <= sigma <= self.sigma_start):
            self.last_pass.pop(key, None)
            return None
        settings = self.settings.with_ratio(ratio)
        shift = shift_for(h, w, settings, self.seed, stage, index, depth_index, f"{sigma:.6g}")
        plan = plan_merge(n, h, w, settings, shift)
        if plan.is_identity:
            return None
        if self.recorder.armed:
            self.recorder.record(n, h, w, settings, shift, key, depth_index, sigma, level)
        merged = plan.merge(n)
        extra_options[MERGED_MARK] = True
        seen = self.last_pass.get(key)
        layers = (seen.layers if seen and depth_index else frozenset()) | {depth_index}
        self.last_pass[key] = BlockRecord(n.shape[1], plan.merged_tokens, ratio, (h, w), layers)
        if self.settings.mode == "qkv":
            self._pending = plan
        return merged

    @staticmethod
    def _grid(n, extra_options):
        latent = extra_options.get("original_shape")
        shape = extra_options.get("activations_shape")  # v0.8.0+: the exact grid of this block
        if shape is not None and len(shape) == 4 and int(shape[2]) * int(shape[3]) == n.shape[1]:
            h, w = int(shape[2]), int(shape[3])
            sizes = level_sizes(int(latent[-2]), int(latent[-1])) if latent is not None else []
            level = next((d for d, hh, ww in sizes if (hh, ww) == (h, w)), 1)
            return level, h, w
        if latent is None:
            return None
        return infer_grid(n.shape[1], latent)

    def _sigma(self, extra_options) -> float:
        sigmas = extra_options.get("sigmas")
        if not isinstance(sigmas, torch.Tensor) or sigmas.numel() == 0:
            return 0.0
        if sigmas is not self._sigma_tensor:  # one host read per model call, not per block
            self._sigma_tensor = sigmas
            self._sigma_value = float(sigmas.reshape(-1)[0])
        return self._sigma_value

    def _maybe_log(self, extra_options) -> None:
        block = extra_options.get("block")
        if block is None or (block[0], int(block[1]), int(extra_options.get("block_index", 0))) != self._final_block:
            return
        latent = extra_options.get("original_shape")
        key = tuple(int(s) for s in latent[-2:]) if latent is not None else None
        if key in self._logged:
            return
        self._logged.add(key)
        log.info("%s", self.summary(key))

    def summary(self, latent_hw=None) -> str:
        where = f" at latent {latent_hw[0]}x{latent_hw[1]}" if latent_hw else ""
        if not self.last_pass:
            return f"MaMe: merging in 0 of {len(self.blocks)} attention blocks{where} (nothing to merge at this step)"
        parts = [
            f"{name}{f' x{len(r.layers)}' if len(r.layers) > 1 else ''} {r.tokens}->{r.merged_tokens} tokens"
            f" (ratio {r.ratio:g}, grid {r.grid[0]}x{r.grid[1]})"
            for name, r in self.last_pass.items()
        ]
        return (
            f"MaMe: merging in {len(self.last_pass)} blocks{where}, mode {self.settings.mode}, "
            f"tau {self.settings.threshold:g}: " + "; ".join(parts)
        )

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)
