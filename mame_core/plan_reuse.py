"""Merge plans reused where that pays: by the later layers of a block in the same model call,
and, as an option, by the same block over the next few sampling steps.

On a GPU a plan costs about 30 kernel launches (about 1 ms a block call in eager mode on an
H200) where applying it, merge plus restore, is 2 products (0.03-0.3 ms;
bench/results/gpu-kernels.txt). SDXL runs 2 or 10 transformer layers per block on one grid,
and neighbouring sampling steps see nearly the same tokens, so both can share a plan. What
each adds to the error is measured by ``python -m bench.plan_reuse``.

Eager only: a compiled graph plans every layer and step (a plan kept on a Python object
across graph calls would be a side effect for dynamo to replay).
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import MaMeConfigError

MAX_REUSE_STEPS = 8


@dataclass(frozen=True)
class Reuse:
    """``layers``: the later layers of a block use its first layer's plan in the same call.
    ``steps``: each plan serves this many sampling steps (1 plans every step)."""

    layers: bool = False
    steps: int = 1

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_REUSE_STEPS:
            raise MaMeConfigError(f"plan_reuse_steps must be a whole number from 1 to {MAX_REUSE_STEPS}, "
                                  f"got {self.steps!r}")
        if not isinstance(self.layers, bool):
            raise MaMeConfigError(f"share_layers must be true or false, got {self.layers!r}")


@dataclass
class _Kept:
    step: int
    plan: object


class PlanCache:
    """The plans of one patched model. ``start_call`` once per model call (host side), then
    ``find`` before planning a block and ``keep`` after.

    Steps are counted by progress: model calls at the same progress (cond and uncond run
    apart) are calls of one step, told apart by their order in it; a later progress starts
    the next step; an earlier one a new sampling run, which drops every kept plan."""

    def __init__(self, reuse: Reuse):
        self.reuse = reuse
        self._kept: dict[tuple, _Kept] = {}
        self._current: tuple | None = None  # (call, key, plan): the plan in use, for the block's later layers
        self._progress: float | None = None
        self._step = 0
        self._call_in_step = 0
        self._calls = 0
        self.reused = 0  # plans served from the cache (for tests and logs)

    def key(self, block: str, layer: int, *shape) -> tuple:
        return (block, 0 if self.reuse.layers else layer, *shape)

    def start_call(self, progress: float) -> None:
        self._set_current(None)
        if self._progress is None or progress < self._progress:
            self._kept.clear()
            self._step, self._call_in_step = 0, 0
        elif progress == self._progress:
            self._call_in_step += 1
        else:
            self._step += 1
            self._call_in_step = 0
        self._progress = progress
        self._calls += 1

    def find(self, key: tuple):
        current = self._current
        if current is not None and current[0] == self._calls and current[1] == key:
            self.reused += 1
            return current[2]
        kept = self._kept.get((self._call_in_step, key))
        if kept is not None and self._step - kept.step < self.reuse.steps:
            self._set_current((self._calls, key, kept.plan))
            self.reused += 1
            return kept.plan
        return None

    def keep(self, key: tuple, plan) -> None:
        self._set_current((self._calls, key, plan))
        if self.reuse.steps > 1:
            self._kept[(self._call_in_step, key)] = _Kept(self._step, plan)

    def _set_current(self, current) -> None:
        """The plan in use changes: a kept plan drops what it rebuilds on its next use (the GPU
        route's ``[R, K]`` assignments), so one block's worth is held at a time."""
        previous = self._current
        if previous is not None and self.reuse.steps > 1 and (current is None or previous[2] is not current[2]):
            release = getattr(previous[2], "release", None)
            if release is not None:
                release()
        self._current = current
