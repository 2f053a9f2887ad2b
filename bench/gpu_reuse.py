"""A short sampling loop on a GPU with and without plan reuse (mame_core.plan_reuse).

Random-weight diffusers UNets, fp16, batch 2 (as with CFG), ``STEPS`` model calls at falling
timesteps, MaMe applied through ``apply_mame`` as users do; baseline, MaMe with a new plan
every step, with a plan over 2 and 3 steps, with shared layers (SDXL), and tomesd. SD1.5 at
1024 px merges its d1 blocks (16384 tokens) under ``auto``; SDXL at 1024 px is merged ``forced``
(its d2 blocks have 4096 tokens, under the CUDA threshold), to show what reuse does where a plan
costs most.

The first run (bench/results/gpu-reuse-loop.txt, 5 rounds in a fixed order) had medians 1.05-1.66x
its minimums, so each setting's result here carries what tells noise from cost: every round's
time (the order of the settings rotates from round to round, so none always follows the same
one), median and min; the host's share (seconds until the last launch returned, before the
final synchronize: near the total, the loop waits on the CPU; MaMe's pre-hook reads the
timestep each call, a sync, so in MaMe's settings it includes those waits); Python garbage collections
during timed loops; and, from one more loop each after the timing, the CUDA memory peak, the
kernels launched (torch.profiler) with their summed device time, and the host syncs
(``torch.cuda.set_sync_debug_mode("warn")`` warnings).

Usage (the GPU machine, see docs/gpu.md): python -m bench.gpu_reuse OUTDIR [--device cuda]
[--quick] [--rounds N]. The CPU dry run (``--device cpu --quick``) runs a tiny UNet for the
tests (tests/test_plan_reuse.py); CUDA-only records are null there.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from bench.gpu_suite.models import build_unet, unet_inputs

RATIO = 0.5
STEPS = 6
CASES = (("sd15", 1024, False), ("sdxl", 1024, True))  # (model, px, forced)
QUICK_CASES = (("tiny", 64, True),)
QUICK_STEPS = 3  # the dry run: a new plan, then a reused one at 2 and 3 steps


def methods(forced: bool, shares: bool) -> dict:
    """name -> apply(unet) returning undo(unet); None for the baseline."""
    from mame_diffusers import apply_mame, remove_mame

    def mame(**kw):
        return lambda u: (apply_mame(u, ratio=RATIO, force=forced or None, **kw), remove_mame)[1]

    out = {"baseline": None, "mame new plan each step": mame(), "mame plan over 2 steps": mame(plan_reuse_steps=2),
           "mame plan over 3 steps": mame(plan_reuse_steps=3)}
    if shares:
        out["mame over 2 steps + shared layers"] = mame(plan_reuse_steps=2, share_layers=True)
    try:
        import tomesd

        out["tomesd"] = lambda u: (tomesd.apply_patch(u, ratio=RATIO), tomesd.remove_patch)[1]
    except Exception:  # noqa: BLE001
        pass
    return out


def run_case(model, size, forced, dtype, device, rounds, steps=STEPS) -> dict:
    unet, config = build_unet(model, dtype, device)
    (sample, _, context), extra = unet_inputs(config, size, dtype, device)
    timesteps = [torch.tensor(int(t), device=device) for t in torch.linspace(900, 100, steps)]
    shares = max(config.get("transformer_layers_per_block", 1) if isinstance(
        config.get("transformer_layers_per_block", 1), int) else max(config["transformer_layers_per_block"]), 1) > 1

    def loop(apply):
        undo = apply(unet) if apply else None
        try:
            with torch.inference_mode():
                for t in timesteps:
                    unet(sample, t, context, **extra)
        finally:
            if undo:
                undo(unet)

    cases = {name: (lambda a=apply: loop(a)) for name, apply in methods(forced, shares).items()}
    rows = rotated_rounds(cases, rounds, device)
    for name, fn in cases.items():
        rows[name].update(one_loop_records(fn, device))
    base, base_min = rows["baseline"]["ms per loop"], rows["baseline"]["min ms"]
    for row in rows.values():
        row["speedup"], row["speedup by min"] = base / row["ms per loop"], base_min / row["min ms"]
    return rows


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rotated_rounds(cases: dict, rounds: int, device) -> dict:
    """One warm-up loop per setting, then ``rounds`` rounds of one loop per setting, the order
    rotated by one each round; garbage collected before each timed loop, and the collections
    Python makes inside it counted."""
    names = list(cases)
    for fn in cases.values():
        fn()
    collections = []

    def on_gc(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    samples = {name: {"ms": [], "host ms": [], "gc": []} for name in names}
    gc.callbacks.append(on_gc)
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                gc.collect()
                _sync(device)
                collections.clear()
                start = time.perf_counter()
                cases[name]()
                launched = time.perf_counter()
                _sync(device)
                end = time.perf_counter()
                samples[name]["ms"].append(round((end - start) * 1000, 2))
                samples[name]["host ms"].append(round((launched - start) * 1000, 2))
                samples[name]["gc"].extend(collections)
    finally:
        gc.callbacks.remove(on_gc)
    return {name: {"ms per loop": statistics.median(s["ms"]), "min ms": min(s["ms"]), "rounds ms": s["ms"],
                   "host ms (median)": statistics.median(s["host ms"]),
                   "gc collections (generations)": s["gc"]} for name, s in samples.items()}


def one_loop_records(fn, device) -> dict:
    """CUDA only (None elsewhere), each from one more loop: memory peak, the device's kernels
    (torch.profiler: count and summed device time), host syncs (sync debug mode warnings)."""
    if torch.device(device).type != "cuda":
        return {"peak MB": None, "device kernels": None, "device ms": None, "host syncs": None}
    out = {}
    torch.cuda.reset_peak_memory_stats()
    fn()
    out["peak MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        out["device kernels"] = len(events)
        out["device ms"] = round(sum(e.time_range.elapsed_us() for e in events) / 1000, 2)
    except Exception as exc:  # noqa: BLE001
        out["device kernels"] = out["device ms"] = f"{type(exc).__name__}: {exc}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    out["host syncs"] = sum("synchroniz" in str(w.message) for w in caught)
    return out


def line(case: str, name: str, row) -> str:
    if isinstance(row, str):
        return f"{case} {name}: {row}"
    text = (f"{case} {name}: {row['ms per loop']:.1f} ms a loop (median), {row['speedup']:.2f}x; "
            f"min {row['min ms']:.1f} ms, {row['speedup by min']:.2f}x; host {row['host ms (median)']:.1f} ms; "
            f"gc {len(row['gc collections (generations)'])}")
    if row.get("peak MB") is not None:
        text += (f"; peak {row['peak MB']:.0f} MB, {row['device kernels']} device kernels, "
                 f"{row['device ms']} device ms, {row['host syncs']} host syncs a loop")
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args(argv)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "dtype": str(dtype), "steps": QUICK_STEPS if args.quick else STEPS, "ratio": RATIO, "cases": {}}
    lines = [f"# plan reuse in a {QUICK_STEPS if args.quick else STEPS}-call sampling loop: {result['device']}, torch {result['torch']}, "
             f"{result['date']}, {dtype}, batch 2, ratio {RATIO}, {1 if args.quick else args.rounds} rounds "
             "(order rotated each round); speed-ups against the baseline's median and min"]
    for model, size, forced in (QUICK_CASES if args.quick else CASES):
        case = f"{model}-{size}" + (" forced" if forced else " auto")
        try:
            rows = run_case(model, size, forced, dtype, args.device, *((1, QUICK_STEPS) if args.quick else (args.rounds,)))
        except Exception as exc:  # noqa: BLE001
            rows = {"error": f"{type(exc).__name__}: {exc}"}
        result["cases"][case] = rows
        for name, row in rows.items():
            lines.append(line(case, name, row))
            print(lines[-1], flush=True)
        out = Path(args.outdir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu-reuse-loop.json").write_text(json.dumps(result, indent=1))
        (out / "gpu-reuse-loop.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
