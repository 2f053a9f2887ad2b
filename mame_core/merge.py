"""MaMe (merge) and MaRe (restore): content-adaptive bipartite merging as dense tensor ops.

The grid is cut into tiles that cover it all (:mod:`.tiling`); matching is local to a tile,
the choice of what merges is made over the whole grid:

1. ``d`` destinations per tile, one per 2x2 cell (:mod:`.destinations`); every other token
   is a source.
2. ``S = cos(X, X_dest)`` per tile, ``[T, d]``; each source's best destination is the max of
   its row (a reduction; a tiny offset per column makes the first maximum win on ties).
3. Over the whole grid, exactly ``r = round(ratio*N)`` sources merge: those with the highest
   best similarity (:func:`.selection.top_count_mask`, a radix descent on counts, no sort).
   Redundant regions give many tokens, detailed ones few, and a token that resembles nothing
   stays as its own token: a distinct key never leaves attention.
4. Each destination becomes the average of itself and the sources merged into it (a source
   whose similarity is below τ is not averaged in): one ``[d, T] @ [T, C]`` product per tile,
   written back in place.
5. The merged sources are removed and the ``N - r`` kept tokens packed to the front in
   order by log-step shifts (:mod:`.compaction`). ``key_log_size`` is the log of how many
   tokens each kept token stands for (proportional attention, :mod:`.size_bias`).
6. MaRe: the shifts run backwards, then each merged source takes its destination's output
   (``best @ E^T`` per tile).

No sort, gather, scatter or host sync; static shapes (``merged_tokens`` depends only on the
grid and the settings).
"""
from __future__ import annotations

import math

import torch

from .compaction import Compaction, in_place_allowed
from .dense_merge import DensePlan, plan_dense
from .destinations import cell_count, destination_mask, one_hot_slots, pattern_for
from .routes import engine_route
from .selection import top_count_mask
from .settings import MaMeConfigError, MergeSettings
from .tiling import Block, Tiling
from .workspace import scratch

_FAR = -4.0  # below any cosine similarity: destinations never rank as sources


def destinations_in(block: Block, ratio: float) -> int:
    """Destinations per tile: one per 2x2 cell, fewer at high ratios: at most ``T - ceil(ratio*T)``,
    so the grid always has the ``round(ratio*N)`` sources it must merge."""
    t = block.tile_tokens
    return max(1, min(cell_count(block.shape), t - math.ceil(ratio * t - 1e-9)))


def removed_for(tiling: Tiling, ratio: float) -> int:
    """How many tokens the whole grid gives up: round(ratio*N), capped by the sources there are."""
    sources = sum(b.tiles * (b.tile_tokens - destinations_in(b, ratio)) for b in tiling.blocks)
    return min(sources, round(ratio * tiling.tokens))


class BlockMerge:
    """The matching of one block of equally shaped tiles (``G`` tiles of ``T`` tokens)."""

    def __init__(self, block: Block, select: torch.Tensor, best: torch.Tensor, score: torch.Tensor,
                 merged: torch.Tensor, weights: torch.Tensor):
        self.block = block
        self.score = score  # [B, G, T]: each source's best similarity (-4 on destinations)
        self.select = select  # E, [G, T, d]: one-hot of each destination's place
        self.is_dest = select.sum(dim=-1, keepdim=True) > 0  # bool [G, T, 1]
        self.best = best  # [B, G, T, d]: one-hot of each source's best destination
        self.merged = merged  # bool [B, G, T]
        self.weights = weights  # [B, G, T, d]: averaging weights of each destination's group
        # the two masks again as 0/1 lerp weights (a CPU runs lerp faster than where)
        self.dest_weight = self.is_dest.to(select.dtype)  # [G, T, 1]
        self.merged_weight = merged.to(select.dtype).unsqueeze(-1)  # [B, G, T, 1]


class MergePlan:
    """The merge and restore operators of one call, built from the block's input tokens."""

    is_identity = False

    def __init__(self, tiling: Tiling, parts: list[BlockMerge], batch: int, compaction: Compaction,
                 log_size: torch.Tensor, source: tuple | None = None):
        self.tiling = tiling
        self.parts = parts
        self.batch = batch
        self.compaction = compaction
        self.key_log_size = log_size  # [B, M]
        self._source = source  # (x, its tiles): merge(x) of the planning input reuses the cut

    @property
    def merged_tokens(self) -> int:
        return self.compaction.kept

    @property
    def full_tokens(self) -> int:
        return self.tiling.tokens

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """MaMe: ``[B, N, C]`` to ``[B, M, C]``."""
        if self._source is not None and self._source[0] is x:
            tiles = self._source[1]
            self._source = None  # not kept alive through attention
        else:
            tiles = self.tiling.split(x)
        buffered = in_place_allowed(x)
        averaged = scratch((x.shape[0], self.full_tokens, x.shape[-1]), x, "averaged") if buffered else None
        parts, start = [], 0
        for p, t in zip(self.parts, tiles, strict=False):
            t = t.reshape(self.batch, p.block.tiles, p.block.tile_tokens, t.shape[-1])
            dest = torch.matmul(p.weights.transpose(-1, -2).to(x.dtype), t)  # [B, G, d, C]
            placed = torch.matmul(p.select.to(x.dtype), dest)  # back at the destinations' places
            # buffered: written straight into its place in the tile-order sequence
            out = averaged[:, start : start + t.shape[1] * t.shape[2]].view(t.shape) if buffered else None
            parts.append(torch.lerp(t, placed, p.dest_weight.to(x.dtype), out=out))
            start += t.shape[1] * t.shape[2]
        return self.compaction.compact(averaged if buffered else _tile_order(parts))

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """MaRe: ``[B, M, C]`` back to ``[B, N, C]``."""
        buffered = in_place_allowed(y)
        full = self.compaction.expand(y, to_scratch=buffered)  # join() below copies it out
        tiles, start = [], 0
        for p in self.parts:
            g, t_count = p.block.tiles, p.block.tile_tokens
            part = full[:, start : start + g * t_count].reshape(self.batch, g, t_count, y.shape[-1])
            start += g * t_count
            dest = torch.matmul(p.select.transpose(-1, -2).to(y.dtype), part)  # [B, G, d, C]
            taken = torch.matmul(p.best.to(y.dtype), dest)  # each token's best destination's output
            part = torch.lerp(part, taken, p.merged_weight.to(y.dtype), out=part if buffered else None)
            tiles.append(part.reshape(self.batch * g, t_count, y.shape[-1]))
        out = self.tiling.join(tiles)
        if buffered and out.untyped_storage().data_ptr() == full.untyped_storage().data_ptr():
            out = out.clone()  # a grid of one tile joins without a copy: never hand out scratch
        return out

    def groups(self) -> torch.Tensor:
        """Long ``[B, N]``: the merged token (0..M-1) each token belongs to (for display and tests)."""
        slots = torch.arange(self.merged_tokens, device=self.key_log_size.device, dtype=torch.float64)
        slots = slots.reshape(1, -1, 1).expand(self.batch, -1, 1)
        return self.restore(slots).round().to(torch.int64)[..., 0]


class IdentityPlan:
    """What a ratio of 0 (or a block outside the schedule) gets: tensors pass untouched."""

    is_identity = True
    key_log_size = None

    def __init__(self, tokens: int):
        self.merged_tokens = self.full_tokens = tokens

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        return y


def _tile_order(per_block: list[torch.Tensor]) -> torch.Tensor:
    """``[B, G, T, ...]`` per block to one ``[B, sum G*T, ...]`` sequence in tile order."""
    flat = [t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:]) for t in per_block]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


def _similarity_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def match_tiles(tiles: torch.Tensor, is_dest: torch.Tensor, d: int):
    """Each source's best destination inside its tile.

    tiles: ``[B, G, T, C]`` metric (float32/64); is_dest: bool ``[G, T]`` with ``d`` trues a row.
    Returns (best one-hot ``[B, G, T, d]``, score ``[B, G, T]``: the best similarity, ``-4`` on
    destinations; destination one-hot ``E`` ``[G, T, d]``).
    """
    dtype = tiles.dtype
    select = one_hot_slots(is_dest, d, dtype)  # E, [G, T, d]
    norms = torch.linalg.vector_norm(tiles, dim=-1, keepdim=True).clamp_min(1e-6)  # [B, G, T, 1]
    dest = torch.matmul(select.transpose(-1, -2), tiles)  # [B, G, d, C]
    dest_norms = torch.matmul(select.transpose(-1, -2), norms)  # [B, G, d, 1]
    # cosines from raw products: dividing the [T, d] products, not the [T, C] tokens
    sim = torch.matmul(tiles, dest.transpose(-1, -2)) / (norms * dest_norms.transpose(-1, -2))
    # first maximum wins: a column offset far below any real difference in similarity
    tie = torch.arange(d, device=tiles.device, dtype=dtype) * (2.0**-20 / max(d, 1))
    ranked = sim - tie
    top = ranked.max(dim=-1, keepdim=True).values
    hits = ranked >= top
    best = (hits & (torch.cumsum(hits.to(torch.int64), dim=-1) == 1)).to(dtype)
    best_sim = (sim * best).sum(dim=-1)  # [B, G, T]
    score = torch.where(is_dest, torch.full_like(best_sim, _FAR), best_sim.clamp(-1.0, 1.0))
    return best, score, select


def _weights(best, score, merged, select, settings):
    """Averaging weights ``[B, G, T, d]``: each destination's group, normalised per column."""
    dtype = best.dtype
    if settings.threshold <= -1.0 and settings.gate == "hard":
        take = merged.to(dtype)
    elif settings.gate == "hard":
        take = merged.to(dtype) * (score >= settings.threshold).to(dtype)
    else:
        take = merged.to(dtype) * torch.sigmoid((score - settings.threshold) / settings.gate_width)
    w = select + take.unsqueeze(-1) * best
    return w / w.sum(dim=-2, keepdim=True)


def _check_input(x: torch.Tensor, h: int, w: int, frames: int) -> None:
    if x.dim() != 3:
        raise MaMeConfigError(f"tokens must be a [batch, tokens, channels] tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise MaMeConfigError(f"tokens must be a floating-point tensor, got {x.dtype}")
    if not isinstance(frames, int) or frames < 1:
        raise MaMeConfigError(f"frames must be an int >= 1, got {frames!r}")
    if h < 1 or w < 1 or frames * h * w != x.shape[1]:
        grid = f"{h}x{w}" if frames == 1 else f"{frames}x{h}x{w}"
        raise MaMeConfigError(f"grid {grid} does not match the {x.shape[1]} tokens of the input")


def tiling_for(h: int, w: int, settings: MergeSettings, frames: int = 1) -> Tiling:
    tile_frames = settings.tile_frames if frames > 1 else 1
    return Tiling.fit(frames, h, w, (tile_frames, *settings.tile))


def merged_tokens_for(h: int, w: int, settings: MergeSettings, frames: int = 1) -> int:
    """How many tokens attention runs on after MaMe, from the grid and settings alone."""
    tiling = tiling_for(h, w, settings, frames)
    return tiling.tokens - removed_for(tiling, settings.ratio)


def plan_merge(
    x: torch.Tensor,
    h: int,
    w: int,
    settings: MergeSettings,
    pattern: int | torch.Tensor = 0,
    frames: int = 1,
    route: str | None = None,
) -> MergePlan | DensePlan | IdentityPlan:
    """Build the MaMe/MaRe operators for ``x`` (``[B, frames*h*w, C]``, (frame, row, column)
    raster order). ``pattern`` (an int or a 0-dim integer tensor, any value) picks the
    destinations; a tensor keeps planning free of host syncs and of recompilation."""
    _check_input(x, h, w, frames)
    tiling = tiling_for(h, w, settings, frames)
    removed = removed_for(tiling, settings.ratio) if settings.ratio > 0.0 else 0
    if removed == 0:
        return IdentityPlan(x.shape[1])
    if engine_route(x.device, route) == "gpu":
        return plan_dense(x, frames, h, w, settings, pattern.to(x.device) if isinstance(pattern, torch.Tensor)
                          else int(pattern), removed)
    if not isinstance(pattern, torch.Tensor):
        pattern = torch.tensor(int(pattern) % (2**62), device=x.device)
    pattern = pattern.to(x.device)
    batch = x.shape[0]
    sim_dtype = _similarity_dtype(x.dtype)
    raw = tiling.split(x)
    matched = []
    for block, tiles in zip(tiling.blocks, raw, strict=False):
        d = destinations_in(block, settings.ratio)
        is_dest = destination_mask(block.shape, block.tiles, block.first_tile, d, pattern)  # [G, T]
        shape = (batch, block.tiles, block.tile_tokens, tiles.shape[-1])
        if tiles.dtype != sim_dtype and in_place_allowed(tiles):  # a fresh float32 copy costs its page faults
            metric = scratch(shape, tiles, "metric", sim_dtype).copy_(tiles.reshape(shape))
        else:
            metric = tiles.to(sim_dtype).reshape(shape)
        matched.append(match_tiles(metric, is_dest, d))
    merged_all = top_count_mask(_tile_order([s for _, s, _ in matched]), removed)  # [B, N], tile order
    parts, sizes, start = [], [], 0
    for block, (best, s, select) in zip(tiling.blocks, matched, strict=False):
        n = block.tiles * block.tile_tokens
        merged = merged_all[:, start:start + n].reshape(s.shape)
        start += n
        weights = _weights(best, s, merged, select, settings)
        joined = torch.matmul(merged.to(best.dtype).unsqueeze(-2), best).squeeze(-2)  # [B, G, d] sources in
        sizes.append(1.0 + torch.matmul(select, joined.unsqueeze(-1)))  # [B, G, T, 1]
        parts.append(BlockMerge(block, select.to(x.dtype), best.to(x.dtype), s, merged, weights.to(x.dtype)))
    compaction = Compaction(merged_all, removed)
    log_size = torch.log(compaction.compact(_tile_order(sizes)).squeeze(-1)).to(x.dtype)
    return MergePlan(tiling, parts, batch, compaction, log_size, (x, raw))


def plan_seeded(
    x: torch.Tensor, h: int, w: int, settings: MergeSettings, seed: int, *keys: object, frames: int = 1,
    route: str | None = None,
) -> MergePlan | DensePlan | IdentityPlan:
    """:func:`plan_merge` with the pattern hashed on the host from ``seed`` and ``keys``."""
    return plan_merge(x, h, w, settings, pattern_for(seed, *keys), frames, route)
