"""MaMe (merge) and MaRe (restore): region-wise bipartite matching as dense matrix products.

The grid is cut into tiles that cover it all (:mod:`.tiling`). In each tile of ``T`` tokens,
``r = round(ratio*T)`` tokens are merged away, exactly, whatever the tile holds:

1. ``d`` destinations, one per 2x2 cell (:mod:`.destinations`); every other token is a source.
2. ``S = cos(X, X_dest)``, ``[T, d]``; each source's best destination is the max of its
   row (a reduction; a tiny offset per column makes the first maximum win on ties).
3. The ``r`` sources with the highest best similarity merge: a source's rank is the number
   of sources scoring higher (ties broken by position), compared with ``r``. So content
   decides which tokens merge (redundant areas give more), the count is exact, and a token
   that resembles nothing stays as its own token: a distinct key never leaves attention.
4. The ``k = T - r`` kept tokens are packed in order by a one-hot ``P`` (``[T, k]``) built
   from a cumulative sum compared with ``arange``. ``A = keep*P + merged*(best @ E^T P)``
   is each token's slot (one 1 per row).
5. MaMe: ``M = W^T X / colsum(W)``, with ``W = A`` except that a merged source whose best
   similarity is below τ gets weight 0 (the destination is not averaged with it).
   ``key_log_size = log(colsum(A))``: how many tokens each merged token stands for, for
   proportional attention (:mod:`.size_bias`).
6. MaRe: ``Y = A @ Y'``: every token takes its slot's output back.

No sort, gather, scatter or host sync; static shapes (``merged_tokens`` depends only on the
grid and the settings).
"""
from __future__ import annotations

import torch

from .destinations import cell_count, destination_mask, one_hot_slots, pattern_for
from .settings import MaMeConfigError, MergeSettings
from .tiling import Block, Tiling

_FAR = -4.0  # below any cosine similarity: destinations never rank as sources


def removed_per_tile(tile_tokens: int, ratio: float) -> int:
    return min(tile_tokens - 1, round(ratio * tile_tokens))


def kept_per_tile(tile_tokens: int, ratio: float) -> int:
    return tile_tokens - removed_per_tile(tile_tokens, ratio)


destinations_per_tile = kept_per_tile  # the name older callers use (kept tokens per tile)


class BlockMerge:
    """The matrices of one block of equally shaped tiles."""

    def __init__(self, block: Block, kept: int, assign: torch.Tensor, weights: torch.Tensor):
        self.block = block
        self.kept = kept
        self.assign = assign  # A, [B*G, T, k]
        self.weights = weights  # W / colsum(W), [B*G, T, k]


class MergePlan:
    """The merge and restore matrices of one call, built from the block's input tokens."""

    is_identity = False

    def __init__(self, tiling: Tiling, parts: list[BlockMerge], batch: int, log_size: torch.Tensor,
                 source: tuple | None = None):
        self.tiling = tiling
        self.parts = parts
        self.batch = batch
        self.key_log_size = log_size  # [B, M]
        self._source = source  # (x, its tiles): merge(x) of the planning input reuses the cut

    @property
    def merged_tokens(self) -> int:
        return sum(p.block.tiles * p.kept for p in self.parts)

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
        c = x.shape[-1]
        out = [
            torch.matmul(p.weights.transpose(1, 2).to(x.dtype), t).reshape(self.batch, p.block.tiles * p.kept, c)
            for p, t in zip(self.parts, tiles)
        ]
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """MaRe: ``[B, M, C]`` back to ``[B, N, C]``."""
        c = y.shape[-1]
        tiles, start = [], 0
        for p in self.parts:
            n = p.block.tiles * p.kept
            merged = y[:, start : start + n].reshape(self.batch * p.block.tiles, p.kept, c)
            tiles.append(torch.matmul(p.assign.to(y.dtype), merged))
            start += n
        return self.tiling.join(tiles)


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


def _similarity_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def match_tiles(tiles: torch.Tensor, is_dest: torch.Tensor, d: int, removed: int):
    """Bipartite matching inside each tile.

    tiles: ``[B, G, T, C]`` metric (float32/64); is_dest: bool ``[G, T]`` with ``d`` trues a row.
    Returns (best one-hot ``[B, G, T, d]``, best similarity ``[B, G, T]``, merged bool ``[B, G, T]``,
    destination one-hot ``E`` ``[G, T, d]``).
    """
    dtype = tiles.dtype
    t_count = tiles.shape[-2]
    select = one_hot_slots(is_dest, d, dtype)  # E, [G, T, d]
    norms = torch.linalg.vector_norm(tiles, dim=-1, keepdim=True).clamp_min(1e-6)
    unit = tiles / norms
    dest = torch.matmul(select.transpose(-1, -2), unit)  # [B, G, d, C]
    sim = torch.matmul(unit, dest.transpose(-1, -2))  # [B, G, T, d]
    # first maximum wins: a column offset far below any real difference in similarity
    tie = torch.arange(d, device=tiles.device, dtype=dtype) * (2.0**-20 / max(d, 1))
    ranked = sim - tie
    top = ranked.max(dim=-1, keepdim=True).values
    hits = ranked >= top
    best = (hits & (torch.cumsum(hits.to(torch.int64), dim=-1) == 1)).to(dtype)
    best_sim = (sim * best).sum(dim=-1)  # [B, G, T]
    score = torch.where(is_dest, torch.full_like(best_sim, _FAR), best_sim)
    # one integer key per token: the score on a 2^-24 grid, then the position (earlier first)
    # so every key is distinct and "fewer than r keys above mine" merges exactly r sources
    pos = torch.arange(t_count, device=tiles.device)
    key = torch.round(score * 2.0**24).to(torch.int64) * t_count + (t_count - 1 - pos)
    rank = (key.unsqueeze(-2) > key.unsqueeze(-1)).sum(dim=-1)  # keys above mine
    merged = rank < removed
    return best, best_sim, merged, select


def _plan_block(tiles: torch.Tensor, block: Block, batch: int, settings: MergeSettings, pattern: torch.Tensor):
    t_count = block.tile_tokens
    removed = removed_per_tile(t_count, settings.ratio)
    kept = t_count - removed
    d = max(1, min(cell_count(block.shape), kept))
    dtype = tiles.dtype
    g = block.tiles
    metric = tiles.reshape(batch, g, t_count, tiles.shape[-1])
    is_dest = destination_mask(block.shape, g, block.first_tile, d, pattern)  # [G, T]
    best, best_sim, merged, select = match_tiles(metric, is_dest, d, removed)
    keep = ~merged
    pack = one_hot_slots(keep, kept, dtype)  # [B, G, T, k]
    dest_slot = torch.matmul(select.transpose(-1, -2), pack)  # [B, G, d, k]
    follow = torch.matmul(best, dest_slot)  # [B, G, T, k]: the slot of each token's best destination
    merged_f = merged.to(dtype).unsqueeze(-1)
    assign = pack + merged_f * follow
    size = assign.sum(dim=-2)  # [B, G, k]
    if settings.gate == "hard" and settings.threshold <= -1.0:
        weights = assign / size.unsqueeze(-2)  # every merged pair is averaged
    else:
        if settings.gate == "hard":
            gate = (best_sim >= settings.threshold).to(dtype)
        else:
            gate = torch.sigmoid((best_sim - settings.threshold) / settings.gate_width)
        weights = pack + merged_f * gate.unsqueeze(-1) * follow
        weights = weights / weights.sum(dim=-2, keepdim=True)
    flat = (batch * g, t_count, kept)
    return assign.reshape(flat), weights.reshape(flat), kept, size.reshape(batch, g * kept)


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
    return sum(b.tiles * (b.tile_tokens - removed_per_tile(b.tile_tokens, settings.ratio)) for b in tiling.blocks)


def plan_merge(
    x: torch.Tensor,
    h: int,
    w: int,
    settings: MergeSettings,
    pattern: int | torch.Tensor = 0,
    frames: int = 1,
) -> MergePlan | IdentityPlan:
    """Build the MaMe/MaRe matrices for ``x`` (``[B, frames*h*w, C]``, (frame, row, column)
    raster order). ``pattern`` (an int or a 0-dim integer tensor, any value) picks the
    destinations; a tensor keeps planning free of host syncs and of recompilation."""
    _check_input(x, h, w, frames)
    tiling = tiling_for(h, w, settings, frames)
    if settings.ratio == 0.0 or all(removed_per_tile(b.tile_tokens, settings.ratio) == 0 for b in tiling.blocks):
        return IdentityPlan(x.shape[1])
    if isinstance(pattern, tuple):  # older callers passed a (dy, dx) shift
        pattern = pattern[0] * 65536 + pattern[1]
    if not isinstance(pattern, torch.Tensor):
        pattern = torch.tensor(int(pattern) % (2**62), device=x.device)
    pattern = pattern.to(x.device)
    batch = x.shape[0]
    sim_dtype = _similarity_dtype(x.dtype)
    raw = tiling.split(x)
    parts, sizes = [], []
    for block, tiles in zip(tiling.blocks, raw):
        assign, weights, kept, size = _plan_block(tiles.to(sim_dtype), block, batch, settings, pattern)
        parts.append(BlockMerge(block, kept, assign.to(x.dtype), weights.to(x.dtype)))
        sizes.append(size)
    log_size = torch.log(sizes[0] if len(sizes) == 1 else torch.cat(sizes, dim=1))
    return MergePlan(tiling, parts, batch, log_size, (x, raw))


def plan_seeded(
    x: torch.Tensor, h: int, w: int, settings: MergeSettings, seed: int, *keys: object, frames: int = 1
) -> MergePlan | IdentityPlan:
    """:func:`plan_merge` with the pattern hashed on the host from ``seed`` and ``keys``."""
    return plan_merge(x, h, w, settings, pattern_for(seed, *keys), frames)


def shift_for(h: int, w: int, settings: MergeSettings, seed: int, *keys: object) -> int:
    """The pattern :func:`plan_seeded` uses for this seed and keys (kept for older callers)."""
    return pattern_for(seed, *keys)
