"""MaMe (merge) and MaRe (restore) as dense matrix products.

For each tile of ``T`` tokens with ``k`` destinations (one-hot selection ``E``, ``[T, k]``):

* ``S = norm(X) @ norm(E^T X)^T``               cosine similarity, ``[T, k]``, in float32
* ``A = softmax(S / temperature)``               each token's soft assignment (used by MaRe)
* ``W = A * gate(S - threshold)``                merge weights; τ acts here
* destination rows of ``A`` and ``W`` are forced to ``E``, so a destination keeps itself
* ``M = W^T X / colsum(W)``                      merged tokens, ``[k, C]`` (MaMe)
* ``Y = A @ Y'``                                 restored tokens, ``[T, C]`` (MaRe)

Only matmuls, element-wise ops, reshapes and static slices run on the device: no sort,
gather, scatter or host sync, so it is cheap on a GPU and traces cleanly.
"""
from __future__ import annotations

import torch

from .destinations import pattern_for, pattern_period, pattern_selection
from .settings import MaMeConfigError, MergeSettings
from .tiling import TileGrid


class MergePlan:
    """The merge and restore matrices of one call, built from the block's input tokens."""

    is_identity = False

    def __init__(self, grid: TileGrid, k: int, assign: torch.Tensor, weights: torch.Tensor, batch: int,
                 source: tuple | None = None):
        self.grid = grid
        self.k = k
        self.batch = batch
        self.assign = assign  # A, [B*G, T, k]
        self.weights = weights  # W / colsum(W), [B*G, T, k]
        self._source = source  # (x, its tiles, its border): merge(x) of the planning input reuses the cut
        self.key_log_size = None  # this engine does not use proportional attention

    @property
    def merged_tokens(self) -> int:
        return self.grid.tiles * self.k + self.grid.border_tokens

    @property
    def full_tokens(self) -> int:
        return self.grid.h * self.grid.w

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """MaMe: ``[B, N, C]`` to ``[B, G*k + border, C]``."""
        if self._source is not None and self._source[0] is x:
            tiles, border = self._source[1:]
            self._source = None  # not kept alive through attention
        else:
            tiles, border = self.grid.split(x)
        merged = torch.matmul(self.weights.transpose(1, 2).to(x.dtype), tiles)
        merged = merged.reshape(self.batch, self.grid.tiles * self.k, x.shape[-1])
        return merged if border.shape[1] == 0 else torch.cat([merged, border], dim=1)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """MaRe: ``[B, G*k + border, C]`` back to ``[B, N, C]``."""
        c = y.shape[-1]
        split = self.grid.tiles * self.k
        merged = y[:, :split].reshape(self.batch * self.grid.tiles, self.k, c)
        tiles = torch.matmul(self.assign.to(y.dtype), merged)
        return self.grid.join(tiles, y[:, split:])


class IdentityPlan:
    """What a ratio of 0 (or a block outside the schedule) gets: tensors pass untouched."""

    is_identity = True

    def __init__(self, tokens: int):
        self.merged_tokens = self.full_tokens = tokens
        self.key_log_size = None

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        return y


def tile_similarity(tiles: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[B*G, T, k]`` of each tile's tokens to its destinations (``select``
    is the one-hot ``[T, k]``). Divides the small ``[T, k]`` product by the outer product of
    norms rather than normalising every token: 10x fewer divisions than ``[T, C]``."""
    norms = torch.linalg.vector_norm(tiles, dim=-1, keepdim=True).clamp_min(1e-6)  # [B*G, T, 1]
    select_t = select.transpose(0, 1)
    dest = torch.matmul(select_t, tiles)  # [B*G, k, C]
    dest_norms = torch.matmul(select_t, norms)  # [B*G, k, 1]
    return torch.matmul(tiles, dest.transpose(1, 2)) / (norms * dest_norms.transpose(1, 2))


def destinations_per_tile(tile_tokens: int, ratio: float) -> int:
    return max(1, tile_tokens - round(ratio * tile_tokens))


def _similarity_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def plan_merge(
    x: torch.Tensor,
    h: int,
    w: int,
    settings: MergeSettings,
    pattern: int | torch.Tensor | tuple[int, int] = 0,
    frames: int = 1,
) -> MergePlan | IdentityPlan:
    """Build the MaMe/MaRe matrices for ``x`` (``[B, frames*h*w, C]`` on an ``h x w`` grid).

    ``pattern`` (an int or a 0-dim integer tensor, any value) picks the destination
    pattern; a tensor keeps planning free of host syncs and of recompilation.
    """
    if frames != 1:
        raise NotImplementedError("video grids (frames > 1) arrive with the next engine commit")
    if x.dim() != 3:
        raise MaMeConfigError(f"tokens must be a [batch, tokens, channels] tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise MaMeConfigError(f"tokens must be a floating-point tensor, got {x.dtype}")
    if h < 1 or w < 1 or h * w != x.shape[1]:
        raise MaMeConfigError(f"grid {h}x{w} does not match the {x.shape[1]} tokens of the input")
    grid = TileGrid.fit(h, w, settings.tile)
    k = destinations_per_tile(grid.tile_tokens, settings.ratio)
    if settings.ratio == 0.0 or k == grid.tile_tokens:
        return IdentityPlan(x.shape[1])
    period = pattern_period(grid.th, grid.tw)
    if isinstance(pattern, tuple):  # a legacy (dy, dx) shift
        pattern = (pattern[0] % period) * period + pattern[1] % period

    sim_dtype = _similarity_dtype(x.dtype)
    raw_tiles, border = grid.split(x)
    tiles = raw_tiles.to(sim_dtype)  # no copy for fp32 input
    select = pattern_selection(grid.th, grid.tw, k, pattern, x.device, sim_dtype)
    sim = tile_similarity(tiles, select)

    is_dest = select.sum(dim=1, keepdim=True)  # [T, 1], 1 on destination rows
    keep = 1.0 - is_dest
    assign = torch.softmax(sim * (1.0 / settings.temperature), dim=-1) * keep + select
    if settings.gate == "hard":
        gate = (sim > settings.threshold).to(sim_dtype)
    else:
        gate = torch.sigmoid((sim - settings.threshold) / settings.gate_width)
    weights = assign * gate * keep + select
    weights = weights / weights.sum(dim=1, keepdim=True)
    out_dtype = x.dtype
    return MergePlan(grid, k, assign.to(out_dtype), weights.to(out_dtype), x.shape[0], (x, raw_tiles, border))


def plan_seeded(
    x: torch.Tensor, h: int, w: int, settings: MergeSettings, seed: int, *keys: object
) -> MergePlan | IdentityPlan:
    """:func:`plan_merge` with the pattern hashed on the host from ``seed`` and ``keys``."""
    return plan_merge(x, h, w, settings, pattern_for(seed, *keys))


def shift_for(h: int, w: int, settings: MergeSettings, seed: int, *keys: object) -> int:
    """The pattern :func:`plan_seeded` uses for this seed and keys (kept for older callers)."""
    return pattern_for(seed, *keys)
