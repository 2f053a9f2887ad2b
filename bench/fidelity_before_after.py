"""Before and after, side by side in one run, ratio 0.5, 64x64 photo grids, in the attention
set-ups of bench/fidelity.py (position included):

* the first engine (commit f71c988 at its defaults: 8x8 tiles, tau 0.7, no size bias);
* Engine 2 with the count fixed per tile (commit f7b1a35: every 8x8 tile gives up half);
* Engine 2 as shipped (this checkout: the count is chosen over the whole grid);
* tomesd's matcher.

Then the share of tokens each engine removes at ratio 0.5 on the UNet levels of common
SD/SDXL sizes.

Usage (from a git checkout): python -m bench.fidelity_before_after > bench/results/fidelity-before-after.txt
"""
import importlib.util
import statistics
import subprocess
import sys
import tempfile

import torch

from bench.attention_methods import Attention, mame, tome
from bench.photos import photo_tokens, with_position

torch.set_num_threads(2)
ENGINES = {"first engine": "f71c988", "per-tile count": "f7b1a35"}


def load_engine(name: str, commit: str):
    folder = tempfile.mkdtemp()
    subprocess.run(f"git archive {commit} mame_core | tar -x -C {folder}", shell=True, check=True)
    module = f"engine_{commit}"
    spec = importlib.util.spec_from_file_location(module, f"{folder}/mame_core/__init__.py",
                                                  submodule_search_locations=[f"{folder}/mame_core"])
    engine = importlib.util.module_from_spec(spec)
    sys.modules[module] = engine
    spec.loader.exec_module(engine)
    return engine


def run_engine(engine, size_bias):
    def run(a, x, h, w):
        p = engine.plan_seeded(x, h, w, engine.MergeSettings(ratio=0.5), 0, "bench")
        bias = p.key_log_size if size_bias else None
        return p.restore(a(p.merge(x), key_log_size=bias))
    return run


engines = {name: load_engine(name, commit) for name, commit in ENGINES.items()}
methods = {
    "tome": lambda a, x, h, w: tome(a, x, h, w, 0.5),
    "first engine": run_engine(engines["first engine"], size_bias=False),
    "per-tile count": run_engine(engines["per-tile count"], size_bias=True),
    "shipped": lambda a, x, h, w: mame(a, x, h, w, 0.5),
}
print("python -m bench.fidelity_before_after  (2 CPU threads; photos astronaut, chelsea, coffee)\n")
photos = ("astronaut", "chelsea", "coffee")
sq = [photo_tokens(n, 64) for n in photos]
setups = [("independent", 1.0), ("independent", 4.0), ("independent", 16.0), ("independent", 64.0),
          ("self-similarity", 1.0), ("self-similarity", 8.0), ("self-similarity", 64.0), ("self-similarity", 512.0),
          ("position", 4.0), ("position", 8.0), ("position", 16.0), ("position", 64.0)]
print("Relative L2 error of the layer output against full attention (mean of 3 photos), and as a multiple of tomesd's\n")
print("| set-up | query scale | perplexity | tome | first engine | /tome | per-tile count | /tome | shipped | /tome |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
with torch.inference_mode():
    for setup, qs in setups:
        a = Attention(320, 8, torch.Generator().manual_seed(0), query_scale=qs, shared_qk=setup == "self-similarity").eval()
        xs = [with_position(x, 64, 64) for x in sq] if setup == "position" else sq
        ppl = statistics.fmean(a.perplexity(x) for x in xs)
        errors = {k: [] for k in methods}
        for x in xs:
            ref = a(x)
            for k, fn in methods.items():
                errors[k].append(float((fn(a, x, 64, 64) - ref).norm() / ref.norm()))
        m = {k: statistics.fmean(v) for k, v in errors.items()}
        cells = " | ".join(f"{m[k]:.4f} | {m[k] / m['tome']:.2f}x" for k in list(methods)[1:])
        print(f"| {setup} | {qs:g} | {ppl:.0f} | {m['tome']:.4f} | {cells} |", flush=True)
    print("\nShare of tokens removed at ratio 0.5\n")
    print("| grid (latent level) | first engine | per-tile count | shipped |")
    print("| --- | --- | --- | --- |")
    from mame_core import MergeSettings, merged_tokens_for
    grids = [(104, 152), (52, 76), (26, 38), (112, 144), (56, 72), (28, 36), (80, 120), (40, 60), (20, 30),
             (96, 168), (48, 84), (24, 42), (12, 12)]
    for h, w in grids:
        x = torch.zeros(1, h * w, 4)
        shares = []
        for engine in engines.values():
            shares.append(1 - engine.plan_merge(x, h, w, engine.MergeSettings(ratio=0.5)).merged_tokens / (h * w))
        shares.append(1 - merged_tokens_for(h, w, MergeSettings(ratio=0.5)) / (h * w))
        print(f"| {h}x{w} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
