"""The match regions of the GPU route: equal boxes that tile a (frames x) h x w grid exactly.

A region is where a token looks for its destination and where the count of merged tokens is
fixed (``removed / G`` in each of the ``G`` regions, so ``G`` divides the count removed). All
regions have one shape, so the whole grid is one batched tensor ``[B*G, R, C]``: every step of
the route is one batched kernel, whatever the grid. A region that spans whole rows of one
frame, or whole frames, is a contiguous run of the sequence and costs no copy; other shapes
cost one permuted copy in and one out.

The region size trades fidelity (a larger region finds better matches and lets detailed areas
keep more of their tokens) against the dense products, whose cost per token grows with ``R``:
:func:`region_target` keeps them a small share of the attention they save.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

MAX_REGION = 4096  # ranks stay exact in float32 up to here (dense_merge's keys)
LONG_GRID = 32768  # above it regions stay at 2048 tokens: the [R, K] matrices live through attention


def region_target(tokens: int, channels: int) -> int:
    """The largest region wanted. Fidelity grows with the region (bench/results/fidelity.txt),
    and so do the dense products: their ``[R, K]`` matrices move about ``R / 2`` numbers per
    token and pass against the ``C`` of a token's features (so at most about ``4 C``), and
    merge + restore cost ``R * C`` multiply-adds per token and tensor against attention's
    ``4 N * C`` (so at most about ``N / 8``); never below 1024 tokens, whose cost a GPU hides
    in its launch overhead (bench/results/gpu-cost.txt)."""
    cap = MAX_REGION if tokens <= LONG_GRID else MAX_REGION // 2
    return min(tokens, cap, max(1024, min(4 * channels, tokens // 8)))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class Regions:
    frames: int
    h: int
    w: int
    shape: tuple[int, int, int]  # (tf, th, tw) of one region

    @property
    def tokens(self) -> int:
        return self.frames * self.h * self.w

    @property
    def size(self) -> int:
        tf, th, tw = self.shape
        return tf * th * tw

    @property
    def count(self) -> int:
        return self.tokens // self.size

    @property
    def counts(self) -> tuple[int, int, int]:
        tf, th, tw = self.shape
        return (self.frames // tf, self.h // th, self.w // tw)

    @property
    def contiguous(self) -> bool:
        """Each region is one run of the raster sequence (split and join are views)."""
        tf, th, tw = self.shape
        return tw == self.w and (th == self.h or tf == 1)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` (raster order) to ``[B*G, R, C]`` (region order, raster inside)."""
        b, _, c = x.shape
        if self.contiguous:
            return x.reshape(b * self.count, self.size, c)
        (nf, ny, nx), (tf, th, tw) = self.counts, self.shape
        grid = x.reshape(b, nf, tf, ny, th, nx, tw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return grid.reshape(b * self.count, self.size, c)

    def join(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        c = y.shape[-1]
        b = y.shape[0] // self.count
        if self.contiguous:
            return y.reshape(b, self.tokens, c)
        (nf, ny, nx), (tf, th, tw) = self.counts, self.shape
        grid = y.reshape(b, nf, ny, nx, tf, th, tw, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
        return grid.reshape(b, self.tokens, c)


@lru_cache(maxsize=256)
def choose_regions(frames: int, h: int, w: int, removed: int, channels: int) -> Regions:
    """The region shape for a grid that gives up ``removed`` tokens: the largest box within
    :func:`region_target`, preferring a region count that divides ``removed`` (every region
    then gives up as many tokens; otherwise the first ``removed % G`` regions give up one more,
    which costs a copy to drop their empty slot); contiguous boxes, then compact ones, win
    ties. Video regions span at least two frames where one fits, so a token can merge with
    the same place in the next frame."""
    tokens = frames * h * w
    target = region_target(tokens, channels)
    candidates = []
    for tf in _divisors(frames):
        for th in _divisors(h):
            for tw in _divisors(w):
                size = tf * th * tw
                even = removed % (tokens // size) == 0
                regions = Regions(frames, h, w, (tf, th, tw))
                deep = tf >= 2 or frames == 1
                fits = size <= target
                squareness = min(th, tw) / max(th, tw)
                candidates.append(((fits, deep, even, size if fits else -size, regions.contiguous, squareness),
                                   regions))
    return max(candidates, key=lambda c: c[0])[1]
