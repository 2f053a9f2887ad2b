"""Moving the kept tokens of a sequence to its front, and back, with shifts only.

A kept token with ``delta`` removed tokens before it must move ``delta`` places left. Moving
every kept token by the bits of its ``delta``, lowest bit first, by ``2**j`` at step ``j``,
never puts two tokens on one place and keeps their order (after step ``j`` a token sits at
``i - (delta mod 2**(j+1))``, and ``delta`` grows more slowly along the sequence than the
position does). So compaction is ``ceil(log2(removed + 1))`` steps of a static shift and an
element-wise select; expansion runs the same steps backwards. The masks are computed once per
plan and reused for every tensor merged or restored with it: no sort, gather or scatter.

The select is exact whatever the values (NaN and inf stay where they are). Where a graph may
be recorded it is ``torch.where``. Otherwise the floats are read as 16-bit integer words and
selected as ``keep + w * (take - keep)`` in wrapping integer arithmetic, bit for bit: a CPU
runs ``where`` over ``[B, N, C]`` at a fraction of its memory bandwidth, and the integer form
is several times faster in bf16 (``bench/results/kernel_costs.txt``).
"""
from __future__ import annotations

import torch

from .workspace import scratch


def _shift_left(t: torch.Tensor, s: int) -> torch.Tensor:
    pad = t.new_zeros(t.shape[:1] + (s,) + t.shape[2:])
    return torch.cat([t[:, s:], pad], dim=1)


def _shift_right(t: torch.Tensor, s: int) -> torch.Tensor:
    pad = t.new_zeros(t.shape[:1] + (s,) + t.shape[2:])
    return torch.cat([pad, t[:, : t.shape[1] - s]], dim=1)


_PING_PONG = ("shift-a", "shift-b")


def in_place_allowed(t: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and t.requires_grad)


class Compaction:
    """The moves that pack the kept entries of ``removed`` (bool ``[B, N]``, the same number
    removed in every row) to the front of the sequence, in order."""

    def __init__(self, removed: torch.Tensor, removed_count: int):
        self.length = removed.shape[1]
        self.kept = self.length - removed_count
        delta = torch.cumsum(removed.to(torch.int64), dim=1) - removed.to(torch.int64)
        alive = ~removed
        self.arrivals: list[torch.Tensor] = []  # step j: bool [B, N], a token arrives here from +2**j
        self._weights: dict[tuple, list[torch.Tensor]] = {}
        for j in range(max(0, removed_count).bit_length()):
            s = 1 << j
            moves = alive & (((delta >> j) & 1) == 1)
            arrives = _shift_left(moves, s)
            delta = torch.where(arrives, _shift_left(delta, s), delta)
            alive = arrives | (alive & ~moves)
            self.arrivals.append(arrives)

    def _steps(self, like: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        """The arrival masks in ``dtype`` (bool, or 0/1 integer weights), shaped to broadcast
        over ``like``."""
        key = (dtype, like.device, like.dim())
        if key not in self._weights:
            tail = (1,) * (like.dim() - 2)
            self._weights[key] = [a.to(dtype).reshape(a.shape + tail) for a in self.arrivals]
        return self._weights[key]

    def compact(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, ...]`` to ``[B, kept, ...]``: the kept entries, in order."""
        if in_place_allowed(x):
            return self._compact_buffered(x)
        for j, arrives in enumerate(self._steps(x, torch.bool)):
            x = torch.where(arrives, _shift_left(x, 1 << j), x)
        return x[:, : self.kept]

    def expand(self, y: torch.Tensor, to_scratch: bool = False) -> torch.Tensor:
        """``[B, kept, ...]`` back to ``[B, N, ...]``; the removed places hold leftovers (or 0)
        that the caller overwrites. ``to_scratch``: the result may be a reused scratch buffer
        (:mod:`.workspace`), valid until the next expansion."""
        if in_place_allowed(y):
            return self._expand_buffered(y, to_scratch)
        pad = y.new_zeros(y.shape[:1] + (self.length - self.kept,) + y.shape[2:])
        x = torch.cat([y, pad], dim=1)
        steps = self._steps(x, torch.bool)
        for j in reversed(range(len(steps))):
            s = 1 << j
            x = torch.where(_shift_right(steps[j], s), _shift_right(x, s), x)
        return x

    # The same steps writing into reused scratch buffers in turn, the last one into the fresh
    # result: new tensors at every step cost more than the selects themselves on a CPU. Used
    # where no graph is recorded (no autograd, not compiling), since ``out=`` is not
    # differentiable.
    def _compact_buffered(self, x: torch.Tensor) -> torch.Tensor:
        n, kept, last = self.length, self.kept, len(self.arrivals) - 1
        if last < 0:
            return x[:, :kept].clone()
        select = _Select(self, x)
        src = x  # the caller's tensor is read, never written
        for j in range(last):
            s, dst = 1 << j, scratch(x.shape, x, _PING_PONG[j % 2])
            select(j, n - s, keep=src[:, : n - s], take=src[:, s:], out=dst[:, : n - s])
            dst[:, n - s :].copy_(src[:, n - s :])
            src = dst
        out = x.new_empty((x.shape[0], kept) + tuple(x.shape[2:]))
        s = 1 << last  # <= the removed count, so s + kept <= n
        select(last, kept, keep=src[:, :kept], take=src[:, s : s + kept], out=out)
        return out

    def _expand_buffered(self, y: torch.Tensor, to_scratch: bool) -> torch.Tensor:
        n, kept = self.length, self.kept
        shape = (y.shape[0], n) + tuple(y.shape[2:])
        src = scratch(shape, y, _PING_PONG[0])
        src[:, :kept].copy_(y)
        src[:, kept:].zero_()
        select = _Select(self, src)
        for step, j in enumerate(reversed(range(len(self.arrivals)))):
            s = 1 << j
            if j == 0:
                dst = scratch(shape, y, "expanded") if to_scratch else y.new_empty(shape)
            else:
                dst = scratch(shape, y, _PING_PONG[(step + 1) % 2])
            select(j, n - s, keep=src[:, s:], take=src[:, : n - s], out=dst[:, s:])
            dst[:, :s].copy_(src[:, :s])
            src = dst
        return src


def select_words(keep: torch.Tensor, take: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                 difference: torch.Tensor) -> None:
    """``out = keep + weight * (take - keep)`` on integer words with a 0/1 ``weight``: ``take``
    where the weight is 1, else ``keep``, bit for bit (the arithmetic wraps)."""
    torch.sub(take, keep, out=difference)
    torch.addcmul(keep, difference, weight, out=out)


_WORDS = ((8, torch.int64), (4, torch.int32), (2, torch.int16))


def word_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The widest integer type ``t`` (``[B, N, ...]``) can be read as with no word spanning two
    tokens (so a per-token mask still applies to each word), or None."""
    row_bytes = t.element_size() * (t.shape[-1] if t.dim() > 2 else 1)
    for size, dtype in _WORDS:
        if size < t.element_size() or row_bytes % size or (t.dim() < 3 and size != t.element_size()):
            continue
        try:
            t.view(dtype)
        except RuntimeError:  # strides that these words do not divide
            continue
        return dtype
    return None


# Below this size (a 16-bit tensor that stays in the benchmark CPU's 32 MB L3 across the
# ping-pong) the 16-bit arithmetic beats ``where`` on wide words; above it ``where`` wins
# twice over (bench/results/kernel_costs.txt).
CACHE_RESIDENT_BYTES = 8 << 20


class _Select:
    """``out = take`` where step ``j``'s arrival mask is set on the first ``rows`` places, else
    ``keep``, bit for bit and without a graph. The tensors share ``like``'s layout.

    The floats are read as integer words, so NaN and inf move untouched. 16-bit values that
    fit in cache use ``keep + w * (take - keep)`` in wrapping 16-bit arithmetic; everything
    else uses ``where`` on words as wide as a token's row allows, which runs near a copy's
    speed on large tensors, where ``where`` on bf16 or fp32 values is several times slower."""

    def __init__(self, compaction: Compaction, like: torch.Tensor):
        self.word = word_dtype(like)
        if like.element_size() == 2 and like.numel() * 2 <= CACHE_RESIDENT_BYTES:
            self.word = torch.int16
        self.arithmetic = self.word == torch.int16
        self.weights = compaction._steps(like, torch.int16 if self.arithmetic else torch.bool)
        if self.arithmetic:
            self.difference = scratch(like.view(torch.int16).shape, like, "difference", torch.int16)

    def __call__(self, j: int, rows: int, keep: torch.Tensor, take: torch.Tensor, out: torch.Tensor) -> None:
        w = self.weights[j][:, :rows]
        if self.word is not None:
            keep, take, out = (t.view(self.word) for t in (keep, take, out))
        if self.arithmetic:
            select_words(keep, take, w, out, self.difference[:, :rows])
        else:
            torch.where(w, take, keep, out=out)
