"""Counting what a piece of torch code asks of a GPU, on any machine: kernels, bytes, FLOPs.

Code runs under fake CUDA tensors (``FakeTensorMode``: shapes and dtypes only, no memory, no
GPU needed) and a dispatch-level recorder. Each aten op that is not a view is one kernel
launch in eager mode on CUDA; its bytes are the tensors it reads plus those it writes; matrix
products and attention carry their multiply-add FLOPs (2 per multiply-add). Allocation-only ops
(``empty``) launch nothing and are left out.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
             "detach", "_local_scalar_dense", "_unsafe_view"}  # allocations and views torch does not flag


@dataclass
class OpRecord:
    name: str
    bytes: int
    flops: int


@dataclass
class Count:
    ops: list[OpRecord] = field(default_factory=list)

    @property
    def kernels(self) -> int:
        return len(self.ops)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.ops)

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    def __add__(self, other: "Count") -> "Count":
        return Count(self.ops + other.ops)


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _flops(name: str, args, out) -> int:
    if name in ("mm", "bmm", "matmul", "addmm", "baddbmm"):
        a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
        batch = max(a.numel() // (a.shape[-2] * a.shape[-1]), b.numel() // (b.shape[-2] * b.shape[-1])) if b.dim() > 1 else 1
        return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1] if b.dim() > 1 else 2 * a.numel()
    if "scaled_dot_product" in name:
        q, k, v = args[0], args[1], args[2]
        rows = q.numel() // q.shape[-1]
        return 2 * rows * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return 0


class _Recorder(TorchDispatchMode):
    def __init__(self, count: Count):
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.namespace == "aten" and not func.is_view and name not in NO_KERNEL:
            ins, outs = _tensors((args, kwargs)), _tensors(out)
            self.count.ops.append(OpRecord(name, _nbytes(ins) + _nbytes(outs), _flops(name, args, out)))
        return out


@contextlib.contextmanager
def fake_cuda():
    """Fake tensors: ``torch.empty(..., device="cuda")`` inside gives shape-only CUDA tensors."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def count(fn, *args, **kwargs) -> Count:
    """Run ``fn`` (inside :func:`fake_cuda`, on fake tensors) and count what it launches."""
    recorded = Count()
    with _Recorder(recorded):
        fn(*args, **kwargs)
    return recorded
