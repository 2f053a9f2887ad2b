"""python -m bench.gpu_suite OUTDIR [--device cpu|cuda] [--quick] [--stages correctness,kernels,models]

Runs the stages in order, each within its own budget and all within the suite's deadline;
a stage that fails is recorded as failed and the next one runs."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from bench.gpu_suite.report import Budget, Stage, environment, log

# seconds per stage, and for the whole suite: 8 minutes on the GPU, less what the wheels' install,
# the imports and CUDA's start take
BUDGETS = {"correctness": 45, "kernels": 150, "models": 235}
DEADLINE_S = 440
QUICK_BUDGETS = {"correctness": 40, "kernels": 40, "models": 60}
QUICK_DEADLINE_S = 150
STAGES = tuple(BUDGETS)


def main(argv=None) -> int:
    began = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", nargs="?", default=os.environ.get("OUT") or "bench/results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and models (the CPU dry run)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every budget and the deadline (the tests: large on a busy CPU, 0 to skip all)")
    args = parser.parse_args(argv)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 4))
    budgets, deadline = (QUICK_BUDGETS, QUICK_DEADLINE_S) if args.quick else (BUDGETS, DEADLINE_S)
    budgets = {name: seconds * args.budget_scale for name, seconds in budgets.items()}
    deadline = began + deadline * args.budget_scale
    env = environment(args.device)
    log(f"gpu suite: device {args.device} ({env.get('gpu', 'cpu')}), torch {env['torch']}, "
        f"diffusers {env['diffusers']}, tomesd {env['tomesd']}, out {outdir}, quick={args.quick}")
    cuda = args.device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32  # half on a CPU is emulated: the dry run checks code paths
    status = 0
    for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
        budget = Budget(budgets[name], deadline)
        stage = Stage(name, outdir, env, budget, {"budget_s": budgets[name], "quick": args.quick})
        log(f"== stage {name}: budget {budgets[name]:.0f} s, {budget.left():.0f} s left of it ==")
        try:
            run_stage(name, stage, args.device, dtype, args.quick)
            stage.finish("done")
        except Exception as exc:  # noqa: BLE001 - the next stage still runs
            stage.fail({"check": "stage"}, exc)
            stage.finish("failed")
            status = 1
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    log(f"gpu suite finished in {time.time() - began:.0f} s; results in {outdir}")
    return status


def run_stage(name, stage, device, dtype, quick):
    if name == "correctness":
        from bench.gpu_suite import correctness

        correctness.run(stage, device)
    elif name == "kernels":
        from bench.gpu_shapes import QUICK_SHAPES, SHAPES
        from bench.gpu_suite import kernels

        kernels.run(stage, device, QUICK_SHAPES if quick else SHAPES, dtype, quick)
    elif name == "models":
        from bench.gpu_suite import models

        models.run(stage, device, dtype, quick)
    else:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


if __name__ == "__main__":
    sys.exit(main())
