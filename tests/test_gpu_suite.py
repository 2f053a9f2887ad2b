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
# budgets scaled up: a CPU shared with other jobs must not turn measurements into budget skips
SUITE = ["bash", "bench/gpu_suite.sh", "--device", "cpu", "--quick", "--budget-scale", "20"]
FILES = [f"gpu-{stage}.{ext}" for stage in ("correctness", "kernels", "models") for ext in ("json", "txt")]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-suite")
    run_suite(out)
    return out, {name: json.loads((out / f"gpu-{name}.json").read_text())
                 for name in ("correctness", "kernels", "models")}


def run_suite(out, *extra, env_out=None):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    if env_out is not None:
        env["OUT"] = str(env_out)
    args = SUITE[:2] + ([str(out)] if out is not None else []) + SUITE[2:] + list(extra)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


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


def test_out_variable_is_the_default_folder_and_a_spent_budget_skips(tmp_path):
    """No OUTDIR argument: results go to $OUT. A zero budget records every kernel as skipped
    (budget) instead of running it, and the stage still finishes."""
    run_suite(None, "--stages", "kernels", "--budget-scale", "0", env_out=tmp_path)
    kernels = json.loads((tmp_path / "gpu-kernels.json").read_text())
    assert kernels["status"] == "done" and kernels["records"]
    assert all(r["status"] == "skipped" for r in kernels["records"])
    assert {r["reason"] for r in kernels["records"]} <= {"budget", "CUDA graphs need CUDA"}
    assert (tmp_path / "gpu-suite.log").exists()
