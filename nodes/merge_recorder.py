"""Records MaMe's merges during sampling for the MaMe Merge Map node.

A MaMe node arms its recorder only when a MaMe Merge Map node in the prompt reads its
``merge_map`` output; unarmed, the patch never touches it, so graphs without the map node
pay nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..mame_core import MergeMap, MergeSettings, describe_merges

MAP_TYPE = "MAME_MAP"
MAP_NODE = "MaMeMergeMap"


def map_requested(prompt, unique_id) -> bool:
    """Whether a MaMe Merge Map node in ``prompt`` takes output 1 of node ``unique_id``."""
    if not isinstance(prompt, dict) or unique_id is None:
        return False
    for node in prompt.values():
        if isinstance(node, dict) and node.get("class_type") == MAP_NODE:
            link = (node.get("inputs") or {}).get("merge_map")
            if isinstance(link, list) and str(link[0]) == str(unique_id) and link[1] == 1:
                return True
    return False


@dataclass
class Recording:
    merge_map: MergeMap
    step: int
    sigma: float
    level: int


@dataclass
class MergeRecorder:
    armed: bool = False
    runs: list = field(default_factory=list)  # one dict per sampling run: (block, layer, step) -> Recording
    _sigmas: list = field(default_factory=list)

    def record(self, n, h, w, settings: MergeSettings, shift, block: str, layer: int, sigma: float, level: int):
        # Sigmas only fall during a sampling run; a rise means a new run (e.g. a hires-fix pass).
        if not self.runs or (self._sigmas and sigma > self._sigmas[-1] + 1e-9):
            self.runs.append({})
            self._sigmas = []
        if sigma not in self._sigmas:
            self._sigmas.append(sigma)
        step = self._sigmas.index(sigma)
        self.runs[-1][(block, layer, step)] = Recording(describe_merges(n[0], h, w, settings, shift), step, sigma, level)

    def pick(self, block: str, layer: int, step: int, run: int = -1) -> Recording:
        if not self.armed:
            raise ValueError("MaMe recorded nothing: its output came from ComfyUI's cache, made before this map "
                             "node was connected (ComfyUI does not re-run a cached node for a new consumer). "
                             "Change any MaMe input once, e.g. its seed, and queue again.")
        if not self.runs or not self.runs[run]:
            raise ValueError("MaMe merged nothing to show (ratio 0, or every step outside its window).")
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
