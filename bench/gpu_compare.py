"""Measured beside estimated: the GPU suite's kernel timings (bench/results/gpu-kernels.json)
next to the cost model's estimates for the same GPU (bench/results/gpu-cost.json), and the
net per block call that each implies: the attention time merging saves (full length minus
merged length with proportional attention, as a float mask and as the size channel) minus
the time of plan + merge + restore.

    python -m bench.gpu_compare > bench/results/gpu-vs-estimate.txt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _measured(records: list[dict]) -> dict:
    out = {}
    for r in records:
        if r.get("status") == "ok" and "median_ms" in r:
            out[(r["shape"], r["method"], r["mode"])] = r["median_ms"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", default=str(RESULTS / "gpu-kernels.json"))
    p.add_argument("--cost", default=str(RESULTS / "gpu-cost.json"))
    p.add_argument("--gpu", default="h200", help="the cost model's GPU key the measurement ran on")
    args = p.parse_args(argv)
    kernels = json.loads(Path(args.kernels).read_text())
    cost = json.loads(Path(args.cost).read_text())
    measured = _measured(kernels["records"])
    est = {(r["shape"], r["method"]): r["estimate_ms"][args.gpu] for r in cost["records"]}
    shapes = list(dict.fromkeys(r["shape"] for r in cost["records"]))
    env = kernels.get("env", {})
    print(f"python -m bench.gpu_compare  (measured: {env.get('gpu', env.get('device', '?'))} (driver {env.get('driver', '?')}), "
          f"torch {env.get('torch', '?')}, from {Path(args.kernels).name}; estimates: {args.gpu} rates of "
          f"{Path(args.cost).name}, dated {cost.get('date')})")
    print("\nms per block call (one layer), bf16, ratio 0.5. 'graph' is the same eager kernels replayed as a CUDA graph.\n")
    print("| shape | method | measured eager | estimated eager | measured / estimated | measured graph |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in shapes:
        for method in ("mame-gpu", "mame-gpu merge+restore", "mame-cpu", "tomesd", "attention-full", "attention-merged"):
            m, e = measured.get((shape, method, "eager")), est.get((shape, method), {}).get("eager")
            g = measured.get((shape, method, "graph"))
            if m is None and e is None:
                continue
            ratio = f"{m / e:.2f}" if m and e else "-"
            cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"| {shape} | {method} | {cell(m)} | {cell(e)} | {ratio} | {cell(g)} |")
    print("\nNet per block call, measured (ms; positive = merging saves time). saved = attention-full minus "
          "attention-merged with the bias as a float mask / as the size channel; cost = plan + merge + restore.\n")
    print("| shape | attention full | merged + mask | merged + channel | mame-gpu eager | net (mask) | net (channel) | "
          "mame-gpu graph | net graph (mask) | tomesd eager | tomesd net (mask) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in shapes:
        full = measured.get((shape, "attention-full", "eager"))
        mask = measured.get((shape, "attention-merged float-mask", "eager"))
        channel = measured.get((shape, "attention-merged size-channel", "eager"))
        mame, graph = measured.get((shape, "mame-gpu", "eager")), measured.get((shape, "mame-gpu", "graph"))
        tome = measured.get((shape, "tomesd", "eager"))
        if None in (full, mask, channel, mame):
            continue
        cells = [full, mask, channel, mame, full - mask - mame, full - channel - mame]
        cells += [graph, full - mask - graph] if graph is not None else [None, None]
        cells += [tome, full - mask - tome] if tome is not None else [None, None]
        print(f"| {shape} | " + " | ".join("-" if c is None else f"{c:+.3f}" if i in (4, 5, 7, 9) else f"{c:.3f}"
                                           for i, c in enumerate(cells)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
