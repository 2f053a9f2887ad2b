"""The GPU cost model's counter (bench.op_count) and a quick run of bench.gpu_cost."""
import json

import torch

from bench.op_count import count, fake_cuda


def test_counter_counts_kernels_bytes_and_flops_not_views():
    with fake_cuda():
        a = torch.empty(4, 8, 16, device="cuda", dtype=torch.bfloat16)
        b = torch.empty(4, 16, 32, device="cuda", dtype=torch.bfloat16)
        c = count(lambda: torch.matmul(a, b).transpose(1, 2).reshape(4, 256).relu())
    names = [o.name for o in c.ops]
    assert names.count("bmm") == 1 and "relu" in names
    assert "transpose" not in names and "view" not in names
    bmm = next(o for o in c.ops if o.name == "bmm")
    assert bmm.flops == 2 * 4 * 8 * 16 * 32
    assert bmm.bytes == (4 * 8 * 16 + 4 * 16 * 32 + 4 * 8 * 32) * 2


def test_quick_cost_model_run(tmp_path):
    from bench import gpu_cost

    out = tmp_path / "cost.json"
    assert gpu_cost.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    by = {(r["shape"], r["method"]): r for r in data["records"]}
    for shape in ("quick-unet", "quick-dit", "quick-video"):
        gpu, cpu = by[(shape, "mame-gpu")], by[(shape, "mame-cpu")]
        assert gpu["kernels"] <= 40 < cpu["kernels"]
        assert by[(shape, "mame-gpu merge+restore")]["kernels"] <= 12
        assert all(v["eager"] > 0 for v in gpu["estimate_ms"].values())
