"""Scratch tensors reused from one call to the next on a CPU.

The first write to a fresh multi-megabyte CPU tensor pays a page fault per 4 KiB page: about
1 ms for 5 MB on the benchmark machine, the time of five passes over it. Intermediate results
that never leave a call are therefore written into buffers kept per thread, dtype and slot.
CUDA's caching allocator already reuses its memory, so other devices get fresh tensors.
"""
from __future__ import annotations

import math
import threading

import torch


class _Buffers(threading.local):
    def __init__(self):
        self.flat: dict[tuple[torch.dtype, str, bool], torch.Tensor] = {}


_BUFFERS = _Buffers()


def scratch(shape: torch.Size | tuple[int, ...], like: torch.Tensor, slot: str,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``shape`` with ``like``'s device and dtype (or
    ``dtype``). On a CPU it is this thread's buffer ``slot``, valid until the next request for
    the same slot."""
    dtype = dtype or like.dtype
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=like.device)
    count = math.prod(shape)
    key = (dtype, slot, torch.is_inference_mode_enabled())  # an inference tensor is read-only outside
    flat = _BUFFERS.flat.get(key)
    if flat is None or flat.numel() < count:
        flat = torch.empty(count, dtype=dtype)
        _BUFFERS.flat[key] = flat
    return flat[:count].view(shape)


def release_scratch() -> None:
    """Drop this thread's buffers (they are rebuilt on the next use)."""
    _BUFFERS.flat.clear()
