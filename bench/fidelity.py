"""Fidelity benchmark: how far each method's attention output is from full attention on token
grids made from real photographs, at equal token count and at equal layer speed.

Attention is one self-attention layer (q/k/v/out projections, 8 heads, C=320). Its sharpness
is set by scaling the query projection and reported as the mean row perplexity (exp of the
entropy of an attention row: how many tokens a query effectively attends to). The metric is
the relative L2 error of the layer output against full attention, averaged over photos.

Methods (bench/attention_methods.py): MaMe at its shipped defaults (with proportional
attention), on the engine's default route for the device and, where the engine has one, on
its GPU route (``mame-qkv (gpu route)``, run on these CPU tensors; "n/a" where the engine has
no route parameter); tomesd's own matcher as tomesd ships it (``tome``) and with ToMe's
proportional attention (``tome-prop``, the paper's; the fair reference for MaMe, which has the
same size bias), ComfyUI's queries-only scheme (``tome-q``) and this project's 2x1 key/value
pooling in the style of ToDo (``todo``). What the matching gives is read from MaMe without
size bias against ``tome`` (neither has the bias) and from MaMe against ``tome-prop`` (both
have it).

Tables, one run each:
1. ratio 0.5, equal token count: 64x64 diffuse, 64x64 sharp, 128x128, a non-divisible 52x76;
2. sharpness sweep at 64x64 down to a row perplexity of about 1 (the position set-up), against
   both references;
3. equal layer speed: the MaMe ratio whose layer time (merge cost included) equals tomesd's
   at ratio 0.5, and MaMe's error there; and the equal-fidelity ratio: the MaMe ratio whose
   error equals tomesd's at ratio 0.5, with MaMe's layer speed-up there;
4. variants of the engine that were measured to choose the defaults.

Usage: python -m bench.fidelity [--quick] [--out bench/results/fidelity.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bench.attention_methods import Attention, gpu_route_available, mame, todo, tome, tome_prop, tome_queries
from bench.photos import PHOTOS, photo_tokens, photo_tokens_hw, with_position
from bench.timing import time_interleaved

TODO = "todo (this project's 2x1 pooling)"
GPU = "mame-qkv (gpu route)"
# (set-up, query scale): "independent" q/k projections (the earlier benchmark's set-up),
# "self-similarity" heads (the key projection is the query projection) and "position": the
# independent heads on tokens with 2-D sine-cosine positions added (bench.photos.with_position).
# Photo tokens alone hold near-duplicates (flat regions), so their rows never get sharper than
# a perplexity of about 100; with positions every token is distinct and rows reach 1-10.
SHARPNESS = (("independent", 1.0), ("independent", 4.0), ("independent", 16.0), ("independent", 64.0),
             ("self-similarity", 1.0), ("self-similarity", 8.0), ("self-similarity", 64.0),
             ("self-similarity", 512.0), ("position", 4.0), ("position", 8.0), ("position", 16.0),
             ("position", 64.0))
SPEED_RATIOS = (0.4, 0.5, 0.6, 0.7)
VARIANT_SETUPS = (("independent", 4.0), ("independent", 64.0), ("self-similarity", 64.0), ("position", 16.0))
VARIANTS = {
    "defaults (8x8 matching tiles, block input, size bias, tau -1)": {},
    "no size bias": {"size_bias": False},
    "4x4 matching tiles": {"tile": 4},
    "16x16 matching tiles": {"tile": 16},
    "64x64 matching tile (the whole grid)": {"tile": 64},
    "similarity on keys (mean over heads)": {"metric": "keys"},
    "tau 0.5 (hard)": {"threshold": 0.5},
    "tau 0.9 (hard)": {"threshold": 0.9},
    "mode kv": {"mode": "kv"},
}


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def methods(ratio: float) -> dict:
    out = {
        "mame-qkv": lambda a, x, h, w: mame(a, x, h, w, ratio, "qkv"),
        "mame-kv": lambda a, x, h, w: mame(a, x, h, w, ratio, "kv"),
        "tome": lambda a, x, h, w: tome(a, x, h, w, ratio),
        "tome-prop": lambda a, x, h, w: tome_prop(a, x, h, w, ratio),
        "tome-q": lambda a, x, h, w: tome_queries(a, x, h, w, ratio),
        TODO: lambda a, x, h, w: todo(a, x, h, w, ratio),
    }
    if gpu_route_available():
        out[GPU] = lambda a, x, h, w: mame(a, x, h, w, ratio, "qkv", route="gpu")
    return out


def sweep_inputs(square, setup):
    return [(with_position(x, h, w), h, w) for x, h, w in square] if setup == "position" else square


def attention(scale: float, setup: str = "independent") -> Attention:
    return Attention(320, 8, torch.Generator().manual_seed(0), query_scale=scale,
                     shared_qk=setup == "self-similarity").eval()  # "position": independent heads


def photo_errors(inputs, attn, fns) -> dict[str, list[float]]:
    """name -> the error on each input, in order."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for x, h, w in inputs:
        ref = attn(x)
        for name, fn in fns.items():
            out[name].append(rel_error(fn(attn, x, h, w), ref))
    return out


def mean_errors(inputs, attn, fns) -> dict[str, float]:
    return {name: statistics.fmean(v) for name, v in photo_errors(inputs, attn, fns).items()}


def errors_with_photos(inputs, attn, fns) -> dict:
    """The mean errors, and each photo's under ``"per photo"`` (one photo can dominate a mean:
    tomesd's matcher sends most of a flat region into one destination)."""
    each = photo_errors(inputs, attn, fns)
    return {**{name: statistics.fmean(v) for name, v in each.items()}, "per photo": each}


def perplexity(inputs, attn) -> float:
    return statistics.fmean(attn.perplexity(x) for x, _, _ in inputs)


def interpolate(xs, ys, y_target):
    """x where the piecewise-linear y(x) first crosses y_target (None if it never does)."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=False), zip(xs[1:], ys[1:], strict=False), strict=False):
        if (y0 - y_target) * (y1 - y_target) <= 0 and y0 != y1:
            return x0 + (x1 - x0) * (y_target - y0) / (y1 - y0)
    return None


def at(xs, ys, x):
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=False), zip(xs[1:], ys[1:], strict=False), strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def layer_speedups(x, side, rounds):
    attn = attention(4.0)
    cases = {"full": lambda: attn(x), "tome r=0.5": lambda: tome(attn, x, side, side, 0.5)}
    for r in SPEED_RATIOS:
        cases[f"mame r={r}"] = lambda r=r: mame(attn, x, side, side, r)
    t = time_interleaved(cases, rounds=rounds)
    return {name: t["full"]["median"] / v["median"] for name, v in t.items() if name != "full"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 photos, no 128x128 grid, fewer rounds")
    p.add_argument("--text", default=None, help="also write the printed report here")
    p.add_argument("--out", default="bench/results/fidelity.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = PHOTOS[:2] if args.quick else PHOTOS[:3]
    started = time.time()
    result = {"photos": list(photos), "machine": f"{torch.get_num_threads()} CPU threads", "torch": torch.__version__,
              "dtype": "float32", "gpu route": gpu_route_available(), "load average at start": os.getloadavg()[0]}
    square = [(photo_tokens(n, 64), 64, 64) for n in photos]
    with torch.inference_mode():
        cases = {
            "64x64 diffuse (query scale 1)": (square, 1.0),
            "64x64 sharp (query scale 4)": (square, 4.0),
            "52x76 non-divisible (query scale 4)": ([(photo_tokens_hw(n, 52, 76), 52, 76) for n in photos], 4.0),
        }
        if not args.quick:
            cases["128x128 (query scale 4)"] = ([(photo_tokens(n, 128), 128, 128) for n in photos[:2]], 4.0)
        result["equal_tokens"] = {}
        for name, (inputs, scale) in cases.items():
            attn = attention(scale)
            row = errors_with_photos(inputs, attn, methods(0.5))
            row["perplexity"] = perplexity(inputs, attn)
            result["equal_tokens"][name] = row
            print(name, {k: round(v, 4) for k, v in row.items() if k != "per photo"}, flush=True)

        sweep = []
        for setup, scale in SHARPNESS:
            attn = attention(scale, setup)
            fns = {**methods(0.5), "mame-qkv no size bias": lambda a, x, h, w: mame(a, x, h, w, 0.5, size_bias=False)}
            fns.pop("tome-q")
            inputs = sweep_inputs(square, setup)
            row = {"setup": setup, "query_scale": scale, "perplexity": perplexity(inputs, attn),
                   **errors_with_photos(inputs, attn, fns)}
            row["mame by ratio"] = {
                r: mean_errors(inputs, attn, {"m": lambda a, x, h, w, r=r: mame(a, x, h, w, r)})["m"] for r in SPEED_RATIOS
            }
            sweep.append(row)
            print(f"{setup} scale {scale}: perplexity {row['perplexity']:.0f} mame {row['mame-qkv']:.4f} "
                  f"tome {row['tome']:.4f} tome-prop {row['tome-prop']:.4f}", flush=True)
        result["sharpness"] = sweep

        speed_x = photo_tokens(photos[0], 64).expand(2, -1, -1).contiguous()  # batch 2, as with CFG
        speed = layer_speedups(speed_x, 64, 3 if args.quick else 7)
        result["layer_speedup_64"] = speed
        mame_speed = [speed[f"mame r={r}"] for r in SPEED_RATIOS]
        equal_speed_ratio = interpolate(list(SPEED_RATIOS), mame_speed, speed["tome r=0.5"])
        result["equal_speed_ratio"] = equal_speed_ratio
        for row in sweep:
            errs = [row["mame by ratio"][r] for r in SPEED_RATIOS]
            row["mame at equal speed"] = None if equal_speed_ratio is None else at(list(SPEED_RATIOS), errs, equal_speed_ratio)
            fid = interpolate(list(SPEED_RATIOS), errs, row["tome"])
            row["equal fidelity ratio"] = fid
            row["mame speed-up at equal fidelity"] = None if fid is None else at(list(SPEED_RATIOS), mame_speed, fid)

        variants = []
        for setup, scale in VARIANT_SETUPS:
            attn = attention(scale, setup)
            fns = {name: (lambda a, x, h, w, kw=kw: mame(a, x, h, w, 0.5, **kw)) for name, kw in VARIANTS.items()}
            fns["tome"] = lambda a, x, h, w: tome(a, x, h, w, 0.5)
            fns["tome-prop"] = lambda a, x, h, w: tome_prop(a, x, h, w, 0.5)
            inputs = sweep_inputs(square[:2], setup)
            variants.append({"setup": setup, "query_scale": scale, "perplexity": perplexity(inputs, attn),
                             **mean_errors(inputs, attn, fns)})
        result["variants"] = variants
    result["seconds"] = round(time.time() - started, 1)
    result["load average at end"] = os.getloadavg()[0]  # the timings of table 3 are only as quiet as the machine
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print_report(result)
    print(f"\nwrote {args.out} ({result['seconds']} s)")
    if args.text:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print(f"python -m bench.fidelity --out {args.out} --text {args.text}  ({result['seconds']} s, "
                  f"{result['machine']}, torch {result['torch']}, {result['dtype']}, photos {', '.join(result['photos'])}, "
                  f"load average {result['load average at start']:.1f} at start, {result['load average at end']:.1f} at end)")
            print_report(result)
        Path(args.text).write_text(buffer.getvalue())


def _f(v, fmt=".4f"):
    return "-" if v is None else format(v, fmt)


def _x(row, name, ref):
    """``row[name] / row[ref]`` as "0.00x", or "n/a" where the column was not measured."""
    return "n/a" if row.get(name) is None else f"{row[name] / row[ref]:.2f}x"


def _err(row, name):
    return "n/a" if row.get(name) is None else f"{row[name]:.4f}"


EQUAL_TOKEN_COLUMNS = ("mame-qkv", GPU, "mame-kv", "tome", "tome-prop", "tome-q", TODO)
SWEEP_COLUMNS = ("mame-qkv", GPU, "mame-qkv no size bias", "mame-kv", "tome", "tome-prop", TODO)
SWEEP_RATIOS = (("mame-qkv no size bias", "tome", "mame no size bias/tome"), ("mame-qkv", "tome", "mame/tome"),
                ("mame-qkv", "tome-prop", "mame/tome-prop"), (GPU, "tome-prop", "gpu route/tome-prop"))


def print_report(result):
    gpu_note = "" if result.get("gpu route", True) else " (n/a: this engine's plan_merge has no route parameter)"
    print(f"\n## 1. Ratio 0.5, equal token count (mean of {len(result['photos'])} photos; 128x128: 2){gpu_note}")
    print("| grid | perplexity | " + " | ".join(EQUAL_TOKEN_COLUMNS) + " | mame-qkv / tome | mame-qkv / tome-prop "
          "| gpu route / tome-prop |")
    print("| --- | --- |" + " --- |" * (len(EQUAL_TOKEN_COLUMNS) + 3))
    for grid, row in result["equal_tokens"].items():
        cells = " | ".join(_err(row, n) for n in EQUAL_TOKEN_COLUMNS)
        print(f"| {grid} | {row['perplexity']:.0f} | {cells} | {_x(row, 'mame-qkv', 'tome')} "
              f"| {_x(row, 'mame-qkv', 'tome-prop')} | {_x(row, GPU, 'tome-prop')} |")
    print("\nper photo (" + ", ".join(result["photos"]) + "), mame-qkv / tome-prop: " + "; ".join(
        f"{grid.split(' (')[0]} " + " ".join(f"{m / t:.2f}x" for m, t in zip(row["per photo"]["mame-qkv"],
                                                                              row["per photo"]["tome-prop"], strict=True))
        for grid, row in result["equal_tokens"].items() if "per photo" in row))

    print(f"\n## 2. Sharpness sweep, 64x64, ratio 0.5, equal token count{gpu_note}")
    print("matching alone: mame no size bias/tome (neither has the size bias) and mame/tome-prop (both have it); "
          "the size bias alone: tome/tome-prop")
    print("| set-up | query scale | perplexity | " + " | ".join(c.replace("mame-qkv no size bias", "mame no size bias")
                                                           for c in SWEEP_COLUMNS)
          + " | " + " | ".join(label for _, _, label in SWEEP_RATIOS) + " | tome/tome-prop |")
    print("|" + " --- |" * (3 + len(SWEEP_COLUMNS) + len(SWEEP_RATIOS) + 1))
    for row in result["sharpness"]:
        cells = " | ".join(_err(row, n) for n in SWEEP_COLUMNS)
        ratios = " | ".join(_x(row, a, b) for a, b, _ in SWEEP_RATIOS)
        print(f"| {row['setup']} | {row['query_scale']:g} | {row['perplexity']:.0f} | {cells} | {ratios} "
              f"| {_x(row, 'tome', 'tome-prop')} |")

    r = result["equal_speed_ratio"]
    print("\n## 3. Equal layer speed and equal fidelity (64x64, against tomesd as it ships, ratio 0.5)")
    print(f"equal layer speed: MaMe at ratio {_f(r, '.3f')} runs the layer as fast as tomesd at 0.5 (merge cost included)")
    print("| set-up | query scale | perplexity | mame at equal speed | /tome | equal-fidelity ratio | mame speed-up there |")
    print("|" + " --- |" * 7)
    for row in result["sharpness"]:
        eq = row["mame at equal speed"]
        print(f"| {row['setup']} | {row['query_scale']:g} | {row['perplexity']:.0f} | {_f(eq)} "
              f"| {_f(None if eq is None else eq / row['tome'], '.2f')}x | {_f(row['equal fidelity ratio'], '.3f')} "
              f"| {_f(row['mame speed-up at equal fidelity'], '.2f')}x |")
    print("\nlayer speed-up at 64x64, batch 2, query scale 4 (merge cost included):")
    print(", ".join(f"{k} {v:.2f}x" for k, v in result["layer_speedup_64"].items()))

    print("\n## 4. Variants at ratio 0.5 (64x64, 2 photos; error, then / tome, / tome-prop)")
    names = [k for k in result["variants"][0] if k not in ("setup", "query_scale", "perplexity")]
    print("| variant | " + " | ".join(f"{v['setup']} x{v['query_scale']:g} (ppl {v['perplexity']:.0f})"
                                     for v in result["variants"]) + " |")
    print("| --- |" + " --- |" * len(result["variants"]))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{v[n]:.4f} ({_x(v, n, 'tome')}, {_x(v, n, 'tome-prop')})"
                                     for v in result["variants"]) + " |")


if __name__ == "__main__":
    main()
