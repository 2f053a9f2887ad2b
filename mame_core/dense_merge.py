"""The GPU route of MaMe/MaRe: a merge and a restore that are one batched product each.

On a GPU every small op is a kernel launch and every pass over ``[B, N, C]`` costs bandwidth,
while a large matrix product is nearly free. So the route works on equal match regions
(:mod:`.regions`), all of them one batched tensor ``[B*G, R, C]``, and describes the merge by
one one-hot assignment of every token to the ``K`` kept slots of its region, built once per
call:

1. Destinations: one per 2x2 cell (2x2x2 on video regions) at a pseudo-random place that
   changes with the pattern. The place is a table per (grid, pattern variant) built on the
   host once; a pattern given as a tensor (a compiled graph) is hashed on the device instead.
2. Cosine similarity of every token to its region's destinations (one batched product) and
   each token's best destination (a max reduction).
3. In each region exactly ``removed / G`` tokens merge: those with the highest best
   similarity, ranked by comparison (``[R, R]`` comparisons and a count; no sort).
4. Slots: a kept token's slot is a cumulative count; a merged token joins its destination's
   slot (one-hot products). ``A`` (``[R, K]``, one-hot) gives the merge: ``(A / size)^T X``.
5. Restore is ``A Y``: each token takes its group's output, one batched product.

Dense ops only (no sort, gather, scatter or host sync), static shapes, and the same number of
tokens removed as the CPU route (:func:`.merge.removed_for`).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .regions import Regions, choose_regions
from .settings import MergeSettings

PATTERN_VARIANTS = 16  # destination layouts per grid that the host-side tables cycle through
_SCORE_STEP = 2.0**-10  # best similarities are ranked on this grid, closer ones by position
_DEST_KEY = 2.0**23 + 2.0**13  # pushes destinations below every source (keys stay exact in float32)


def _mix(v: int) -> int:
    """A small integer hash on ints in [0, 2**31) (host side)."""
    v = (v * 1103515245 + 12345) % 2**31
    v ^= v >> 16
    v = (v * 48271 + 11) % 2**31
    return v ^ (v >> 13)


def _bayer(y: int, x: int, period: int) -> int:
    rank, bits = 0, period.bit_length() - 1
    for b in range(bits):
        yb, xb = (y >> b) & 1, (x >> b) & 1
        rank += (2 * xb + 3 * yb - 4 * xb * yb) * 4 ** (bits - 1 - b)
    return rank


def cell_count(shape: tuple[int, int, int]) -> int:
    tf, th, tw = shape
    return ((tf + 1) // 2) * ((th + 1) // 2) * ((tw + 1) // 2)


@lru_cache(maxsize=64)
def _cells(shape: tuple[int, int, int], destinations: int):
    """Per-token lists of one region shape (host side): the place inside its cell, the cell's
    size, its cell, and whether that cell holds a destination (evenly spread cells, in
    ordered-dither order, lose theirs when the ratio needs more sources than the cells leave)."""
    tf, th, tw = shape
    cells_y, cells_x = (th + 1) // 2, (tw + 1) // 2
    per_layer = cells_y * cells_x
    period = 1 << max(0, (max(cells_y, cells_x) - 1).bit_length())
    order = sorted(range(cell_count(shape)),
                   key=lambda c: (_bayer((c % per_layer) // cells_x, c % cells_x, period), c // per_layer))
    keep = set(order[:destinations])
    inner, size, cell_of = [], [], []
    for f in range(tf):
        for y in range(th):
            for x in range(tw):
                cf, cy, cx = f // 2, y // 2, x // 2
                hh, ww = min(2, th - 2 * cy), min(2, tw - 2 * cx)
                inner.append(((f % 2) * hh + y % 2) * ww + x % 2)
                size.append(min(2, tf - 2 * cf) * hh * ww)
                cell_of.append(cf * per_layer + cy * cells_x + cx)
    enabled = [c in keep for c in cell_of]
    return inner, size, cell_of, enabled


def _place(salt: int, pattern: int, size: int) -> int:
    return (((salt ^ pattern) * 2654435761) >> 17) % size


def _salt(region: int, cell: int) -> int:
    return _mix((region * 7919 + cell * 104729) % 2**31)


@lru_cache(maxsize=256)
def _layout(regions: Regions, destinations: int, variant: int):
    """Host-side lists for one pattern variant: each token's destination index in its region
    (-1 for a source) and its ranking tie-break (earlier tokens first, destinations last)."""
    inner, size, cell_of, enabled = _cells(regions.shape, destinations)
    r = regions.size
    index, tie = [], []
    for g in range(regions.count):
        found = 0
        for t in range(r):
            dest = enabled[t] and _place(_salt(g, cell_of[t]), variant, size[t]) == inner[t]
            index.append(found if dest else -1)
            tie.append((r - 1 - t) - (_DEST_KEY if dest else 0.0))
            found += dest
    return index, tie


class _Static:
    """Device tensors of one (regions, destinations, batch) that no call changes."""

    def __init__(self, regions: Regions, destinations: int, batch: int, device: torch.device):
        self.regions, self.destinations, self.batch, self.device = regions, destinations, batch, device
        self.positions = torch.arange(regions.size, device=device, dtype=torch.float32)
        self.slots_d = torch.arange(destinations, device=device)
        self._variants: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._kept: dict[int, torch.Tensor] = {}
        self._quota: dict[tuple[int, int], torch.Tensor] = {}
        self._device_tables = None

    def variant(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(destination index [B*G, R] long, tie [B*G, R] float32)`` for a host-side pattern."""
        if number not in self._variants:
            index, tie = _layout(self.regions, self.destinations, number)
            shape = (self.regions.count, self.regions.size)
            index = torch.tensor(index, device=self.device).reshape(shape).repeat(self.batch, 1)
            tie = torch.tensor(tie, device=self.device, dtype=torch.float32).reshape(shape).repeat(self.batch, 1)
            self._variants[number] = (index, tie)
        return self._variants[number]

    def device_variant(self, pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same tables from a pattern tensor, computed on the device (for compiled graphs,
        where the pattern is a graph input rather than a Python int)."""
        if self._device_tables is None:
            inner, size, cell_of, enabled = _cells(self.regions.shape, self.destinations)
            salts = [[_salt(g, c) for c in cell_of] for g in range(self.regions.count)]
            dev = self.device
            self._device_tables = (torch.tensor(salts, device=dev).repeat(self.batch, 1),
                                   torch.tensor(size, device=dev), torch.tensor(inner, device=dev),
                                   torch.tensor(enabled, device=dev),
                                   torch.arange(self.regions.size - 1, -1, -1, device=dev, dtype=torch.float32))
        salt, size, inner, enabled, tie = self._device_tables
        variant = pattern.to(torch.int64) % PATTERN_VARIANTS  # _place and _layout on the device
        is_dest = ((((salt ^ variant) * 2654435761) >> 17) % size == inner) & enabled
        index = torch.where(is_dest, torch.cumsum(is_dest, dim=-1) - 1, -1)
        return index, tie - is_dest * _DEST_KEY

    def kept_slots(self, kept: int) -> torch.Tensor:
        if kept not in self._kept:
            self._kept[kept] = torch.arange(kept, device=self.device, dtype=torch.float32)
        return self._kept[kept]

    def quota(self, per_region: int, extra: int) -> torch.Tensor | int:
        """How many tokens each region gives up: ``[B*G, 1]`` when they differ."""
        if not extra:
            return per_region
        key = (per_region, extra)
        if key not in self._quota:
            one = [per_region + (g < extra) for g in range(self.regions.count)]
            self._quota[key] = torch.tensor(one * self.batch, device=self.device).unsqueeze(-1)
        return self._quota[key]


_STATIC: dict = {}


def _static(regions: Regions, destinations: int, batch: int, device: torch.device) -> _Static:
    key = (regions, destinations, batch, str(device))
    found = _STATIC.get(key)
    if found is None:
        found = _STATIC[key] = _Static(regions, destinations, batch, device)
    return found


def clear_static() -> None:
    """Drop the cached device tables (they are rebuilt on the next use)."""
    _STATIC.clear()


def _destinations(regions: Regions, removed_per_region: int) -> int:
    """One per cell, fewer when the region needs more sources than the cells leave."""
    return max(1, min(cell_count(regions.shape), regions.size - removed_per_region))


class DensePlan:
    """The merge and restore of one call on the GPU route (see the module docstring)."""

    is_identity = False

    def __init__(self, regions: Regions, batch: int, kept: int, extra: int, average: torch.Tensor,
                 restore: torch.Tensor, log_size: torch.Tensor, tokens: tuple, threshold: float, take):
        self.regions = regions
        self.batch = batch
        self.kept_per_region = kept
        self.extra = extra  # regions that give up one token more (their last slot is empty)
        self._average = {average.dtype: average}  # (A / size), [B*G, R, K]
        self._restore = {restore.dtype: restore}  # [B*G, R, K]
        self.key_log_size = log_size  # [B, M]
        # per token [B*G, R]: destination index (-1: source), merged, best destination and its
        # similarity, slot; and the destination count
        self._tokens = tokens
        self._threshold = threshold
        self._take = take  # per-token averaging weight [B*G, R] under τ or a soft gate; None: all 1
        self._owner = None  # each token's slot [B*G, R], kept once the assignments are released

    def release(self) -> None:
        """Drop the ``[B*G, R, K]`` assignments, keeping what rebuilds them (each token's slot):
        a plan kept over sampling steps holds per-token tensors only between its uses."""
        if self._owner is None:
            dest_index, merged, best, _, slot, d = self._tokens
            self._owner = _owner_slots(dest_index, merged, best, slot, d)
        self._average.clear()
        self._restore.clear()

    def _assignment(self, cache: dict, dtype: torch.dtype) -> torch.Tensor:
        if not self._restore:  # released: rebuild A from each token's slot
            kept = torch.arange(self.kept_per_region, device=self._owner.device, dtype=self._owner.dtype)
            assign = (self._owner.unsqueeze(-1) == kept).to(dtype)
            self._restore[dtype] = assign
            self._average[dtype] = _averaging(assign, self._take, self.extra)
        if dtype not in cache:
            cache[dtype] = next(iter(cache.values())).to(dtype)
        return cache[dtype]

    @property
    def merged_tokens(self) -> int:
        return self.regions.count * self.kept_per_region - self.extra

    @property
    def full_tokens(self) -> int:
        return self.regions.tokens

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """MaMe: ``[B, N, C]`` to ``[B, M, C]``, one batched product."""
        merged = torch.matmul(self._assignment(self._average, x.dtype).transpose(-1, -2), self.regions.split(x))
        merged = merged.reshape(self.batch, self.regions.count * self.kept_per_region, x.shape[-1])
        return _drop_empty(merged, self.regions.count, self.kept_per_region, self.extra) if self.extra else merged

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """MaRe: ``[B, M, C]`` back to ``[B, N, C]``: each token takes its group's output."""
        g, k = self.regions.count, self.kept_per_region
        per_region = _add_empty(y, g, k, self.extra) if self.extra else y.reshape(self.batch * g, k, y.shape[-1])
        return self.regions.join(torch.matmul(self._assignment(self._restore, y.dtype), per_region))

    def groups(self) -> torch.Tensor:
        """Long ``[B, N]``: the merged token (0..M-1) each token belongs to."""
        g, k = self.regions.count, self.kept_per_region
        dest_index, merged, best, _, slot, d = self._tokens
        index = torch.arange(g, device=slot.device).repeat(self.batch)
        first = index * k - index.clamp(max=self.extra)  # slots before each region, empty ones dropped
        owner = _owner_slots(dest_index, merged, best, slot, d).round().to(torch.int64)
        slot = (owner + first.unsqueeze(-1)).unsqueeze(-1)
        return self.regions.join(slot)[..., 0]

    def roles(self) -> dict:
        """Bool ``[B, N]`` per token, raster order: ``destination``, ``merged`` (not kept as its
        own token) and ``averaged`` (merged and at or above τ, so averaged into its group)."""
        dest_index, merged, _, best_sim, _, _ = self._tokens
        roles = {"destination": dest_index >= 0, "merged": merged, "averaged": merged & (best_sim >= self._threshold)}
        return {name: self.regions.join(t.unsqueeze(-1))[..., 0] for name, t in roles.items()}


def _drop_empty(t: torch.Tensor, regions: int, kept: int, extra: int) -> torch.Tensor:
    """``[B, G*K, C]`` to ``[B, G*K - extra, C]``: drop the empty last slot of the first
    ``extra`` regions (static slices and one copy)."""
    b, _, c = t.shape
    per_region = t.reshape(b, regions, kept, c)
    short = per_region[:, :extra, : kept - 1].reshape(b, extra * (kept - 1), c)
    return torch.cat([short, per_region[:, extra:].reshape(b, (regions - extra) * kept, c)], dim=1)


def _add_empty(t: torch.Tensor, regions: int, kept: int, extra: int) -> torch.Tensor:
    """Inverse of :func:`_drop_empty` (zeros in the empty slots), as ``[B*G, K, C]``."""
    b, _, c = t.shape
    short = t[:, : extra * (kept - 1)].reshape(b, extra, kept - 1, c)
    short = torch.cat([short, short.new_zeros(b, extra, 1, c)], dim=2)
    rest = t[:, extra * (kept - 1):].reshape(b, regions - extra, kept, c)
    return torch.cat([short, rest], dim=1).reshape(b * regions, kept, c)


def plan_dense(x: torch.Tensor, frames: int, h: int, w: int, settings: MergeSettings, pattern: int | torch.Tensor,
               removed: int) -> DensePlan:
    """Build the GPU-route plan for ``x`` (``[B, N, C]``) that removes exactly ``removed``
    tokens. ``pattern``: a Python int (host-side tables, fewest kernels) or a 0-dim tensor."""
    batch, _, channels = x.shape
    regions = choose_regions(frames, h, w, removed, channels)
    g, r = regions.count, regions.size
    per_region, extra = divmod(removed, g)  # the first ``extra`` regions give up one more
    kept = r - per_region
    d = _destinations(regions, per_region + (extra > 0))
    static = _static(regions, d, batch, x.device)
    if isinstance(pattern, torch.Tensor):
        dest_index, tie = static.device_variant(pattern)
    else:
        dest_index, tie = static.variant(int(pattern) % PATTERN_VARIANTS)
    # half inputs keep every product in their dtype (tensor cores; one-hot products are exact)
    work = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float64) else torch.float32
    select = (dest_index.unsqueeze(-1) == static.slots_d).to(work)  # E, [B*G, R, d]

    # each token's best destination by cosine similarity
    metric = regions.split(x)
    norm = torch.linalg.vector_norm(metric, dim=-1, keepdim=True, dtype=torch.float32 if x.element_size() < 4 else None)
    unit = metric / norm.clamp_min(1e-3).to(work)  # a floor of 1e-3 keeps 1 / norm finite in fp16
    sims = torch.matmul(unit, torch.matmul(select.transpose(-1, -2), unit).transpose(-1, -2))  # [B*G, R, d]
    best_sim, best = sims.max(dim=-1)

    # exactly the quota of tokens merges per region: the highest keys (destinations lowest)
    key = torch.add(tie, torch.floor_divide(best_sim, _SCORE_STEP), alpha=r)
    merged = (key.unsqueeze(-2) > key.unsqueeze(-1)).sum(dim=-1) < static.quota(per_region, extra)

    # slots: kept tokens in order; a merged token joins its destination's slot
    slot = static.positions - torch.cumsum(merged, dim=-1)  # exact for kept tokens
    own = (slot.unsqueeze(-1) == static.kept_slots(kept)).to(work)  # [B*G, R, K]
    dest_slots = torch.matmul(select.transpose(-1, -2), own)  # [B*G, d, K]: each destination's slot
    best_hot = (best.unsqueeze(-1) == static.slots_d).to(work)
    joined = merged.unsqueeze(-1)
    assign = torch.where(joined, torch.matmul(best_hot, dest_slots), own)  # A

    size = assign.sum(dim=-2, keepdim=True, dtype=torch.float32)  # [B*G, 1, K]; 0 on an extra region's empty slot
    take = None
    if settings.threshold > -1.0 or settings.gate != "hard":
        if settings.gate == "hard":
            take = torch.where(merged & (best_sim < settings.threshold), 0.0, 1.0)
        else:
            take = torch.where(merged, torch.sigmoid((best_sim.float() - settings.threshold) / settings.gate_width), 1.0)
    average = _averaging(assign, take, extra, size)
    log_size = torch.log(size).reshape(batch, g * kept)
    if extra:
        log_size = _drop_empty(log_size.unsqueeze(-1), g, kept, extra)[..., 0]
    return DensePlan(regions, batch, kept, extra, average, assign, log_size.to(x.dtype),
                     (dest_index, merged, best, best_sim, slot, d), settings.threshold, take)


def _averaging(assign: torch.Tensor, take, extra: int, size: torch.Tensor | None = None) -> torch.Tensor:
    """``A / size`` (each slot averages its group), or under per-token weights ``take`` the
    weighted average; an extra region's empty slot stays zero."""
    work = assign.dtype
    if take is not None:
        weights = assign * take.unsqueeze(-1).to(work)
        return weights / weights.sum(dim=-2, keepdim=True, dtype=torch.float32).clamp_min(1e-12).to(work)
    if size is None:
        size = assign.sum(dim=-2, keepdim=True, dtype=torch.float32)
    return assign / (size.clamp_min(1.0) if extra else size).to(work)


def _owner_slots(dest_index, merged, best, slot, destinations) -> torch.Tensor:
    """Each token's slot in its region (float ``[B*G, R]``), rebuilt from the plan's small
    tensors when asked (merge maps, tests): a plan holds no ``[R, d]`` matrix through attention."""
    slots_d = torch.arange(destinations, device=slot.device)
    select = (dest_index.unsqueeze(-1) == slots_d).to(slot.dtype)
    dest_slot = torch.matmul(select.transpose(-1, -2), slot.unsqueeze(-1))
    best_hot = (best.unsqueeze(-1) == slots_d).to(slot.dtype)
    return torch.where(merged, torch.matmul(best_hot, dest_slot).squeeze(-1), slot)
