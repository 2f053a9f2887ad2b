"""Compiled speed: seconds per UNet forward (batch 2, as with CFG) for the baseline and MaMe,
eager and under torch.compile, side by side in one run (interleaved rounds; min and median).

Each call uses the next timestep of a sampling schedule, so the compiled MaMe model is timed
across changing steps; the number of graphs each compiled model needed is reported (1 means
no recompilation). The real SD1.5 architecture with random weights (compute cost does not
depend on the weights).

Usage: python -m bench.compile_speed [--model sd15] [--backend inductor] [--ratio 0.5] [--rounds 3]
       [--dtype float32|bfloat16] [--out bench/results/compile-speed-sd15-cpu-<dtype>.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from bench.timing import pick_dtype, time_interleaved
from bench.unet_configs import MODELS, build_unet, unet_inputs
from mame_diffusers import apply_mame


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="sd15")
    p.add_argument("--backend", default="inductor")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: native to the machine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, help="image size in px (default: the model's native size)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--config", help=argparse.SUPPRESS)  # a UNet config as JSON, for the command's test
    args = p.parse_args(argv)
    from torch._dynamo.testing import CompileCounterWithBackend

    torch.set_num_threads(args.threads)
    args.dtype = pick_dtype(args.dtype, args.device)
    dtype = getattr(torch, args.dtype)
    if args.config:
        from diffusers import UNet2DConditionModel

        config = json.loads(args.config)
        plain = UNet2DConditionModel(**config).to(device=args.device, dtype=dtype).eval()
        inputs = {"sample": torch.randn(2, 4, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0)),
                  "encoder_hidden_states": torch.randn(2, 7, config["cross_attention_dim"],
                                                       generator=torch.Generator().manual_seed(1))}
        inputs = {k: v.to(device=args.device, dtype=dtype) for k, v in inputs.items()}
    else:
        plain = build_unet(args.model, dtype, args.device)
        inputs = unet_inputs(args.model, 2, dtype, args.device, args.size)
    merged = apply_mame(copy.deepcopy(plain), ratio=args.ratio)
    counters = {"baseline": CompileCounterWithBackend(args.backend), "mame": CompileCounterWithBackend(args.backend)}
    compiled = {name: torch.compile(model, backend=counters[name]) for name, model in
                (("baseline", plain), ("mame", merged))}
    timesteps = iter([int(t) for t in torch.linspace(999, 1, 50).round()] * 100)
    sample, context = inputs["sample"], inputs["encoder_hidden_states"]
    extra = {k: v for k, v in inputs.items() if k not in ("sample", "timestep", "encoder_hidden_states")}

    def call(model):
        def run():
            with torch.inference_mode():
                return model(sample, torch.tensor(next(timesteps)), context, **extra).sample
        return run

    cases = {
        "eager baseline": call(plain),
        f"eager MaMe r{args.ratio}": call(merged),
        f"compiled baseline ({args.backend})": call(compiled["baseline"]),
        f"compiled MaMe r{args.ratio} ({args.backend})": call(compiled["mame"]),
    }
    started = time.time()
    compile_s = {}
    for name in ("baseline", "mame"):  # compile outside the timed rounds
        t0 = time.perf_counter()
        call(compiled[name])()
        compile_s[name] = time.perf_counter() - t0
    times = time_interleaved(cases, rounds=args.rounds, warmup=1, device=args.device)
    base = times["eager baseline"]["median"]
    rows = [{"setting": name, "median_s": t["median"], "min_s": t["min"], "speedup_vs_eager": base / t["median"]}
            for name, t in times.items()]
    graphs = {name: c.frame_count for name, c in counters.items()}
    label = "custom" if args.config else MODELS[args.model][2]
    size = args.size or MODELS[args.model][1]
    result = {
        "model": args.model, "label": label, "size": size, "dtype": args.dtype, "device": args.device,
        "backend": args.backend, "ratio": args.ratio, "batch": 2, "rounds": args.rounds, "threads": args.threads,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "compile_s": compile_s, "graphs": graphs, "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out or f"bench/results/compile-speed-{args.model}-{args.device}-{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{label} at {size} px, {args.dtype} on {args.device}, batch 2, {args.rounds} rounds, backend {args.backend}; "
          f"graphs compiled: baseline {graphs['baseline']}, MaMe {graphs['mame']} (1 = no recompilation across steps); "
          f"compile time {compile_s['baseline']:.0f} s / {compile_s['mame']:.0f} s")
    print("| setting | median s | min s | speed-up vs eager baseline |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setting']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['speedup_vs_eager']:.2f}x |")
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
