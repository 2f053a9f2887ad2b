"""MaMe beside ComfyUI's EasyCache on a DiT: sampling time of none / EasyCache / MaMe / both,
measured side by side (interleaved rounds) with ComfyUI v0.3.75's real Flux class at the
tiny test width (embedded_host/dit_models.py) and a 64x64 latent (1024 image tokens).

    MAME_HOST=2025 python -m bench.dit_easycache > bench/results/dit_easycache.json
"""
from __future__ import annotations

import json
import os
import sys

import torch


def main() -> int:
    os.environ.setdefault("MAME_HOST", "2025")
    torch.set_num_threads(2)
    from bench.timing import time_interleaved
    from embedded_host.dit_models import build_model, conditioning
    from embedded_host.inprocess import extension

    ext = extension()
    import comfy.sample
    from comfy_extras.nodes_easycache import EasyCacheNode

    model = build_model("flux")
    mame = ext.NODE_CLASS_MAPPINGS["MaMe"]().patch(model, 0.5, 0.7, "qkv", 8, "auto", 0.0, 1.0, 0)[0]
    cache = lambda m: EasyCacheNode.execute(m, 0.2, 0.15, 0.95, False).result[0]  # noqa: E731  (node defaults)
    shape = (1, 16, 64, 64)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    steps = 10

    def run(m):
        with torch.no_grad():
            return comfy.sample.sample(m, noise, steps, 3.5, "euler", "simple", conditioning("flux"),
                                       conditioning("flux", seed=2), torch.zeros(shape), seed=0, disable_pbar=True)

    variants = {"none": model, "easycache": cache(model), "mame": mame, "mame+easycache": cache(mame)}
    base = run(model)
    errors = {k: ((run(m) - base).norm() / base.norm()).item() for k, m in variants.items() if k != "none"}
    times = time_interleaved({k: (lambda m=m: run(m)) for k, m in variants.items()}, rounds=2, warmup=0)
    t = {k: v["median"] for k, v in times.items()}
    print(json.dumps({"steps": steps, "latent": shape, "seconds": t,
                      "speedup": {k: t["none"] / v for k, v in t.items()}, "error_vs_none": errors,
                      "easycache": "reuse_threshold 0.2, start 0.15, end 0.95 (node defaults)"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
