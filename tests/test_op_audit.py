"""Plan, merge and restore run only dense, sync-free ops, in every mode, gate, dtype and grid."""
import pytest
import torch
from conftest import seeded

from mame_core import MergeSettings, pattern_for, plan_merge
from op_audit import ForbiddenOpError, HostSyncError, OpRecorder, audited


@pytest.mark.parametrize("mode", ["qkv", "kv"])
@pytest.mark.parametrize("gate,tau", [("hard", -1.0), ("hard", 0.5), ("sigmoid", 0.5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames,h,w", [(1, 16, 16), (1, 13, 19), (3, 6, 5)])
@pytest.mark.parametrize("autograd", [False, True])  # the packing's buffered path, and its graph path
def test_plan_merge_restore_use_no_forbidden_op_and_no_host_sync(mode, gate, tau, dtype, frames, h, w, autograd):
    x = torch.randn(2, frames * h * w, 32, generator=seeded(0)).to(dtype).requires_grad_(autograd)
    settings = MergeSettings(ratio=0.5, mode=mode, gate=gate, threshold=tau, tile=(4, 4))
    pattern = torch.tensor(pattern_for(7, "input", 1))

    def run():
        plan = plan_merge(x, h, w, settings, pattern, frames)
        merged = plan.merge(x)
        assert plan.key_log_size is not None
        if mode == "qkv":
            plan.restore(merged * 2)

    ops = audited(run)
    assert {"bmm", "mm", "matmul"} & set(ops), ops


def test_the_audit_catches_forbidden_ops():
    x = torch.randn(4, 8, generator=seeded(0))
    with OpRecorder() as rec:
        torch.argsort(x, dim=-1)
        x.gather(1, torch.zeros(4, 1, dtype=torch.long))
        (x > 0).nonzero()
    assert {"argsort", "sort", "gather", "nonzero"} & set(rec.forbidden)
    assert "gather" in rec.forbidden and "nonzero" in rec.forbidden
    with pytest.raises(ForbiddenOpError):
        audited(torch.topk, x, 2)


@pytest.mark.parametrize(
    "sync",
    [
        lambda x: x.sum().item(),
        lambda x: x.tolist(),
        lambda x: float(x.sum()),
        lambda x: int(x.sum()),
        lambda x: bool(x.sum() > 0),
        lambda x: torch.equal(x, x),
        lambda x: x + torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
    ],
)
def test_the_audit_catches_host_syncs(sync):
    x = torch.randn(4, 8, generator=seeded(0))
    with pytest.raises(HostSyncError):
        audited(sync, x)
    sync(x)  # the entry points are restored afterwards
