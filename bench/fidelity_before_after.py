"""Before and after, side by side in one run: the first engine (commit f71c988 at its defaults:
8x8 tiles, tau 0.7, no size bias) against Engine 2 and tomesd, ratio 0.5, 64x64 photo grids,
in the two attention set-ups of bench/fidelity.py; then the share of tokens each engine
removes at ratio 0.5 on the UNet levels of common SD/SDXL sizes.

Usage (from a git checkout): python -m bench.fidelity_before_after > bench/results/fidelity-before-after.txt
"""
import importlib.util
import statistics
import subprocess
import sys
import tempfile

import torch

from bench.attention_methods import Attention, mame, tome
from bench.photos import photo_tokens

torch.set_num_threads(2)
FIRST_ENGINE = "f71c988"
_tmp = tempfile.mkdtemp()
subprocess.run(f"git archive {FIRST_ENGINE} mame_core | tar -x -C {_tmp}", shell=True, check=True)
spec = importlib.util.spec_from_file_location("old_mame", f"{_tmp}/mame_core/__init__.py",
                                              submodule_search_locations=[f"{_tmp}/mame_core"])
old = importlib.util.module_from_spec(spec)
sys.modules["old_mame"] = old
spec.loader.exec_module(old)
print("python -m bench.fidelity_before_after  (2 CPU threads; photos astronaut, chelsea, coffee)\n")
def old_mame(a, x, h, w):
    p = old.plan_seeded(x, h, w, old.MergeSettings(ratio=0.5), 0, "bench")
    return p.restore(a(p.merge(x)))
photos = ("astronaut", "chelsea", "coffee")
sq = [photo_tokens(n, 64) for n in photos]
setups = [("independent", 1.0), ("independent", 4.0), ("independent", 16.0), ("independent", 64.0),
          ("self-similarity", 1.0), ("self-similarity", 8.0), ("self-similarity", 64.0), ("self-similarity", 512.0)]
print("| set-up | query scale | perplexity | tome | first engine | first/tome | Engine 2 | Engine 2/tome |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
with torch.inference_mode():
    for setup, qs in setups:
        a = Attention(320, 8, torch.Generator().manual_seed(0), query_scale=qs, shared_qk=setup == "self-similarity").eval()
        ppl = statistics.fmean(a.perplexity(x) for x in sq)
        e = {"tome": [], "old": [], "new": []}
        for x in sq:
            ref = a(x)
            for k, fn in (("tome", lambda: tome(a, x, 64, 64, 0.5)), ("old", lambda: old_mame(a, x, 64, 64)), ("new", lambda: mame(a, x, 64, 64, 0.5))):
                e[k].append(float((fn() - ref).norm() / ref.norm()))
        m = {k: statistics.fmean(v) for k, v in e.items()}
        print(f"| {setup} | {qs:g} | {ppl:.0f} | {m['tome']:.4f} | {m['old']:.4f} | {m['old']/m['tome']:.2f}x | {m['new']:.4f} | {m['new']/m['tome']:.2f}x |", flush=True)
    # effective ratio per resolution, first engine vs Engine 2
    print("\n| grid (latent level) | first engine removed | Engine 2 removed |")
    print("| --- | --- | --- |")
    from mame_core import MergeSettings, merged_tokens_for
    for h, w in [(104, 152), (52, 76), (26, 38), (112, 144), (56, 72), (28, 36), (80, 120), (40, 60), (20, 30), (96, 168), (48, 84), (24, 42), (12, 12)]:
        x = torch.zeros(1, h * w, 4)
        po = old.plan_merge(x, h, w, old.MergeSettings(ratio=0.5))
        print(f"| {h}x{w} | {1 - po.merged_tokens / (h * w):.1%} | {1 - merged_tokens_for(h, w, MergeSettings(ratio=0.5)) / (h * w):.1%} |")
