"""Speed benchmark: seconds per UNet forward (batch 2, as with CFG) on the real SD1.5, SD2.1
and SDXL architectures with random weights, for MaMe and the systems it is measured against,
side by side in one run (settings interleaved round by round; min and median reported).

For each setting it also reports the Amdahl bound: the speed-up a zero-overhead merge would
give at that ratio, from the measured cost of the affected self-attention layers at full and
at reduced length, and the share of that bound reached.

Usage: python -m bench.speed --model sd15 [--dtype bfloat16] [--device cpu|cuda] [--rounds 3]
The dtype defaults to what the machine runs natively (bf16 only on a CPU with avx512_bf16 or
amx_bf16, else float32; bf16 or fp16 on CUDA). Runs unchanged on CUDA.
"""
from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import torch

from bench.diffusers_baselines import apply_todo, apply_tome_queries, remove
from bench.timing import pick_dtype, time_interleaved
from bench.unet_configs import MODELS, build_unet, unet_inputs
from mame_diffusers import apply_mame, remove_mame
from mame_diffusers.adapter import _attention_blocks


class PeakMemory:
    """Peak memory while a block runs: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.peak = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()
            self._stop = threading.Event()

            def sample():
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    self._stop.wait(0.01)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()


def _patch_then(apply, undo):
    """A setting: apply(unet) patches, and returns what undoes it."""
    def run(unet):
        apply(unet)
        return undo
    return run


def _hooks(register):
    """A setting from a function that registers hooks and returns their handles."""
    def run(unet):
        handles = register(unet)
        return lambda _unet: remove(handles)
    return run


def settings_for(model: str, ratios: list[float], finest: int) -> dict:
    """name -> apply(unet) returning undo(unet); None for the baseline."""
    import tomesd

    out = {"baseline": None}
    for mode in ("qkv", "kv"):
        for r in ratios:
            out[f"mame-{mode} r{r}"] = _patch_then(lambda u, r=r, m=mode: apply_mame(u, ratio=r, mode=m), remove_mame)
    for r in ratios:
        out[f"tomesd r{r}"] = _patch_then(lambda u, r=r: tomesd.apply_patch(u, ratio=r), tomesd.remove_patch)
    if model == "sdxl":
        out["tomesd r0.5 max_downsample=2"] = _patch_then(
            lambda u: tomesd.apply_patch(u, ratio=0.5, max_downsample=2), tomesd.remove_patch)
    out["comfy-tome-q r0.5"] = _hooks(lambda u: apply_tome_queries(u, 0.5))
    for r in (0.5, 0.75):
        out[f"todo r{r}"] = _hooks(lambda u, r=r: apply_todo(u, r, levels=(finest,)))
    return out


class AttentionTimer:
    """Time spent inside the affected attn1 layers, measured in place during each forward.

    The timing hooks run after any merge pre-hook and before any restore hook, so they
    see attention at the length each method gives it, without the method's own overhead."""

    def __init__(self, modules, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.modules = list(modules)
        self.total = 0.0
        self._start = {}
        self.handles = []

    def attach(self) -> None:
        """Call after the method is applied: the pre-hook goes last, the post-hook first."""
        for m in self.modules:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post, prepend=True))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre(self, module, args):
        self._start[id(module)] = self._now()

    def _post(self, module, args, output):
        self.total += self._now() - self._start.pop(id(module))

    def take(self) -> float:
        value, self.total = self.total, 0.0
        return value


def image_size(text: str) -> int | tuple[int, int]:
    """``1024`` or ``HEIGHTxWIDTH``, each a multiple of 8."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 and int(p) % 8 == 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size must be a side or HEIGHTxWIDTH in px, multiples of 8; got {text!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def size_label(size: int | tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, tuple) else str(size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="sd15")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--only", help="comma-separated setting names to run (default: all)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: native to the machine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=image_size,
                   help="image size in px: a side (1024) or HEIGHTxWIDTH (1216x832); default: the model's native size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON results path (default bench/results/speed-<model>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    args.dtype = pick_dtype(args.dtype, args.device)
    dtype = getattr(torch, args.dtype)
    ratios = [float(r) for r in args.ratios.split(",")]
    unet = build_unet(args.model, dtype, args.device)
    inputs = unet_inputs(args.model, args.batch, dtype, args.device, args.size)
    finest = min(b.level for b in _attention_blocks(unet))
    specs = settings_for(args.model, ratios, finest)
    if args.only:
        keep = {"baseline", *[s.strip() for s in args.only.split(",")]}
        specs = {k: v for k, v in specs.items() if k in keep}

    positional = (inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])
    extra = {k: v for k, v in inputs.items() if k not in ("sample", "timestep", "encoder_hidden_states")}

    def forward():
        with torch.inference_mode():  # sample passed positionally: tomesd's hook reads args[0]
            return unet(*positional, **extra).sample

    affected = [b.module for b in _attention_blocks(unet) if b.level == finest]
    timer = AttentionTimer(affected, args.device)

    def case(apply):
        def run():
            undo = apply(unet) if apply else None
            timer.attach()
            try:
                forward()
            finally:
                timer.detach()
                if undo:
                    undo(unet)
        return run

    peaks, attention = {}, {}
    cases = {}
    for name, apply in specs.items():
        def measured(apply=apply, name=name):
            with PeakMemory(args.device) as mem:
                case(apply)()
            peaks[name] = max(peaks.get(name, 0), mem.peak)
            attention.setdefault(name, []).append(timer.take())
        cases[name] = measured
    started = time.time()
    times = time_interleaved(cases, rounds=args.rounds, warmup=1, device=args.device)
    count = len(affected)
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    base = times["baseline"]["median"]
    base_attn = median(attention["baseline"])
    rows = []
    for name, t in times.items():
        row = {"setting": name, "median_s": t["median"], "min_s": t["min"], "speedup": base / t["median"],
               "peak_mem_gb": peaks.get(name, 0) / 2**30, "attn_s": median(attention[name])}
        if name != "baseline":
            row["amdahl_bound"] = base / (base - base_attn + row["attn_s"])
            gain = row["amdahl_bound"] - 1
            row["share_of_bound"] = (row["speedup"] - 1) / gain if gain > 0.02 else None  # no-op methods: no share
        rows.append(row)
    attn_share = base_attn / base
    result = {
        "model": args.model, "label": MODELS[args.model][2], "size": size_label(args.size or MODELS[args.model][1]),
        "dtype": args.dtype, "device": args.device, "batch": args.batch, "rounds": args.rounds,
        "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "finest_attention_level": finest, "affected_attn1_layers": count,
        "affected_attn1_share": attn_share, "rows": rows, "seconds": round(time.time() - started, 1),
    }
    out = Path(args.out or f"bench/results/speed-{args.model}-{args.device}-{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['label']} at {result['size']} px, {args.dtype} on {args.device}, batch {args.batch}, {args.rounds} rounds; "
          f"attn1 at the finest attention level (d{finest}, {count} layers) is {attn_share:.0%} of a forward")
    print("| setting | median s | min s | speed-up | Amdahl bound | share of bound | peak mem GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        bound = f"{r['amdahl_bound']:.2f}x" if "amdahl_bound" in r else "-"
        share = f"{r['share_of_bound']:.0%}" if r.get("share_of_bound") is not None else "-"
        print(f"| {r['setting']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['speedup']:.2f}x | {bound} | {share} "
              f"| {r['peak_mem_gb']:.1f} |")
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
