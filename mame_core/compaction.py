"""Moving the kept tokens of a sequence to its front, and back, with shifts only.

A kept token with ``delta`` removed tokens before it must move ``delta`` places left. Moving
every kept token by the bits of its ``delta``, lowest bit first, by ``2**j`` at step ``j``,
never puts two tokens on one place and keeps their order (after step ``j`` a token sits at
``i - (delta mod 2**(j+1))``, and ``delta`` grows more slowly along the sequence than the
position does). So compaction is ``ceil(log2(removed + 1))`` steps of a static shift and an
element-wise select; expansion runs the same steps backwards. The masks are computed once per
plan and reused for every tensor merged or restored with it: no sort, gather or scatter.
"""
from __future__ import annotations

import torch


def _shift_left(t: torch.Tensor, s: int) -> torch.Tensor:
    pad = t.new_zeros(t.shape[:1] + (s,) + t.shape[2:])
    return torch.cat([t[:, s:], pad], dim=1)


def _shift_right(t: torch.Tensor, s: int) -> torch.Tensor:
    pad = t.new_zeros(t.shape[:1] + (s,) + t.shape[2:])
    return torch.cat([pad, t[:, : t.shape[1] - s]], dim=1)


def _in_place_allowed(t: torch.Tensor) -> bool:
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
        for j in range(max(0, removed_count).bit_length()):
            s = 1 << j
            moves = alive & (((delta >> j) & 1) == 1)
            arrives = _shift_left(moves, s)
            delta = torch.where(arrives, _shift_left(delta, s), delta)
            alive = arrives | (alive & ~moves)
            self.arrivals.append(arrives)

    @staticmethod
    def _mask(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return m.reshape(m.shape + (1,) * (like.dim() - 2))

    def compact(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, ...]`` to ``[B, kept, ...]``: the kept entries, in order."""
        if _in_place_allowed(x):
            return self._compact_buffered(x)
        for j, arrives in enumerate(self.arrivals):
            x = torch.where(self._mask(arrives, x), _shift_left(x, 1 << j), x)
        return x[:, : self.kept]

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, kept, ...]`` back to ``[B, N, ...]``; the removed places hold leftovers (or 0)
        that the caller overwrites."""
        pad = y.new_zeros(y.shape[:1] + (self.length - self.kept,) + y.shape[2:])
        x = torch.cat([y, pad], dim=1)
        if _in_place_allowed(y):
            return self._expand_buffered(x)
        for j in reversed(range(len(self.arrivals))):
            s = 1 << j
            x = torch.where(self._mask(_shift_right(self.arrivals[j], s), x), _shift_right(x, s), x)
        return x

    # The same steps writing into two buffers in turn: fresh tensors at every step cost more
    # than the selects themselves on a CPU. Used where no graph is recorded (no autograd, not
    # compiling), since ``out=`` is not differentiable.
    def _compact_buffered(self, x: torch.Tensor) -> torch.Tensor:
        n = self.length
        buffers = (torch.empty_like(x), torch.empty_like(x)) if self.arrivals else ()
        src = x  # the caller's tensor is read, never written
        for j, arrives in enumerate(self.arrivals):
            s, dst = 1 << j, buffers[j % 2]
            torch.where(self._mask(arrives[:, : n - s], x), src[:, s:], src[:, : n - s], out=dst[:, : n - s])
            dst[:, n - s :].copy_(src[:, n - s :])
            src = dst
        return src[:, : self.kept]

    def _expand_buffered(self, x: torch.Tensor) -> torch.Tensor:
        n = self.length
        src, dst = x, torch.empty_like(x)
        for j in reversed(range(len(self.arrivals))):
            s = 1 << j
            torch.where(self._mask(self.arrivals[j][:, : n - s], x), src[:, : n - s], src[:, s:], out=dst[:, s:])
            dst[:, :s].copy_(src[:, :s])
            src, dst = dst, src
        return src
