"""Records every aten op that a piece of code runs, to forbid the GPU-unfriendly ones, and
catches host syncs that record no forbidden aten op.

Reusable API::

    ops = audited(fn, *args, **kwargs)   # runs fn; raises ForbiddenOpError / HostSyncError

Host syncs caught by patching their Python entry points for the duration of the call:
``Tensor.item``, ``Tensor.tolist``, ``float()``/``int()``/``bool()`` of a tensor,
``torch.equal``, and ``torch.tensor``/``torch.as_tensor`` built from a Python list or tuple
(a per-call host-to-device copy that a compiled graph would re-run).
"""
from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

FORBIDDEN = {
    "sort",
    "argsort",
    "topk",
    "kthvalue",
    "scatter",
    "scatter_add",
    "scatter_add_",
    "scatter_reduce",
    "scatter_reduce_",
    "scatter_",
    "index_put",
    "index_put_",
    "_index_put_impl_",
    "index_add",
    "index_add_",
    "gather",
    "index_select",
    "index",
    "take",
    "take_along_dim",
    "nonzero",
    "nonzero_static",
    "masked_select",
    "masked_scatter",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "_local_scalar_dense",
    "item",
    "equal",
    "is_nonzero",
}


class ForbiddenOpError(AssertionError):
    pass


class HostSyncError(AssertionError):
    pass


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    @property
    def forbidden(self) -> list[str]:
        return sorted({op for op in self.ops if op in FORBIDDEN})


@contextlib.contextmanager
def no_host_sync():
    """Make the Python entry points of host syncs raise :class:`HostSyncError`."""
    saved = []

    def refuse(owner, name, why, when=None):
        original = getattr(owner, name)

        def guard(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                raise HostSyncError(f"{why} inside audited code")
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, guard)

    from_list = lambda data=None, *a, **k: isinstance(data, (list, tuple))  # noqa: E731
    try:
        refuse(torch.Tensor, "item", "Tensor.item()")
        refuse(torch.Tensor, "tolist", "Tensor.tolist()")
        refuse(torch.Tensor, "__float__", "float() of a tensor")
        refuse(torch.Tensor, "__int__", "int() of a tensor")
        refuse(torch.Tensor, "__bool__", "bool() of a tensor")
        refuse(torch, "equal", "torch.equal")
        refuse(torch, "tensor", "a tensor built from a Python list", from_list)
        refuse(torch, "as_tensor", "a tensor built from a Python list", from_list)
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def audited(fn, *args, **kwargs) -> list[str]:
    """Run ``fn(*args, **kwargs)`` and return the aten ops it ran; raise on a host sync or
    a forbidden op."""
    with no_host_sync(), OpRecorder() as rec:
        fn(*args, **kwargs)
    if rec.forbidden:
        raise ForbiddenOpError(f"forbidden ops: {rec.forbidden}")
    return rec.ops
