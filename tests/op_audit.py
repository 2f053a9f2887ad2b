"""Records every aten op that a piece of code runs, to forbid the GPU-unfriendly ones."""
from __future__ import annotations

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
}


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
