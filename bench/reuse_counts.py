"""What plan reuse asks of a GPU in bench.gpu_reuse's sampling loop, counted on this CPU.

The H200 loop (bench/results/gpu-reuse-loop.txt) got slower with ``plan_reuse_steps`` although a
reused block call is cheaper alone. This looks for a cause in the code:

1. The loop as bench.gpu_reuse runs it (random-weight diffusers UNet, fp16, batch 2, 6 calls at
   timesteps 900 to 100, MaMe through ``apply_mame``), per setting, under fake CUDA tensors
   (:mod:`bench.op_count`: shapes only, no GPU): each UNet call's kernels (non-view aten ops),
   bytes (read + written) and host syncs (aten ``_local_scalar_dense``, ``item``, ``is_nonzero``,
   ``equal``; a fake tensor has no value, so such an op would also stop the count). The UNet
   pre-hook's one read of the timestep per call is a host sync on a GPU in every MaMe setting;
   here it is given the timestep as a number and counted apart.
2. One block's layers (SDXL d2: 4096 tokens, 640 channels, 2 layers; SD1.5 d1: 16384 tokens, 320
   channels, 1 layer) through ``BlockStep`` over the same 6 calls: plan + merge + restore of a new
   plan and of a reused one (released between uses, so rebuilt), and the bytes the plan cache
   keeps alive between calls.
3. Secondary: a one-thread CPU timing (fp32, real tensors, the GPU route) of the same block's 6
   calls through ``BlockStep``, settings interleaved.

Usage: python -m bench.reuse_counts [--out bench/results/reuse-counts.json]
[--text bench/results/reuse-counts.txt] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path
from unittest import mock

import torch

from bench.op_audit import OpRecorder
from bench.op_count import Count, count, fake_cuda
from bench.timing import time_interleaved

STEPS = 6
RATIO = 0.5
TIMESTEPS = [900 - 160 * i for i in range(STEPS)]  # bench.gpu_reuse's linspace(900, 100, 6)
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal"}
SETTINGS = {"new plan each step": {}, "plan over 2 steps": {"plan_reuse_steps": 2},
            "plan over 3 steps": {"plan_reuse_steps": 3},
            "over 2 steps + shared layers": {"plan_reuse_steps": 2, "share_layers": True}}
# (case, model, px, forced, merged level's layers as (stage, index, layer), tokens, channels, grid)
_SDXL_D2 = tuple((s, i, layer) for s, ids in (("input", (4, 5)), ("output", (3, 4, 5))) for i in ids for layer in (0, 1))
_SD15_D1 = (("input", 1, 0), ("input", 2, 0), ("output", 9, 0), ("output", 10, 0), ("output", 11, 0))
CASES = (("sdxl-1024 forced", "sdxl", 1024, True, _SDXL_D2, 4096, 640, (64, 64)),
         ("sd15-1024 auto", "sd15", 1024, False, _SD15_D1, 16384, 320, (128, 128)))
QUICK_CASES = (("tiny-128 forced", "tiny", 128, True, (("input", 1, 0), ("output", 9, 0)), 256, 32, (16, 16)),)


def _counted(fn) -> tuple[Count, list[str]]:
    with OpRecorder() as recorder:
        counted = count(fn)
    return counted, [op for op in recorder.ops if op in SYNC_OPS]


def _fake_unet(model: str):
    from diffusers import UNet2DConditionModel

    from bench.random_pipeline import TINY_UNET
    from bench.unet_configs import MODELS

    config = TINY_UNET if model == "tiny" else MODELS[model][0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # .to() cannot swap fake parameters
    try:
        with torch.device("cuda"):
            unet = UNet2DConditionModel(**config).eval()
    finally:
        torch.set_default_dtype(default)
    return unet, config


def unet_loop_counts(model: str, px: int, forced: bool) -> dict:
    """Per setting, per UNet call of the loop: kernels, bytes, host syncs (aten and pre-hook)."""
    from mame_diffusers import adapter, apply_mame, remove_mame

    out = {}
    with fake_cuda():
        unet, config = _fake_unet(model)
        half = {"device": "cuda", "dtype": torch.float16}
        sample = torch.randn(2, 4, px // 8, px // 8, **half)
        context = torch.randn(2, 77, config["cross_attention_dim"], **half)
        extra = {}
        if config.get("addition_embed_type") == "text_time":
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 1280, **half),
                                          "time_ids": torch.randn(2, 6, **half)}
        for name, kw in {"baseline": None, **SETTINGS}.items():
            if kw is not None:
                apply_mame(unet, ratio=RATIO, force=forced or None, **kw)
            reads, calls, now = [], [], {}

            def read(_t, reads=reads, now=now):  # the pre-hook's float(timestep): a device-to-host copy on a GPU
                reads.append(now["t"])
                return float(now["t"])

            with torch.inference_mode(), mock.patch.object(adapter, "float", read, create=True):
                for t in TIMESTEPS:
                    now["t"] = t
                    timestep = torch.full((), t, device="cuda", dtype=torch.int64)
                    before = len(reads)
                    counted, syncs = _counted(lambda ts=timestep: unet(sample, ts, context, **extra))
                    calls.append({"kernels": counted.kernels, "bytes": counted.bytes, "aten syncs": syncs,
                                  "pre-hook syncs": len(reads) - before})
            if kw is not None:
                state = adapter.mame_state(unet)
                calls[-1]["plans reused"] = state.step.plans.reused
                calls[-1]["kept bytes"] = kept_bytes(state.step.plans)
                remove_mame(unet)
            out[name] = calls
    _clear()
    return out


def _clear():
    from mame_core.dense_merge import clear_static

    clear_static()  # the device tables made under fake mode hold fake tensors


def kept_bytes(cache) -> int:
    """Bytes of the tensors the plan cache holds between calls (every kept plan's)."""
    seen, total = set(), 0

    def walk(obj, depth=0):
        nonlocal total
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
        elif depth < 4 and isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
        elif depth < 4 and isinstance(obj, dict):
            for item in obj.values():
                walk(item, depth + 1)
        elif depth < 4 and hasattr(obj, "__dict__"):
            walk(vars(obj), depth + 1)

    walk([kept.plan for kept in cache._kept.values()])
    return total


def _block_step(kw: dict):
    from mame_core import BlockStep, MergeSettings, Reuse, Schedule

    reuse = Reuse(steps=kw.get("plan_reuse_steps", 1), layers=kw.get("share_layers", False))
    return BlockStep(MergeSettings(ratio=RATIO), Schedule(ratio=RATIO), seed=0, force=True, reuse=reuse)


def _layer_loop(step, layers, tokens, channels, grid, device, dtype, per_call=None):
    """The 6 calls through ``step`` over ``layers`` (start_call, then per layer plan, merge, key
    mask, restore); ``per_call(work)`` runs each call's work."""
    from mame_core import BlockAddress

    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, tokens, channels, generator=gen).to(device, dtype) for _ in range(2)]
    addresses = [BlockAddress(stage, index, layer, level=1) for stage, index, layer in layers]
    for call, t in enumerate(TIMESTEPS):
        def work(call=call, t=t):
            step.start_call(1.0 - t / 1000, device)
            for n, address in enumerate(addresses):
                x = inputs[(call + n) % 2]
                plan = step.plan(x, address, grid)
                plan.key_log_size[:, None, :].to(x.dtype)
                plan.restore(plan.merge(x))
        per_call(work) if per_call else work()


def block_counts(layers, tokens, channels, grid) -> dict:
    """Per setting: kernels, bytes and host syncs of one block's calls (all its layers): calls
    that plan anew, calls that reuse the last step's plans for every layer, and the mixed ones
    (shared layers: a new plan for the first layer, the later ones share it)."""
    out = {}
    with fake_cuda():
        for name, kw in SETTINGS.items():
            step = _block_step(kw)
            rows = {"new": [], "mixed": [], "reused": []}

            def per_call(work, step=step, rows=rows):
                before = step.plans.reused
                counted, syncs = _counted(work)
                reused = step.plans.reused - before
                kind = "new" if reused == 0 else "reused" if reused == len(layers) else "mixed"
                rows[kind].append((counted.kernels, counted.bytes, len(syncs)))

            _layer_loop(step, layers, tokens, channels, grid, "cuda", torch.float16, per_call)
            out[name] = {kind: _summary(r) for kind, r in rows.items() if r}
            out[name]["kept bytes"] = kept_bytes(step.plans)
    _clear()
    return out


def _summary(rows) -> dict:
    kernels = sorted({k for k, _, _ in rows})
    return {"calls": len(rows), "kernels": kernels, "bytes per call": sum(b for _, b, _ in rows) / len(rows),
            "host syncs": sum(s for _, _, s in rows)}


def cpu_timing(layers, tokens, channels, grid, rounds: int) -> dict:
    """One thread, fp32, the GPU route on real tensors: MaMe's part of the loop alone."""
    saved = os.environ.get("MAME_ENGINE_ROUTE")
    os.environ["MAME_ENGINE_ROUTE"] = "gpu"
    try:
        cases = {name: (lambda kw=kw: _layer_loop(_block_step(kw), layers, tokens, channels, grid, "cpu",
                                                  torch.float32)) for name, kw in SETTINGS.items()}
        with torch.inference_mode():
            times = time_interleaved(cases, rounds=rounds, warmup=1)
    finally:
        if saved is None:
            os.environ.pop("MAME_ENGINE_ROUTE")
        else:
            os.environ["MAME_ENGINE_ROUTE"] = saved
    return {name: {"median ms": t["median"] * 1000, "min ms": t["min"] * 1000} for name, t in times.items()}


def report(result: dict) -> str:
    lines = [f"# plan reuse in bench.gpu_reuse's {STEPS}-call loop, counted under fake CUDA tensors (no GPU): "
             f"{result['date']}, torch {result['torch']}, fp16, batch 2, ratio {RATIO}",
             "# kernels = non-view aten ops (one launch each in eager mode); bytes = read + written; "
             "syncs = aten host syncs + the UNet pre-hook's timestep read"]
    for case, data in result["cases"].items():
        lines.append(f"## {case}: whole UNet, per call (6 calls)")
        for name, calls in data["unet"].items():
            kernels = [c["kernels"] for c in calls]
            gb = [c["bytes"] / 1e9 for c in calls]
            syncs = sum(len(c["aten syncs"]) for c in calls)
            hook = sum(c["pre-hook syncs"] for c in calls)
            tail = calls[-1]
            extra = (f"; {tail['plans reused']} plans reused, {tail['kept bytes'] / 1e6:.2f} MB kept between calls"
                     if "plans reused" in tail else "")
            lines.append(f"{case} unet {name}: kernels {kernels} = {sum(kernels)} a loop; GB "
                         f"{[round(g, 2) for g in gb]} = {sum(gb):.1f} a loop; aten syncs {syncs}, "
                         f"pre-hook timestep reads {hook}{extra}")
        lines.append(f"## {case}: one block call through BlockStep ({len(data['block layers'])} layers: "
                     "start_call, then plan + merge + key mask + restore each)")
        for name, kinds in data["block"].items():
            parts = [f"{kind} {v['calls']} calls, {'/'.join(map(str, v['kernels']))} kernels, "
                     f"{v['bytes per call'] / 1e6:.1f} MB, {v['host syncs']} syncs"
                     for kind, v in kinds.items() if kind != "kept bytes"]
            lines.append(f"{case} block {name}: " + "; ".join(parts) + f"; kept {kinds['kept bytes'] / 1e6:.2f} MB")
        if "cpu" in data:
            lines.append(f"## {case}: the same block's 6 calls on real tensors on this CPU ({result['cpu']}, "
                         "shared with other jobs), one thread, fp32, GPU route; secondary evidence")
            for name, t in data["cpu"].items():
                lines.append(f"{case} cpu {name}: {t['median ms']:.0f} ms a loop (min {t['min ms']:.0f})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/reuse-counts.json")
    p.add_argument("--text", default="bench/results/reuse-counts.txt")
    p.add_argument("--quick", action="store_true", help="a tiny UNet only (the tests)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cases": {}}
    for case, model, px, forced, layers, tokens, channels, grid in (QUICK_CASES if args.quick else CASES):
        block = [address for address in layers if address[:2] == layers[0][:2]]  # the first block's layers
        data = {"unet": unet_loop_counts(model, px, forced), "block layers": block,
                "block": block_counts(block, tokens, channels, grid)}
        data["cpu"] = cpu_timing(block, tokens, channels, grid, 1 if args.quick else args.rounds)
        result["cases"][case] = data
        print(report({**result, "cases": {case: data}}), end="", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        Path(args.text).write_text(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
