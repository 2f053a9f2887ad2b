"""The GPU suite's CPU dry run (bench/gpu_suite.sh --device cpu --quick): it runs end to end on
tiny shapes, writes its result files, and its correctness checks pass on the CPU, so the suite
cannot rot between GPUs. CUDA-only parts are recorded as skipped with their reason."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [f"gpu-{stage}.{ext}" for stage in ("correctness", "kernels", "models") for ext in ("json", "txt")]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-suite")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(["bash", "bench/gpu_suite.sh", str(out), "--device", "cpu", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, {name: json.loads((out / f"gpu-{name}.json").read_text())
                 for name in ("correctness", "kernels", "models")}


def records(data, **match):
    return [r for r in data["records"] if all(r.get(k) == v for k, v in match.items())]


def test_writes_at_most_seven_flat_files(dry_run):
    out, _ = dry_run
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(FILES + ["gpu-suite.log"])
    assert all(p.is_file() for p in out.iterdir())
    assert "gpu suite finished" in (out / "gpu-suite.log").read_text()


def test_correctness_checks_pass_on_cpu(dry_run):
    _, data = dry_run
    correctness = data["correctness"]
    assert correctness["status"] == "done" and correctness["summary"]["failed"] == 0, correctness["summary"]
    for dtype in ("bf16", "fp16"):
        for route in ("cpu", "gpu"):
            for check in ("identity", "token-count", "copies-restored", "op-audit"):
                assert records(correctness, check=check, route=route, dtype=dtype, status="pass"), (check, route, dtype)
            sync = records(correctness, check="no-host-sync", route=route, dtype=dtype)
            assert sync and sync[0]["status"] == "skipped" and "CUDA" in sync[0]["reason"]
        assert records(correctness, check="merge-map", dtype=dtype, status="pass")


def test_kernel_records_for_every_quick_shape(dry_run):
    from bench.gpu_shapes import QUICK_SHAPES

    _, data = dry_run
    kernels = data["kernels"]
    assert kernels["status"] == "done"
    for shape in QUICK_SHAPES:
        for method in ("attention-full", "attention-merged", "attention-merged size-channel",
                       "attention-merged float-mask", "mame-cpu", "mame-gpu", "mame-gpu merge+restore", "tomesd",
                       "pool"):
            found = records(kernels, shape=shape.name, method=method, mode="eager", status="ok")
            assert found and found[0]["median_ms"] > 0, (shape.name, method)
            assert found[0].get("estimate", "").startswith("no estimate") or "estimate_ms" in found[0] \
                or found[0]["cost_method"] is None
    assert records(kernels, mode="graph", status="skipped")[0]["reason"] == "CUDA graphs need CUDA"
    assert records(kernels, method="mame-gpu", mode="compiled", status="ok")


def test_model_records_with_amdahl_bounds(dry_run):
    _, data = dry_run
    models = data["models"]
    assert models["status"] == "done"
    for case in ("tiny-128", "quick-dit"):
        rows = {r["method"]: r for r in records(models, case=case, mode="eager", status="ok")}
        assert set(rows) == {"baseline", "mame-auto", "mame-forced", "tomesd", "pool"}, (case, rows.keys())
        assert all("amdahl_bound" in r for name, r in rows.items() if name != "baseline")
    assert records(models, mode="compiled", status="skipped")
