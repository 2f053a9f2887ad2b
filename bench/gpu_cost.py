"""A GPU cost model of one block call, counted on this CPU and priced from stated GPU rates.

For each shape of :mod:`bench.gpu_shapes` it counts, under fake CUDA tensors (no GPU needed,
:mod:`bench.op_count`), what each method launches in eager mode: kernels (non-view aten ops),
bytes (read + written) and FLOPs; and the kernels ``torch.compile`` (inductor) generates for
it (compiled on this CPU at the same grid with 16 channels: the kernel count depends on the
graph, not on the channel count; matrix products stay extern calls, counted from the eager
ops). Methods, each as its host runs it (a UNet merges the block input and restores the
output; a DiT merges q, k and v of its image tokens and restores the output, text spans
joined by one copy each):

  mame-cpu / mame-gpu         plan + merge + restore, MaMe's CPU and GPU routes
  mame-gpu merge+restore      what a further layer pays when the layers of a block share a plan
  tomesd                      tomesd's matcher (bipartite_soft_matching_random2d), merge + unmerge
  pool                        this project's 2x1 key/value pooling (ToDo-style)
  attention-full / -merged    one attention call at full and at merged length (the merged one
                              with the size channel: head width + 1, padded to a multiple of 8)

Then a roofline estimate per GPU (the rates below, each with its source): a kernel costs
``max(launch, bytes / bandwidth, FLOPs / throughput)`` in eager mode; compiled, the generated
kernel count pays the launches and the eager bytes and FLOPs bound the work from above (fusion
only removes passes). Attention is priced by its FLOPs at the stated attention throughput. The
net is the attention time saved minus the merge cost; the break-even grid is the smallest
square grid where the net turns positive. **Every time here is an estimate**, not a
measurement; the GPU suite (bench/gpu_suite.sh) measures the same shapes where a GPU is lent.

    python -m bench.gpu_cost [--out bench/results/gpu-cost.json] [--text bench/results/gpu-cost.txt]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from bench.gpu_shapes import QUICK_SHAPES, SHAPES, BlockShape
from bench.op_count import Count, OpRecord, count, fake_cuda
from mame_core import MergeSettings, merged_tokens_for, plan_merge
from mame_core.dense_merge import clear_static

# Stated rates. launch: CPU-side cost per eager kernel (PyTorch dispatch + cudaLaunchKernel);
# compiled kernels are launched from inductor's generated wrapper at a lower cost.
GPUS = {
    "h100": dict(name="H100 SXM", bandwidth=3.0e12, matmul=400e12, attention=350e12, launch=6e-6, launch_compiled=3e-6,
                 source="NVIDIA H100 datasheet: 3.35 TB/s HBM3 (90% taken as reachable), 989 TFLOP/s dense bf16 "
                        "(about 40% sustained on these mid-sized products and attention); launch about 6 us per "
                        "eager op (PyTorch dispatch overhead, as the issue states), about 3 us from inductor's wrapper"),
    "rtx4090": dict(name="RTX 4090", bandwidth=0.9e12, matmul=120e12, attention=100e12, launch=5e-6, launch_compiled=2.5e-6,
                    source="NVIDIA Ada datasheet: 1008 GB/s GDDR6X (90% reachable), 165 TFLOP/s dense bf16 with fp16 "
                           "accumulate / 82.6 with fp32 accumulate (120 and 100 taken as sustained); launch 5 us "
                           "(desktop CPUs dispatch a little faster)"),
    "h200": dict(name="H200 (the lent VM)", bandwidth=4.3e12, matmul=400e12, attention=350e12, launch=31e-6,
                 launch_compiled=15e-6,
                 source="the H200 this project was lent (a VM): 4.3 TB/s copy and 788 TFLOP/s bf16 on 8192^3 "
                        "(device notes); 31 us per eager op measured by the GPU suite (tomesd's 28 ops 0.90 ms, "
                        "MaMe's plan of 37 ops 1.22 ms at small shapes: bench/results/gpu-kernels.txt), half that "
                        "assumed from inductor's wrapper; the H100's sustained share assumed"),
}
MODES = ("eager", "compiled")
METHODS = ("mame-cpu", "mame-gpu", "mame-gpu merge+restore", "tomesd", "pool", "attention-full", "attention-merged")
RATIO = 0.5


def _tome_functions(x, h, w, r):
    from tomesd.merge import bipartite_soft_matching_random2d

    return bipartite_soft_matching_random2d(x, w, h, 2, 2, r, no_rand=True)


def _span(t: torch.Tensor, text: int, fn) -> torch.Tensor:
    return fn(t) if text == 0 else torch.cat([t[:, :text], fn(t[:, text:])], dim=1)


class Block:
    """The tensors one block call holds, and each method run on them."""

    def __init__(self, shape: BlockShape, channels: int | None = None, device="cuda", dtype=torch.bfloat16):
        self.shape = shape
        c = channels or shape.channels
        n = shape.tokens + shape.text
        make = lambda: torch.empty(shape.batch, n, c, device=device, dtype=dtype)  # noqa: E731
        self.x = make()
        self.q, self.k, self.v = make(), make(), make()
        self.settings = MergeSettings(ratio=RATIO)
        self.pattern = 7  # a host-side pattern, as BlockStep passes in eager mode

    @property
    def inputs(self):
        """What one host merges: the block input (UNet) or q, k, v (DiT)."""
        return [self.x] if self.shape.family == "unet" else [self.q, self.k, self.v]

    def plan(self, route: str):
        s, text = self.shape, self.shape.text
        source = self.inputs[-1][:, text:]
        return plan_merge(source, s.h, s.w, self.settings, self.pattern, s.frames, route=route)

    def merge_restore(self, plan):
        text = self.shape.text
        merged = [_span(t, text, plan.merge) for t in self.inputs]
        return _span(merged[0], text, plan.restore)

    def mame(self, route: str):
        return self.merge_restore(self.plan(route))

    def tomesd(self):
        s, text = self.shape, self.shape.text
        r = s.tokens - merged_tokens_for(s.h, s.w, self.settings, s.frames)
        merge, unmerge = _tome_functions(self.inputs[-1][:, text:], s.h * s.frames, s.w, r)
        merged = [_span(t, text, merge) for t in self.inputs]
        return _span(merged[0], text, unmerge)

    def pool(self):
        s, text = self.shape, self.shape.text
        out = []
        for t in self.inputs[1:] if s.family == "dit" else self.inputs:
            img = t[:, text:]
            b, _, c = img.shape
            grid = img.transpose(1, 2).reshape(b, c * s.frames, s.h, s.w)
            pooled = F.avg_pool2d(grid, (1, 2), ceil_mode=True).reshape(b, c, -1).transpose(1, 2)
            out.append(_span(t, text, lambda _, p=pooled: p))
        return out


def attention_count(shape: BlockShape, tokens: int, sized: bool, dtype=torch.bfloat16) -> Count:
    """One attention call on ``tokens`` image tokens (plus text), priced analytically: one kernel
    reading q, k, v and writing the output; the size channel adds its three concatenations."""
    b, heads, d = shape.batch, shape.heads, shape.channels // shape.heads
    n = tokens + shape.text
    width = (d + 1 + 7) // 8 * 8 if sized else d
    elem = torch.empty((), dtype=dtype).element_size()
    ops = [OpRecord("attention", 4 * b * heads * n * width * elem, 4 * b * heads * n * n * width)]
    if sized:
        ops += [OpRecord("cat", 2 * b * heads * n * (d + width) * elem, 0) for _ in range(3)]
    return Count(ops)


def eager_counts(shape: BlockShape) -> dict[str, Count]:
    """Per method, what one call launches once its per-grid tables exist (one warm-up call
    builds them, as the first call of a grid does in use)."""
    out = {}
    clear_static()
    try:
        with fake_cuda(), torch.no_grad():
            block = Block(shape)
            block.mame("gpu")  # builds the route's tables for this grid
            out["mame-cpu"] = count(block.mame, "cpu")
            out["mame-gpu"] = count(block.mame, "gpu")
            plan = block.plan("gpu")
            out["mame-gpu merge+restore"] = count(block.merge_restore, plan)
            out["tomesd"] = count(block.tomesd)
            out["pool"] = count(block.pool)
    finally:
        clear_static()  # the tables made here hold fake tensors
    merged = merged_tokens_for(shape.h, shape.w, MergeSettings(ratio=RATIO), shape.frames)
    out["attention-full"] = attention_count(shape, shape.tokens, sized=False)
    out["attention-merged"] = attention_count(shape, merged, sized=True)
    return out


def compiled_kernels(shape: BlockShape, eager: dict[str, Count]) -> dict[str, int]:
    """Kernels inductor generates (16 channels, this CPU) plus the extern matrix products."""
    from torch._inductor import metrics

    def generated(fn) -> int:
        torch._dynamo.reset()
        metrics.reset()
        with torch.no_grad():
            torch.compile(fn, backend="inductor", dynamic=False)()
        return metrics.generated_kernel_count

    block = Block(shape, channels=16, device="cpu", dtype=torch.float32)
    externs = {name: sum(o.name in ("mm", "bmm", "addmm", "baddbmm") for o in c.ops) for name, c in eager.items()}
    plan = block.plan("gpu")
    fns = {
        "mame-cpu": lambda: block.mame("cpu"),
        "mame-gpu": lambda: block.mame("gpu"),
        "mame-gpu merge+restore": lambda: block.merge_restore(plan),
        "tomesd": block.tomesd,
        "pool": block.pool,
    }
    out = {}
    for name, fn in fns.items():
        try:
            out[name] = generated(fn) + externs[name]
        except Exception as exc:  # a method inductor cannot compile is reported, not hidden
            out[name] = None
            print(f"  {shape.name} {name}: compile failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
    out["attention-full"] = out["attention-merged"] = None  # one fused kernel either way: priced as eager
    return out


def estimate_ms(c: Count, gpu: dict, mode: str, compiled: int | None, attention: bool) -> float:
    if attention:
        op = c.ops[0]
        main = max(op.flops / gpu["attention"], op.bytes / gpu["bandwidth"])
        rest = sum(max(gpu["launch"], o.bytes / gpu["bandwidth"]) for o in c.ops[1:])
        return 1e3 * (max(gpu["launch"], main) + rest)
    work = [max(o.bytes / gpu["bandwidth"], o.flops / gpu["matmul"]) for o in c.ops]
    if mode == "eager" or compiled is None:
        return 1e3 * sum(max(gpu["launch"], t) for t in work)
    return 1e3 * max(compiled * gpu["launch_compiled"], sum(work))


def records_for(shape: BlockShape, with_compile: bool) -> list[dict]:
    eager = eager_counts(shape)
    compiled = compiled_kernels(shape, eager) if with_compile else {}
    records = []
    for method, c in eager.items():
        is_attention = method.startswith("attention")
        est = {gpu: {mode: estimate_ms(c, rates, mode, compiled.get(method), is_attention) for mode in MODES}
               for gpu, rates in GPUS.items()}
        records.append({"shape": shape.name, "method": method, "kernels": c.kernels, "bytes": c.bytes,
                        "flops": c.flops, "compiled_kernels": compiled.get(method), "estimate_ms": est})
    return records


def net_table(records: list[dict], shape: BlockShape) -> dict:
    """Per GPU and mode: merge cost, attention saved and net (ms) for each merging method."""
    by = {r["method"]: r for r in records if r["shape"] == shape.name}
    out = {}
    for gpu in GPUS:
        for mode in MODES:
            saved = (by["attention-full"]["estimate_ms"][gpu][mode] - by["attention-merged"]["estimate_ms"][gpu][mode])
            saved *= shape.layers
            rows = {}
            for method in ("mame-cpu", "mame-gpu", "tomesd"):
                cost = by[method]["estimate_ms"][gpu][mode] * shape.layers
                if method == "mame-gpu" and shape.layers > 1:  # one plan, each layer merges and restores
                    extra = by["mame-gpu merge+restore"]["estimate_ms"][gpu][mode]
                    cost = by[method]["estimate_ms"][gpu][mode] + extra * (shape.layers - 1)
                rows[method] = {"cost": cost, "saved": saved, "net": saved - cost}
            out[f"{gpu}/{mode}"] = rows
    return out


def break_even(family: str, channels: int, heads: int, batch: int, text: int) -> dict:
    """Smallest square grid (side) where MaMe's GPU route is estimated to pay, per GPU and mode
    (compiled uses the kernel count of the 64x64 grid of the same family)."""
    probe = BlockShape("probe", family, 1, 64, 64, channels, heads, batch, text=text)
    compiled_ref = compiled_kernels(probe, eager_counts(probe))["mame-gpu"]
    out = {}
    sides = (16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256)
    nets = {}
    for side in sides:
        shape = BlockShape(f"{family}-{side}", family, 1, side, side, channels, heads, batch, text=text)
        eager = eager_counts(shape)
        for gpu, rates in GPUS.items():
            for mode in MODES:
                cost = estimate_ms(eager["mame-gpu"], rates, mode, compiled_ref, False)
                saved = (estimate_ms(eager["attention-full"], rates, mode, None, True)
                         - estimate_ms(eager["attention-merged"], rates, mode, None, True))
                nets.setdefault(f"{gpu}/{mode}", []).append((side, saved - cost))
    for key, rows in nets.items():
        paying = [side for side, net in rows if net > 0]
        out[key] = {"side": paying[0] if paying else None, "tokens": paying[0] ** 2 if paying else None}
    return out


def report(result: dict) -> str:
    lines = [f"python -m bench.gpu_cost  ({result['date']}, counted on {result['machine']}, torch {result['torch']}; "
             f"bf16, ratio {RATIO}; every time below is an ESTIMATE from the stated rates, none is measured)", ""]
    lines.append("## Rates")
    for key, g in GPUS.items():
        lines.append(f"- {key}: {g['name']}: {g['bandwidth'] / 1e12:.1f} TB/s, matmul {g['matmul'] / 1e12:.0f} TFLOP/s, "
                     f"attention {g['attention'] / 1e12:.0f} TFLOP/s, launch {g['launch'] * 1e6:.1f} us eager / "
                     f"{g['launch_compiled'] * 1e6:.1f} us compiled. Source: {g['source']}")
    lines += ["", "## Counts per block call (one layer)",
              "| shape | method | kernels | compiled kernels | bytes | GFLOP | bytes / tomesd's |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    recs = result["records"]
    seen = set()
    for r in recs:
        if (r["shape"], r["method"]) in seen:
            continue
        seen.add((r["shape"], r["method"]))
        tome = next(t for t in recs if t["shape"] == r["shape"] and t["method"] == "tomesd")
        lines.append(f"| {r['shape']} | {r['method']} | {r['kernels']} | {r['compiled_kernels'] or '-'} | "
                     f"{r['bytes'] / 1e9:.3f} GB | {r['flops'] / 1e9:.1f} | {r['bytes'] / tome['bytes']:.2f}x |")
    lines += ["", "## Estimated net per block call (all layers of the block; ms; positive = faster)",
              "| shape | layers | GPU / mode | attention saved | mame-gpu cost | mame-gpu net | mame-cpu net | tomesd net |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, table in result["net"].items():
        layers = next(s.layers for s in result["_shapes"] if s.name == name)
        for key, rows in table.items():
            g = rows["mame-gpu"]
            lines.append(f"| {name} | {layers} | {key} | {g['saved']:.3f} | {g['cost']:.3f} | {g['net']:+.3f} | "
                         f"{rows['mame-cpu']['net']:+.3f} | {rows['tomesd']['net']:+.3f} |")
    if result.get("break_even"):
        lines += ["", "## Break-even: smallest square grid where mame-gpu is estimated to pay (ratio 0.5)",
                  "| family | " + " | ".join(result["break_even"][next(iter(result["break_even"]))].keys()) + " |",
                  "| --- |" + " --- |" * len(result["break_even"][next(iter(result["break_even"]))])]
        for fam, row in result["break_even"].items():
            lines.append(f"| {fam} | " + " | ".join(f"{v['side']}x{v['side']} ({v['tokens']})" if v["side"] else "never"
                                                   for v in row.values()) + " |")
    lines.append(f"\n({result['seconds']:.0f} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/gpu-cost.json")
    p.add_argument("--text", default=None)
    p.add_argument("--quick", action="store_true", help="the tiny dry-run shapes, no compile, no break-even")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    started = time.time()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    records = []
    for shape in shapes:
        print(f"counting {shape.name} ...", flush=True)
        records += records_for(shape, with_compile=not (args.quick or args.no_compile))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} CPU (fake CUDA tensors)",
              "torch": torch.__version__, "ratio": RATIO, "gpus": GPUS, "records": records,
              "net": {s.name: net_table(records, s) for s in shapes}}
    if not args.quick:
        result["break_even"] = {
            "unet C=320, 8 heads, batch 2": break_even("unet", 320, 8, 2, 0),
            "dit C=3072, 24 heads, batch 1, 512 text": break_even("dit", 3072, 24, 1, 512),
        }
    result["seconds"] = time.time() - started
    text = report({**result, "_shapes": shapes})
    print(text)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.text:
        with open(args.text, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
