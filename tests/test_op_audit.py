"""Merge and restore run only dense, sync-free ops, in every mode, gate and dtype."""
import pytest
import torch

from conftest import seeded
from mame_core import MergeSettings, plan_seeded
from op_audit import OpRecorder


@pytest.mark.parametrize("mode", ["qkv", "kv"])
@pytest.mark.parametrize("gate", ["hard", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("h,w", [(16, 16), (13, 19)])
def test_merge_and_restore_use_no_forbidden_op(mode, gate, dtype, h, w):
    x = torch.randn(2, h * w, 32, generator=seeded(0)).to(dtype)
    settings = MergeSettings(ratio=0.5, mode=mode, gate=gate, tile=(4, 4))
    plan_seeded(x, h, w, settings, 7, "warm the selection cache")
    with OpRecorder() as rec:
        plan = plan_seeded(x, h, w, settings, 7, "input", 1, 0.5)
        merged = plan.merge(x)
        if mode == "qkv":
            plan.restore(merged * 2)
    assert {"bmm", "mm", "matmul"} & set(rec.ops) or "_softmax" in rec.ops, rec.ops
    assert rec.forbidden == [], f"forbidden ops in merge/restore: {rec.forbidden}"


def test_the_audit_catches_forbidden_ops():
    x = torch.randn(4, 8, generator=seeded(0))
    with OpRecorder() as rec:
        torch.argsort(x, dim=-1)
        x.gather(1, torch.zeros(4, 1, dtype=torch.long))
        (x > 0).nonzero()
        x.sum().item()
    assert {"argsort", "sort", "gather", "nonzero", "_local_scalar_dense"} & set(rec.forbidden)
    assert "gather" in rec.forbidden and "nonzero" in rec.forbidden
