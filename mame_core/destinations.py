"""Which tokens of a tile are destinations, for a given pattern number.

Every 2x2 cell of a tile (2x2x2 on video tiles; cells at an odd edge are smaller) gets one
destination, at an offset inside the cell drawn from an integer hash of (pattern, tile,
cell), so the choice varies across tiles, blocks and steps. When the ratio asks for fewer
destinations than cells (ratio > 3/4), the cells keep theirs in ordered-dither (Bayer)
order, so the survivors stay evenly spread.

Everything is computed from ``arange`` with integer ops, comparisons and cumulative sums:
the pattern may be a 0-dim tensor, no host sync happens, no tensor is built from a Python
list, and a compiled graph serves every pattern value. :func:`pattern_for` is the
host-side hash that callers outside compiled regions use to pick a pattern.
"""
from __future__ import annotations

import hashlib

import torch

_M = 2**31


def pattern_for(seed: int, *keys: object) -> int:
    """A reproducible non-negative pattern number from a seed and call keys (host side).

    A keyed hash (blake2b) rather than any RNG: the same in every process, and torch's
    global random state is never touched."""
    text = "|".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def _mix(v: torch.Tensor) -> torch.Tensor:
    """A small integer hash on int64 values in [0, 2**31) (products stay below 2**62)."""
    v = (v * 1103515245 + 12345) % _M
    v = v ^ (v >> 16)
    v = (v * 48271 + 11) % _M
    return v ^ (v >> 13)


def bayer_rank(ys: torch.Tensor, xs: torch.Tensor, period: int) -> torch.Tensor:
    """Ordered-dither rank of integer positions in a ``period x period`` matrix (a power of two)."""
    rank = torch.zeros_like(ys)
    bits = period.bit_length() - 1
    for b in range(bits):
        yb = (ys >> b) & 1
        xb = (xs >> b) & 1
        rank = rank + (2 * xb + 3 * yb - 4 * xb * yb) * (4 ** (bits - 1 - b))
    return rank


def cell_count(shape: tuple[int, int, int]) -> int:
    f, h, w = shape
    return ((f + 1) // 2) * ((h + 1) // 2) * ((w + 1) // 2)


def destination_mask(
    shape: tuple[int, int, int], tiles: int, first_tile: int, d: int, pattern: torch.Tensor
) -> torch.Tensor:
    """Bool ``[tiles, T]``: the ``d`` destinations of each tile (``d <= cell_count(shape)``).

    Cells are 2x2 tokens (2x2x2 on a video tile: a destination stands for both frames)."""
    f, h, w = shape
    device = pattern.device
    t = torch.arange(f * h * w, device=device)
    fl, yl, xl = t // (h * w), (t // w) % h, t % w
    cf, cy, cx = fl // 2, yl // 2, xl // 2
    cell_w = torch.clamp(w - 2 * cx, max=2)
    cell_h = torch.clamp(h - 2 * cy, max=2)
    cell_size = torch.clamp(f - 2 * cf, max=2) * cell_h * cell_w
    inner = ((fl % 2) * cell_h + yl % 2) * cell_w + xl % 2  # 0..cell_size-1 inside the cell
    cells_h, cells_w = (h + 1) // 2, (w + 1) // 2
    cell = (cf * cells_h + cy) * cells_w + cx  # [T]
    p = _mix(pattern.to(torch.int64).reshape(()) % _M)
    tile_ids = torch.arange(tiles, device=device) + first_tile
    per_tile = _mix((p + tile_ids * 40503) % _M).unsqueeze(1)  # [G, 1]
    offset = (_mix((per_tile + cell * 9973 + 1) % _M) >> 7) % cell_size  # [G, T]
    chosen = inner == offset
    if d < cell_count(shape):
        period = 1 << max(0, (max(cells_h, cells_w) - 1).bit_length())
        key = bayer_rank(cy, cx, period) * ((f + 1) // 2) + cf  # distinct per cell, spread evenly
        first = (inner == 0).unsqueeze(0)  # one representative token per cell
        order = ((key.unsqueeze(0) < key.unsqueeze(1)) & first).sum(dim=1)  # cells ranked before mine
        chosen = chosen & (order < d)
    return chosen


def one_hot_slots(mask: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """``[..., T, slots]`` one-hot packing of the ``True`` positions of ``mask`` (``[..., T]``)
    in order: position t goes to slot ``cumsum(mask)[t] - 1``. ``mask`` holds exactly
    ``slots`` trues per row."""
    slot = torch.cumsum(mask.to(torch.int64), dim=-1) - 1
    return (mask.unsqueeze(-1) & (slot.unsqueeze(-1) == torch.arange(slots, device=mask.device))).to(dtype)
