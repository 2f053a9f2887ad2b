"""Where the destination tokens sit inside a tile.

Destinations follow an ordered-dither (Bayer) ranking of the tile's positions: the first
``k`` positions of that ranking are spread evenly over the tile for every ``k``. A shift
``(dy, dx)`` rolls the ranking cyclically, so different calls pick different but equally
even patterns. All of this is host-side bookkeeping on small Python ints; the device only
ever sees the resulting one-hot selection matrix.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import torch


def _bayer(order: int) -> list[list[int]]:
    """Ranks 0..n*n-1 of an ``n x n`` ordered-dither matrix, ``n = 2**order``."""
    ranks = [[0]]
    for _ in range(order):
        size = len(ranks)
        grown = [[0] * (2 * size) for _ in range(2 * size)]
        for y in range(size):
            for x in range(size):
                r = 4 * ranks[y][x]
                grown[y][x] = r
                grown[y][x + size] = r + 2
                grown[y + size][x] = r + 3
                grown[y + size][x + size] = r + 1
        ranks = grown
    return ranks


def pattern_period(th: int, tw: int) -> int:
    """Side of the Bayer matrix that covers a ``th x tw`` tile (a power of two)."""
    return 1 << max(0, (max(th, tw) - 1).bit_length())


@lru_cache(maxsize=256)
def destination_indices(th: int, tw: int, k: int, dy: int = 0, dx: int = 0) -> tuple[int, ...]:
    """Raster indices inside a ``th x tw`` tile of its ``k`` destinations, ascending."""
    if not 1 <= k <= th * tw:
        raise ValueError(f"k must be in [1, {th * tw}] for a {th}x{tw} tile, got {k}")
    period = pattern_period(th, tw)
    bayer = _bayer(period.bit_length() - 1)
    ranked = sorted(
        range(th * tw),
        key=lambda i: (bayer[(i // tw + dy) % period][(i % tw + dx) % period], i),
    )
    return tuple(sorted(ranked[:k]))


_SELECTION_CACHE: dict[tuple, torch.Tensor] = {}


def selection_matrix(
    th: int, tw: int, k: int, shift: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One-hot ``E`` of shape ``[T, k]`` with ``E[i, j] = 1`` when token i is destination j."""
    key = (th, tw, k, shift, str(device), dtype)
    cached = _SELECTION_CACHE.get(key)
    if cached is None:
        rows = destination_indices(th, tw, k, *shift)
        eye = [[1.0 if i == r else 0.0 for r in rows] for i in range(th * tw)]
        cached = torch.tensor(eye, dtype=dtype, device=device)
        if len(_SELECTION_CACHE) > 512:
            _SELECTION_CACHE.clear()
        _SELECTION_CACHE[key] = cached
    return cached


def bayer_rank(ys: torch.Tensor, xs: torch.Tensor, period: int) -> torch.Tensor:
    """The ordered-dither rank of integer positions (same order as :func:`_bayer`), from
    integer ops only, so it can be computed on the device inside a compiled graph."""
    rank = torch.zeros_like(ys)
    bits = period.bit_length() - 1
    for b in range(bits):
        yb = (ys >> b) & 1
        xb = (xs >> b) & 1
        rank = rank + (2 * xb + 3 * yb - 4 * xb * yb) * (4 ** (bits - 1 - b))
    return rank


def pattern_selection(th: int, tw: int, k: int, pattern, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``[T, k]`` one-hot selection of the destinations for ``pattern`` (an int or a
    0-dim integer tensor; pattern ``p`` is the shift ``(p // period % period, p % period)``).

    Built from ``arange`` with comparisons and a cumulative sum: no host sync, no tensor
    from a Python list, and a compiled graph serves every pattern value."""
    period = pattern_period(th, tw)
    if not isinstance(pattern, torch.Tensor):
        pattern = torch.tensor(int(pattern) % (period * period), device=device)
    p = pattern.to(device=device, dtype=torch.int64).reshape(())
    dy, dx = (p // period) % period, p % period
    pos = torch.arange(th * tw, device=device)
    rank = bayer_rank((pos // tw + dy) % period, (pos % tw + dx) % period, period)
    # the k lowest ranks; ranks are distinct, so "fewer than k ranks below mine" is exact
    below = (rank.unsqueeze(0) < rank.unsqueeze(1)).sum(dim=1)
    chosen = below < k
    slot = torch.cumsum(chosen.to(torch.int64), 0) - 1
    return (chosen.unsqueeze(1) & (slot.unsqueeze(1) == torch.arange(k, device=device))).to(dtype)


def pattern_for(seed: int, *keys: object) -> int:
    """A reproducible non-negative pattern number from a seed and call keys (host side).

    A keyed hash rather than any RNG: the same in every process, and torch's global random
    state is never touched."""
    text = "|".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seeded_shift(seed: int, *keys: object, period: int) -> tuple[int, int]:
    """A reproducible ``(dy, dx)`` in ``[0, period)`` from a seed and call keys.

    Uses a keyed hash rather than any RNG, so it is the same in every process and never
    touches torch's global random state.
    """
    text = "|".join(str(k) for k in (seed, *keys)).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % period, (value // period) % period
