"""Cutting a (frames x) h x w token grid into tiles that cover it all, with static slices only.

Each axis of length ``L`` is cut into ``n = ceil(L / t)`` tiles for a requested tile length
``t``: ``L % n`` of them one token longer than the rest, so every token lies in a tile and
no tile is padded (a fake token would take part in the attention softmax). The grid falls
into at most two tile lengths per axis, i.e. at most 8 rectangular *blocks* (4 for images),
and inside a block every tile has the same shape, so a block is one batched tensor
``[B*G, T, C]``. Tokens inside a tile are in (frame, row, column) raster order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segment:
    start: int
    size: int  # tile length along this axis
    count: int  # tiles along this axis


def segments(length: int, tile: int) -> tuple[Segment, ...]:
    n = max(1, -(-length // max(1, tile)))
    base, extra = divmod(length, n)
    out = []
    if n - extra:
        out.append(Segment(0, base, n - extra))
    if extra:
        out.append(Segment((n - extra) * base, base + 1, extra))
    return tuple(out)


@dataclass(frozen=True)
class Block:
    axes: tuple[Segment, Segment, Segment]  # frames, rows, columns
    first_tile: int  # index of this block's first tile over the whole grid

    @property
    def tiles(self) -> int:
        return self.axes[0].count * self.axes[1].count * self.axes[2].count

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.size for s in self.axes)

    @property
    def tile_tokens(self) -> int:
        f, h, w = self.shape
        return f * h * w


@dataclass(frozen=True)
class Tiling:
    frames: int
    h: int
    w: int
    blocks: tuple[Block, ...]

    @classmethod
    def fit(cls, frames: int, h: int, w: int, tile: tuple[int, int, int]) -> "Tiling":
        per_axis = [segments(n, t) for n, t in zip((frames, h, w), tile)]
        blocks, first = [], 0
        for axes in itertools.product(*per_axis):
            block = Block(tuple(axes), first)
            blocks.append(block)
            first += block.tiles
        return cls(frames, h, w, tuple(blocks))

    @property
    def tokens(self) -> int:
        return self.frames * self.h * self.w

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, N, C]`` to one ``[B*G, T, C]`` tensor per block."""
        b, _, c = x.shape
        grid = x.reshape(b, self.frames, self.h, self.w, c)
        out = []
        for block in self.blocks:
            (sf, sy, sx) = block.axes
            part = grid[
                :,
                sf.start : sf.start + sf.size * sf.count,
                sy.start : sy.start + sy.size * sy.count,
                sx.start : sx.start + sx.size * sx.count,
            ]
            part = part.reshape(b, sf.count, sf.size, sy.count, sy.size, sx.count, sx.size, c)
            part = part.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b * block.tiles, block.tile_tokens, c)
            out.append(part)
        return out

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        c = parts[0].shape[-1]
        b = parts[0].shape[0] // self.blocks[0].tiles
        grids = []
        for block, part in zip(self.blocks, parts):
            (sf, sy, sx) = block.axes
            g = part.reshape(b, sf.count, sy.count, sx.count, sf.size, sy.size, sx.size, c)
            g = g.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, sf.count * sf.size, sy.count * sy.size, sx.count * sx.size, c)
            grids.append(g)
        counts = [len({blk.axes[i] for blk in self.blocks}) for i in range(3)]
        nf, ny, nx = counts
        it = iter(grids)
        frames = []
        for _ in range(nf):
            rows = []
            for _ in range(ny):
                cols = [next(it) for _ in range(nx)]
                rows.append(cols[0] if nx == 1 else torch.cat(cols, dim=3))
            frames.append(rows[0] if ny == 1 else torch.cat(rows, dim=2))
        full = frames[0] if nf == 1 else torch.cat(frames, dim=1)
        return full.reshape(b, self.tokens, c)
