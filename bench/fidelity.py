"""Fidelity benchmark: how far each method's attention output is from full attention on
token grids made from real photographs, at equal merge ratio, and what it costs.

Reports, averaged over the photos:
* relative L2 error of the restored layer output against full attention, per method and
  ratio, at 64x64 tokens (SD at 512 px) and 128x128 (1024 px);
* the layer speed-up each method achieves at 64x64, merge overhead included, so error can
  be read against speed;
* for MaMe across τ: error and the high-frequency energy of the output relative to full
  attention (a Laplacian over the token grid), to test "higher τ keeps detail";
* the tuning sweep behind the defaults (tile, temperature, gate).

Usage: python -m bench.fidelity [--quick] [--out bench/results/fidelity.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.attention_methods import Attention, mame, methods
from bench.photos import PHOTOS, photo_tokens
from bench.timing import time_interleaved

RATIOS = (0.3, 0.5, 0.7, 0.75)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def high_freq_energy(y: torch.Tensor, side: int) -> float:
    grid = y[0].T.reshape(1, -1, side, side)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(grid.shape[1], 1, 3, 3)
    return float(F.conv2d(grid, kernel, groups=grid.shape[1]).pow(2).mean())


def errors_for(photos, grid, attn, ratios):
    table: dict[str, dict[float, list[float]]] = {}
    for name in photos:
        x = photo_tokens(name, grid)
        ref = attn(x)
        for ratio in ratios:
            for method, fn in methods(ratio).items():
                table.setdefault(method, {}).setdefault(ratio, []).append(rel_error(fn(attn, x, grid, grid), ref))
    return {m: {r: statistics.fmean(v) for r, v in by_ratio.items()} for m, by_ratio in table.items()}


def layer_speedups(attn, grid, ratios, rounds):
    x = photo_tokens("astronaut", grid).expand(2, -1, -1).contiguous()  # batch 2, as with CFG
    out = {}
    for ratio in ratios:
        cases = {"full": lambda: attn(x)}
        cases.update({m: (lambda fn=fn: fn(attn, x, grid, grid)) for m, fn in methods(ratio).items()})
        t = time_interleaved(cases, rounds=rounds)
        out[ratio] = {m: t["full"]["median"] / v["median"] for m, v in t.items() if m != "full"}
    return out


def tau_sweep(photos, grid, attn, taus):
    rows = []
    for tau in taus:
        errs, hf = [], []
        for name in photos:
            x = photo_tokens(name, grid)
            ref = attn(x)
            y = mame(attn, x, grid, grid, 0.5, "qkv", threshold=tau)
            errs.append(rel_error(y, ref))
            hf.append(high_freq_energy(y, grid) / high_freq_energy(ref, grid))
        rows.append({"tau": tau, "error": statistics.fmean(errs), "hf_ratio": statistics.fmean(hf)})
    return rows


def tuning_sweep(photos, grid, attn):
    rows = []
    variants = [dict(tile=t) for t in (4, 8, 16)] + [dict(temperature=t) for t in (0.002, 0.005, 0.02, 0.05)]
    variants += [dict(gate="sigmoid"), dict(gate="sigmoid", gate_width=0.05)]
    for variant in variants:
        errs = []
        for name in photos:
            x = photo_tokens(name, grid)
            errs.append(rel_error(mame(attn, x, grid, grid, 0.5, "qkv", **variant), attn(x)))
        rows.append({"variant": variant, "error": statistics.fmean(errs)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 photos, no 128x128 grid, fewer rounds")
    p.add_argument("--out", default="bench/results/fidelity.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = PHOTOS[:3] if args.quick else PHOTOS
    gen = torch.Generator().manual_seed(0)
    attn_sharp = Attention(320, 8, gen, query_scale=4.0).eval()
    attn_diffuse = Attention(320, 8, torch.Generator().manual_seed(1)).eval()
    started = time.time()
    result = {"photos": list(photos), "machine": f"{torch.get_num_threads()} CPU threads", "torch": torch.__version__}
    with torch.inference_mode():
        result["error_64_sharp"] = errors_for(photos, 64, attn_sharp, RATIOS)
        result["error_64_diffuse"] = errors_for(photos, 64, attn_diffuse, (0.5,))
        if not args.quick:
            result["error_128_sharp"] = errors_for(photos[:4], 128, attn_sharp, (0.5,))
        result["layer_speedup_64"] = layer_speedups(attn_sharp, 64, (0.5, 0.75) if args.quick else RATIOS,
                                                    3 if args.quick else 5)
        result["tau_sweep"] = tau_sweep(photos, 64, attn_sharp, (-1.0, 0.0, 0.3, 0.5, 0.7, 0.9, 0.99))
        result["tuning"] = tuning_sweep(photos, 64, attn_sharp)
    result["seconds"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print_report(result)
    print(f"\nwrote {args.out} ({result['seconds']} s)")


def print_report(result):
    for key in ("error_64_sharp", "error_64_diffuse", "error_128_sharp"):
        if key not in result:
            continue
        table = result[key]
        ratios = sorted({float(r) for by in table.values() for r in by})
        print(f"\n{key}: relative error vs full attention (mean of {len(result['photos'])} photos)")
        print("| method | " + " | ".join(f"r={r:g}" for r in ratios) + " |")
        print("| --- |" + " --- |" * len(ratios))
        for method, by in table.items():
            cells = [f"{by[r]:.4f}" if r in by else "-" for r in ratios]
            print(f"| {method} | " + " | ".join(cells) + " |")
    print("\nlayer speed-up at 64x64 tokens, batch 2 (merge overhead included)")
    for ratio, by in result["layer_speedup_64"].items():
        print(f"r={ratio}: " + ", ".join(f"{m} {v:.2f}x" for m, v in by.items()))
    print("\nMaMe qkv r=0.5 across tau: | tau | error | HF energy vs full |")
    for row in result["tau_sweep"]:
        print(f"| {row['tau']:g} | {row['error']:.4f} | {row['hf_ratio']:.3f} |")
    print("\ntuning at r=0.5 (defaults: tile 8, temperature 0.005, hard gate, tau 0.5)")
    for row in result["tuning"]:
        print(f"| {row['variant']} | {row['error']:.4f} |")


if __name__ == "__main__":
    main()
