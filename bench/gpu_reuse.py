"""A short sampling loop on a GPU with and without plan reuse (mame_core.plan_reuse).

Random-weight diffusers UNets, fp16, batch 2 (as with CFG), ``STEPS`` model calls at falling
timesteps, MaMe applied through ``apply_mame`` as users do; baseline, MaMe with a new plan
every step, with a plan over 2 and 3 steps, with shared layers (SDXL), and tomesd, interleaved
round by round (``bench.timing.time_interleaved``). SD1.5 at 1024 px merges its d1 blocks
(16384 tokens) under ``auto``; SDXL at 1024 px is merged ``forced`` (its d2 blocks have 4096
tokens, under the CUDA threshold), to show what reuse does where a plan costs most.

Usage (the GPU machine, see docs/gpu.md): python -m bench.gpu_reuse OUTDIR [--device cuda]
[--quick]. The CPU dry run (``--device cpu --quick``) runs a tiny UNet for the tests.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from bench.gpu_suite.models import build_unet, unet_inputs
from bench.timing import time_interleaved

RATIO = 0.5
STEPS = 6
CASES = (("sd15", 1024, False), ("sdxl", 1024, True))  # (model, px, forced)
QUICK_CASES = (("tiny", 128, True),)


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


def run_case(model, size, forced, dtype, device, rounds) -> dict:
    unet, config = build_unet(model, dtype, device)
    (sample, _, context), extra = unet_inputs(config, size, dtype, device)
    timesteps = [torch.tensor(int(t), device=device) for t in torch.linspace(900, 100, STEPS)]
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
    times = time_interleaved(cases, rounds=rounds, warmup=1, device=device)
    base = times["baseline"]["median"]
    return {name: {"ms per loop": t["median"] * 1000, "min ms": t["min"] * 1000, "speedup": base / t["median"]}
            for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "dtype": str(dtype), "steps": STEPS, "ratio": RATIO, "cases": {}}
    lines = [f"# plan reuse in a {STEPS}-call sampling loop: {result['device']}, torch {result['torch']}, "
             f"{result['date']}, {dtype}, batch 2, ratio {RATIO}"]
    for model, size, forced in (QUICK_CASES if args.quick else CASES):
        case = f"{model}-{size}" + (" forced" if forced else " auto")
        try:
            rows = run_case(model, size, forced, dtype, args.device, 1 if args.quick else args.rounds)
        except Exception as exc:  # noqa: BLE001
            rows = {"error": f"{type(exc).__name__}: {exc}"}
        result["cases"][case] = rows
        for name, row in rows.items():
            line = f"{case} {name}: " + (row if isinstance(row, str) else
                                           f"{row['ms per loop']:.1f} ms a loop, {row['speedup']:.2f}x")
            print(line, flush=True)
            lines.append(line)
        out = Path(args.outdir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu-reuse-loop.json").write_text(json.dumps(result, indent=1))
        (out / "gpu-reuse-loop.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
