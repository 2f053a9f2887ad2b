"""Proportional attention through the host's attention function: a key mask or a size channel.

Each merged key's logit gets ``+ log(tokens it stands for)``. Two ways reach ComfyUI's kernel:

* an additive ``mask`` of shape ``[B, 1, 1, keys]``. ComfyUI's ``attention_pytorch`` hands it
  to torch's SDPA, which on a CPU adds it at no measurable cost
  (``bench/results/kernel_costs.txt``: 1.01-1.04x of plain attention, against 1.07-1.14x for
  the channel). On CUDA a float mask moves SDPA from flash to its memory-efficient kernel,
  which still costs less than the channel's padded head width at 8 of 9 measured shapes on an
  H200 (1.2-1.6x of plain merged attention against 1.5-9.8x,
  ``bench/results/gpu-kernels.txt``). ComfyUI's other kernels broadcast a mask each in their
  own way, so the mask is used for ``attention_pytorch`` on a CPU or CUDA;
* everywhere else, one extra channel per head (``mame_core.size_bias.add_size_channel``),
  which any kernel computes exactly.
"""
from __future__ import annotations

import torch

from ..mame_core.size_bias import add_size_channel, key_bias_mask

MASKED_KERNELS = ("attention_pytorch",)


def bias_as_mask(attention, device: torch.device) -> bool:
    """Whether ``attention`` (a ComfyUI attention function) gets the bias as a mask."""
    return device.type in ("cpu", "cuda") and getattr(attention, "__name__", None) in MASKED_KERNELS


def sized_attention(attention, q, k, v, heads: int, log_size: torch.Tensor, as_mask: bool, **kwargs):
    """``attention(q, k, v, heads, **kwargs)`` (q, k, v ``[B, N, heads*d]``) with ``log_size``
    (``[B, keys]``) added to each key's logits. A ``mask`` of the caller's own must be additive
    and ``[B, 1, 1, keys]`` (one row over the keys); the bias is added to it."""
    if as_mask:
        bias = key_bias_mask(log_size, q.dtype)
        own = kwargs.get("mask")
        return attention(q, k, v, heads, **{**kwargs, "mask": bias if own is None else own + bias})
    q2, k2, v2, restore = add_size_channel(q, k, v, log_size, heads)
    return restore(attention(q2, k2, v2, heads, **kwargs))
