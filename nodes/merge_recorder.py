"""Records MaMe's merges during sampling for the MaMe Merge Map node.

A MaMe node arms its recorder only when a MaMe Merge Map node in the prompt reads its
``merge_map`` output; unarmed, the patch never touches it, so graphs without the map node
pay nothing.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from ..mame_core import MergeMap, describe_merges

MAP_TYPE = "MAME_MAP"
MAP_NODE = "MaMeMergeMap"


def map_request(prompt, unique_id) -> dict | None:
    """The inputs of the MaMe Merge Map node in ``prompt`` that takes output 1 of node
    ``unique_id``, or None when there is none."""
    if not isinstance(prompt, dict) or unique_id is None:
        return None
    for node in prompt.values():
        if isinstance(node, dict) and node.get("class_type") == MAP_NODE:
            inputs = node.get("inputs") or {}
            link = inputs.get("merge_map")
            if isinstance(link, list) and str(link[0]) == str(unique_id) and link[1] == 1:
                return inputs
    return None


def map_requested(prompt, unique_id) -> bool:
    return map_request(prompt, unique_id) is not None


def recorder_for(prompt, unique_id) -> "MergeRecorder":
    """An armed recorder when a map node reads this MaMe node, set to the batch item it draws."""
    inputs = map_request(prompt, unique_id)
    if inputs is None:
        return MergeRecorder()
    index = inputs.get("batch_index", 0)
    return MergeRecorder(armed=True, batch_index=index if isinstance(index, int) and index >= 0 else 0)


@dataclass
class Recording:
    merge_map: MergeMap
    step: int
    progress: float  # 0 = start of sampling, 1 = the end
    level: int


@dataclass
class MergeRecorder:
    """``batch_index`` is the image the map node draws on: the recorder analyses the
    conditional (positive prompt) row of that image, not whichever row comes first."""

    armed: bool = False
    batch_index: int = 0
    runs: list = field(default_factory=list)  # one dict per sampling run: (block, layer, step) -> Recording
    error: str | None = None  # what stopped merging or recording, shown by the map node
    row: int | None = None  # the row of the model call's batch to record, None: skip this call
    _steps: list = field(default_factory=list)
    # plan -> the map drawn when it was made: a plan reused by later layers or steps
    # (plan_reuse_steps, share_layers) shows the merge it applies, not a fresh one
    _by_plan: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    def set_rows(self, cond_or_uncond, batch: int) -> None:
        """Called once per model call with ComfyUI's chunk list (0 = cond, 1 = uncond)."""
        if not cond_or_uncond:
            self.row = min(self.batch_index, batch - 1)
            return
        per_chunk = batch // len(cond_or_uncond)
        chunk = next((i for i, kind in enumerate(cond_or_uncond) if kind == 0), None)
        self.row = None if chunk is None else chunk * per_chunk + min(self.batch_index, per_chunk - 1)

    def record(self, n, grid, step, address, plan=None) -> None:
        """Analyse one block's merge on the host (the map is drawn on the CPU anyway)."""
        if self.row is None or self.row >= n.shape[0]:
            return
        try:
            progress = step.progress
            if not self.runs or (self._steps and progress < self._steps[-1] - 1e-12):
                self.runs.append({})  # progress only grows in a run; a fall means a new run (hires fix)
                self._steps = []
            if progress not in self._steps:
                self._steps.append(progress)
            index = self._steps.index(progress)
            merge_map = self._by_plan.get(plan) if plan is not None else None
            if merge_map is None:
                tokens = n[self.row].detach().to("cpu", dtype=torch.float32)
                settings = step.settings.with_ratio(step.ratio_for(address))
                merge_map = describe_merges(tokens, grid[0], grid[1], settings, step.pattern_of(address))
                if plan is not None:
                    self._by_plan[plan] = merge_map
            self.runs[-1][(address.block, address.layer, index)] = Recording(merge_map, index, progress, address.level)
        except Exception as err:  # a map that cannot be drawn must not switch merging off
            if self.error is None:
                self.error = f"recording failed: {type(err).__name__}: {err}"

    def pick(self, block: str, layer: int, step: int, run: int = -1) -> Recording:
        if not self.armed:
            raise ValueError("MaMe recorded nothing: its output came from ComfyUI's cache, made before this map "
                             "node was connected (ComfyUI does not re-run a cached node for a new consumer). "
                             "Change any MaMe input once, e.g. its seed, and queue again.")
        if self.error is not None and (not self.runs or not self.runs[run]):
            raise ValueError(f"MaMe recorded nothing: {self.error}")
        if not self.runs or not self.runs[run]:
            raise ValueError("MaMe merged nothing to show (ratio 0, every step outside its window, or a "
                             "torch.compile'd model, where merges are not recorded).")
        records = self.runs[run]
        blocks = sorted({k[0] for k in records}, key=_block_order)
        chosen = blocks[0] if block in ("", "auto") else block
        if chosen not in blocks:
            raise ValueError(f"block: MaMe did not merge in {block!r}; it merged in {', '.join(blocks)}")
        steps = sorted({k[2] for k in records if k[0] == chosen and k[1] == layer})
        if not steps:
            raise ValueError(f"layer: {chosen} has no layer {layer} recorded")
        want = steps[-1] if step < 0 else step
        if want not in steps:
            raise ValueError(f"step: {want} not recorded for {chosen}; recorded steps: {steps[0]}..{steps[-1]}")
        return records[(chosen, layer, want)]


def _block_order(name: str):
    stage, _, index = name.partition("_")
    return ({"input": 0, "middle": 1, "output": 2}.get(stage, 3), int(index) if index.isdigit() else 0)
