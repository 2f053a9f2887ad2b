"""One block step for every host: which grid, which ratio, inside the window or not, which
pattern, which plan.

Each host (the ComfyUI UNet patch, the diffusers hooks, the benchmark hooks, a DiT
override) knows only how to read the sampling step and a block's grid; this module does
the rest::

    step = BlockStep(settings, schedule, seed)      # once per patched model
    step.start_call(progress, device)              # host side, once per model call
    plan = step.plan(x, BlockAddress("input", 1, layer=0, level=1), (h, w))
    y = plan.restore(attention(plan.merge(x)))

Compile contract: ``start_call`` runs outside any compiled region (a model wrapper, a
UNet pre-hook that dynamo skips). It decides the window as a Python bool and writes the
step's destination pattern into a 0-dim tensor in place, so a compiled model sees the
pattern as a tensor input (one graph for every step) and the window as a guarded constant:
crossing a window boundary adds exactly one graph, which is then reused. ``plan`` does no
host read; it records what it merged only when it runs eagerly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch

from . import IdentityPlan, MergeSettings, infer_grid, level_sizes, pattern_for, plan_merge
from .payoff import pays, why_not
from .plan_reuse import PlanCache, Reuse
from .routes import engine_route
from .schedule import STAGES, Schedule
from .settings import MaMeConfigError

log = logging.getLogger("comfyui-mame")

_SETTING_DEFAULTS = {f.name: f.default for f in fields(MergeSettings)}

# The user-facing defaults of every host (ComfyUI node, apply_mame, benchmarks).
DEFAULTS = {
    "ratio": _SETTING_DEFAULTS["ratio"],
    "threshold": _SETTING_DEFAULTS["threshold"],
    "mode": _SETTING_DEFAULTS["mode"],
    "tile_size": _SETTING_DEFAULTS["tile"][0],
    "levels": "auto",
    "start_percent": 0.0,
    "end_percent": 1.0,
    "seed": 0,
}

_PATTERN_RANGE = 1 << 30  # patterns and block offsets stay far from int64 overflow when added
_STAGE_CODES = {stage: number for number, stage in enumerate(STAGES, start=1)}


@dataclass(frozen=True)
class BlockAddress:
    """Where a block sits. UNet: stage input|middle|output, ComfyUI's block index, the layer
    inside its transformer and the level (downsample factor). DiT: stage double|single|blocks,
    the block number, layer 0, level 1."""

    stage: str
    index: int
    layer: int = 0
    level: int = 1

    @property
    def block(self) -> str:
        return f"{self.stage}_{self.index}"

    @property
    def offset(self) -> int:
        """A per-block constant added to the step's pattern: plain integer arithmetic (no
        hashlib), so dynamo folds it into the graph."""
        value = _STAGE_CODES.get(self.stage, 0) * 1_000_003 + self.index * 10_007 + self.layer * 101 + self.level
        return (value * 2_654_435_761) % _PATTERN_RANGE


@dataclass
class BlockRecord:
    """What one block merged during the latest model call (for logs and the merge map)."""

    tokens: int
    merged_tokens: int
    ratio: float
    grid: tuple
    layers: frozenset = frozenset({0})


class BlockStep:
    """The block step of one patched model (see the module docstring)."""

    def __init__(self, settings: MergeSettings, schedule: Schedule, seed: int, force: bool | None = None,
                 reuse: Reuse | None = None):
        self.settings = settings
        self.force = force  # None: $MAME_FORCE_MERGE; True merges blocks too small to pay on the device
        self.schedule = schedule
        self.seed = int(seed)
        self.active = True
        self.progress = 0.0
        self.pattern = torch.zeros((), dtype=torch.int64)
        self.pattern_value = 0
        self.records: dict[str, BlockRecord] = {}
        self.calls = 0
        self.plans = PlanCache(reuse or Reuse())
        # Settings per ratio built here, not in plan(): a frozen dataclass is not built
        # inside a compiled region.
        ratios = {schedule.ratio, settings.ratio, *(rule.ratio for rule in schedule.rules)}
        self._settings = {r: settings.with_ratio(r) for r in ratios if r > 0.0}
        self._warned: set = set()

    # host side ---------------------------------------------------------------------------

    def start_call(self, progress: float, device=None) -> None:
        """Once per model call, outside compiled code: window test and this step's pattern."""
        progress = min(1.0, max(0.0, float(progress)))
        self.progress = progress
        self.active = self.schedule.active_at(progress)
        if device is not None and self.pattern.device != torch.device(device):
            self.pattern = torch.zeros((), dtype=torch.int64, device=device)
        self.pattern_value = pattern_for(self.seed, "step", f"{progress:.9g}") % _PATTERN_RANGE
        self.pattern.fill_(self.pattern_value)
        self.records = {}
        self.calls += 1
        self.plans.start_call(progress)

    def ratio_for(self, address: BlockAddress) -> float:
        return self.schedule.ratio_for(address.stage, address.index, address.level)

    def grid_for(self, tokens: int, latent_shape, address: BlockAddress, exact_hw=None):
        """``(h, w)`` of a UNet block's tokens: the host's exact grid when it has one
        (ComfyUI v0.8.0+ ``activations_shape``), else inferred from the latent. Warns once
        when the grid is not the one the block's level gives, or when none fits."""
        latent_hw = tuple(int(s) for s in latent_shape[-2:]) if latent_shape is not None else None
        if exact_hw is not None and int(exact_hw[0]) * int(exact_hw[1]) == tokens:
            h, w = int(exact_hw[0]), int(exact_hw[1])
            if latent_hw is not None and (address.level, h, w) not in level_sizes(*latent_hw):
                self.warn_once(("grid-level", address.block, h, w),
                               f"MaMe: {address.block} has a {h}x{w} token grid, which is not level "
                               f"d{address.level} of the {latent_hw[0]}x{latent_hw[1]} latent; merging it as {h}x{w}")
            return h, w
        found = infer_grid(tokens, latent_shape) if latent_hw is not None else None
        if found is None:
            self.warn_once(("grid", address.block, tokens),
                           f"MaMe: cannot place the {tokens} tokens of {address.block} on a grid of latent "
                           f"{latent_hw}; {address.block} is not merged")
            return None
        if found[0] != address.level:
            self.warn_once(("grid-level", address.block, found[1], found[2]),
                           f"MaMe: {address.block} has {tokens} tokens, a {found[1]}x{found[2]} grid at d{found[0]}, "
                           f"not at its level d{address.level} of the {latent_hw[0]}x{latent_hw[1]} latent")
        return found[1], found[2]

    def warn_once(self, key, message: str) -> None:
        if torch.compiler.is_compiling() or key in self._warned:
            return
        self._warned.add(key)
        log.warning("%s", message)

    # inside the block ----------------------------------------------------------------------

    def plan(self, x: torch.Tensor, address: BlockAddress, grid):
        """The merge plan of one block for the current call: an IdentityPlan when the block
        is off, outside the window, or at ratio 0. No host sync."""
        tokens = x.shape[1]
        ratio = self.ratio_for(address)
        if not self.active or ratio == 0.0:
            return IdentityPlan(tokens)
        frames, h, w = (1, *grid) if len(grid) == 2 else grid
        if frames * h * w != tokens:
            raise MaMeConfigError(f"grid {tuple(grid)} does not hold the {tokens} tokens of {address.block}")
        if not pays(tokens, x.device, self.force):
            # one line per patched model and device: a UNet has a dozen such blocks every step
            self.warn_once(("pays", x.device.type), f"MaMe: {address.block} and every other block this small "
                                                    f"left at full length: {why_not(tokens, x.device)}")
            return IdentityPlan(tokens)
        eager = not torch.compiler.is_compiling()
        key = self.plans.key(address.block, address.layer, tokens, x.shape[0], tuple(grid), ratio, x.device,
                             x.dtype) if eager else None
        plan = self.plans.find(key) if eager else None
        if plan is None:
            plan = self._new_plan(x, address, ratio, frames, h, w)
            if eager:
                self.plans.keep(key, plan)
        if not plan.is_identity and not torch.compiler.is_compiling():
            seen = self.records.get(address.block)
            layers = (seen.layers if seen is not None else frozenset()) | {address.layer}
            self.records[address.block] = BlockRecord(tokens, plan.merged_tokens, ratio, tuple(grid), layers)
        return plan

    def _new_plan(self, x, address: BlockAddress, ratio: float, frames: int, h: int, w: int):
        settings = self._settings.get(ratio) or self.settings.with_ratio(ratio)
        route = engine_route(x.device)
        if route == "gpu" and not torch.compiler.is_compiling():
            pattern = self.pattern_value + address.offset  # host tables: no per-call hashing on the device
        else:  # a tensor: compiled graphs see it as an input, one graph for every step
            pattern = (self.pattern if self.pattern.device == x.device else self.pattern.to(x.device)) + address.offset
        return plan_merge(x, h, w, settings, pattern=pattern, frames=frames, route=route)

    def pattern_of(self, address: BlockAddress) -> int:
        """The pattern ``plan`` used for ``address`` in the current call, as a Python int
        (a host read: for the merge map recorder only, never inside compiled code)."""
        return int(self.pattern) + address.offset
