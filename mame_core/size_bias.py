"""Proportional attention without a mask argument: one extra channel per head.

A merged key that stands for ``n`` tokens should weigh as ``n`` keys, i.e. its attention
logit gets ``+ log n``. Appending a channel to every head, 1 in the query and
``log n / scale`` in the key (0 in the value), adds exactly that to ``scale * q.k``, so any
attention kernel (fused ones without a mask included) computes the biased softmax. The
head width is padded to a multiple of 8 for the kernels; the padding is zeros.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def _pad_width(head_dim: int) -> int:
    return (head_dim + 1 + 7) // 8 * 8


def add_size_channel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_size: torch.Tensor,
    heads: int,
    scale: float | None = None,
    scale_from_width: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Return ``(q2, k2, v2, restore)`` so that attention on them equals attention on
    ``q, k, v`` with ``log_size`` added to the logits of each key.

    q, k, v: ``[B, N, heads*d]`` (heads folded into channels) or ``[B, heads, N, d]``.
    log_size: ``[B, M]`` for the ``M`` keys. scale: the softmax scale of the ORIGINAL head
    width (default ``d ** -0.5``). ``scale_from_width``: the attention that will run derives
    its scale from the (padded) head width, so the query is rescaled to keep the original
    one; pass False when the host passes ``scale`` to the attention explicitly.
    ``restore(out)`` takes the attention output in the same layout and drops the padding.
    """
    folded = q.dim() == 3
    if folded:
        b, n, width = q.shape
        if width % heads:
            raise ValueError(f"channels {width} are not a multiple of heads {heads}")
        d = width // heads
        q4, k4, v4 = (t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    else:
        if q.shape[1] != heads:
            raise ValueError(f"expected {heads} heads in dim 1, got shape {tuple(q.shape)}")
        d = q.shape[-1]
        q4, k4, v4 = q, k, v
    if log_size.shape != (k4.shape[0], k4.shape[2]):
        raise ValueError(f"log_size must be [batch, keys] = {(k4.shape[0], k4.shape[2])}, got {tuple(log_size.shape)}")
    scale = d ** -0.5 if scale is None else scale
    d2 = _pad_width(d)
    pad = d2 - d - 1
    run_scale = d2 ** -0.5 if scale_from_width else scale
    if scale_from_width:
        q4 = q4 * (scale / run_scale)

    def extend(t: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        parts = [t, channel.to(t.dtype)]
        if pad:
            parts.append(t.new_zeros(*t.shape[:-1], pad))
        return torch.cat(parts, dim=-1)

    q2 = extend(q4, q4.new_ones(*q4.shape[:-1], 1))
    key_channel = (log_size / run_scale).to(k4.dtype)[:, None, :, None].expand(*k4.shape[:-1], 1)
    k2 = extend(k4, key_channel)
    v2 = extend(v4, v4.new_zeros(*v4.shape[:-1], 1))

    def restore(out: torch.Tensor) -> torch.Tensor:
        if folded:
            bo, no, _ = out.shape
            return out.reshape(bo, no, heads, d2)[..., :d].reshape(bo, no, heads * d)
        return out[..., :d]

    if folded:
        q2, k2, v2 = (t.transpose(1, 2).reshape(t.shape[0], t.shape[2], heads * d2) for t in (q2, k2, v2))
    return q2, k2, v2, restore


def key_bias_mask(log_size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same bias as an additive attention mask ``[B, 1, 1, keys]``, for kernels that take
    one and broadcast it over heads and queries."""
    return log_size.to(dtype)[:, None, None, :]


def biased_attention_reference(q, k, v, log_size, heads, scale=None):
    """Plain attention with the log-size bias as an explicit logit term (for tests)."""
    b, n, width = q.shape
    d = width // heads
    scale = d ** -0.5 if scale is None else scale
    q4, k4, v4 = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    logits = torch.matmul(q4, k4.transpose(-1, -2)) * scale + log_size[:, None, None, :]
    out = torch.matmul(torch.softmax(logits, dim=-1), v4)
    return out.transpose(1, 2).reshape(b, n, width)


__all__ = ["add_size_channel", "biased_attention_reference", "key_bias_mask"]
