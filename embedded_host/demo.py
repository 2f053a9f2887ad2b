"""The main job: render one workflow with and without MaMe and report the speed ratio.

By default it starts the embedded ComfyUI host on CPU with a generated random-weight SD1.5
checkpoint (the real architecture; pictures are noise-like but timings are real), and
drives it with mame-batch. Point it at your own ComfyUI and a real checkpoint with
``--url http://127.0.0.1:8188 --checkpoint your_model.safetensors``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from mame_batch import BatchInputError, ComfyError, run_batch

from .server import REPO, ComfyServer, ensure_checkpoint

# The MaMe node's and ComfyUI's limits (nodes/mame_node.py, EmptyLatentImage, KSampler), checked
# before the server starts; the server's /object_info is the final word once it runs.
RATIO_MIN, RATIO_MAX = 0.0, 0.95
SIZE_MIN, SIZE_MAX = 16, 16384
STEPS_MAX = 10000

PROMPTS = [
    ("a lighthouse on a rocky coast at sunset, detailed photo", 101),
    ("a bowl of ripe cherries on a wooden table, studio light", 202),
]


def check_ratios(text: str) -> list[float]:
    values = []
    for part in str(text).split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--ratio {part.strip()!r} is not a number; allowed: numbers from {RATIO_MIN:g} "
                             f"to {RATIO_MAX:g}, comma-separated (e.g. --ratio 0.3,0.5)") from None
        if not RATIO_MIN <= value <= RATIO_MAX:  # also refuses nan
            raise ValueError(f"--ratio {value:g} is out of range; allowed: numbers from {RATIO_MIN:g} to "
                             f"{RATIO_MAX:g}, comma-separated (0 is the baseline, always run)")
        if value not in values and value != 0:
            values.append(value)
    if not values:
        raise ValueError(f"--ratio needs a ratio above 0 to compare with the baseline; allowed: numbers from "
                         f"{RATIO_MIN:g} to {RATIO_MAX:g}")
    return values


def check_int(name: str, text, low: int, high: int) -> int:
    allowed = f"a whole number from {low} to {high}"
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"--{name} {text!r} is not a whole number; allowed: {allowed}") from None
    if not low <= value <= high:
        raise ValueError(f"--{name} {value} is not allowed; allowed: {allowed}")
    return value


def ratio_report(records: list[dict]) -> list[str]:
    """Each setting's median and spread over the rounds, the ratio of medians, and a plain warning
    when the spread is larger than the difference the ratio reports."""
    times: dict[str, list[float]] = {}
    ratios: dict[str, float] = {}
    for r in records:
        if r["status"] == "ok" and r.get("wall_time") is not None:
            times.setdefault(r["setting_label"], []).append(r["wall_time"])
            ratios[r["setting_label"]] = next(iter(r.get("setting", {}).values()), None)
    base = next((label for label, ratio in ratios.items() if ratio in (0, 0.0)), None)
    lines = []
    for label, values in times.items():
        lines.append(f"{label}: median {statistics.median(values):.1f}s, spread {min(values):.1f}-{max(values):.1f}s "
                     f"({max(values) - min(values):.1f}s) over {len(values)} images")
    if base is None:
        return lines + ["no speed ratio: the baseline (ratio 0) has no finished image"]
    base_median, base_spread = statistics.median(times[base]), max(times[base]) - min(times[base])
    for label, values in times.items():
        if label == base:
            continue
        median, spread = statistics.median(values), max(values) - min(values)
        lines.append(f"speed ratio with {label}: {base_median / median:.2f}x per image, median against median "
                     "(whole prompt: sampling, text encoding and VAE decode)")
        difference = abs(base_median - median)
        if max(spread, base_spread) > difference:
            lines.append(f"WARNING: the times spread over {max(spread, base_spread):.1f}s, more than the "
                         f"{difference:.1f}s difference this ratio reports: the machine was probably busy, so the "
                         "ratio is not reliable. Run again on a quiet machine or with more --rounds.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="use this running ComfyUI instead of starting the embedded host")
    p.add_argument("--checkpoint", help="checkpoint name on that server (default: the generated one)")
    p.add_argument("--variant", choices=["full", "tiny"], default="full",
                   help="generated model: full SD1.5 UNet (default) or the small test one")
    p.add_argument("--workflow", default=str(REPO / "workflows" / "sd15_txt2img_mame.json"))
    p.add_argument("--ratio", default="0.5", help="MaMe ratio(s) to compare with 0, comma-separated "
                   f"(each from {RATIO_MIN} to {RATIO_MAX})")
    p.add_argument("--width", default="512", help=f"image width, from {SIZE_MIN} to {SIZE_MAX}")
    p.add_argument("--height", default="512", help=f"image height, from {SIZE_MIN} to {SIZE_MAX}")
    p.add_argument("--steps", default="4", help=f"sampling steps, from 1 to {STEPS_MAX}")
    p.add_argument("--rounds", default="3", help="rounds: each renders one prompt with every setting, the settings' "
                   "order alternating, so a busy spell hits all of them (default %(default)s)")
    p.add_argument("--out", help="output folder (default out/demo-<time>)")
    p.add_argument("--save", help="also write the report to this file (e.g. bench/results/demo-sd15-512.txt)")
    args = p.parse_args(argv)
    # the demo's own flags, before any server starts (the server's /object_info checks them again)
    try:
        ratios = check_ratios(args.ratio)
        width, height = (check_int(name, getattr(args, name), SIZE_MIN, SIZE_MAX)
                         for name in ("width", "height"))
        steps = check_int("steps", args.steps, 1, STEPS_MAX)
        rounds = check_int("rounds", args.rounds, 1, 100)
    except ValueError as err:
        p.error(str(err))
    out = Path(args.out or REPO / "out" / time.strftime("demo-%Y%m%d-%H%M%S"))
    jobs = []
    for r in range(rounds):
        text, seed = PROMPTS[r % len(PROMPTS)]
        jobs.append({"prompt": text, "seed": seed + r, "width": width, "height": height, "steps": steps})
    sweep = ["MaMe.ratio=" + ",".join(str(v) for v in [0, *ratios])]

    def run(url: str, checkpoint: str):
        for job in jobs:
            job["CheckpointLoaderSimple.ckpt_name"] = checkpoint
        return run_batch(args.workflow, jobs, out, sweep=sweep, url=url, concurrency=1, warmup=1)

    if args.url and not args.checkpoint:
        p.error("--checkpoint is needed with --url (a checkpoint name that server has)")
    print(f"{rounds} rounds x {len(ratios) + 1} settings = {rounds * (len(ratios) + 1)} timed images, after one "
          "untimed warm-up.", flush=True)
    try:
        result, where = render(args, run, out)
    except (BatchInputError, ComfyError) as err:  # a bad value (2), or the server failed (3)
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, BatchInputError) else 3
    lines = [f"{width}x{height}, {steps} steps, CFG batch of 2, {rounds} rounds, on {where}", result.table]
    lines += ratio_report(result.records)
    report = "\n".join(lines)
    print()
    print(report)
    print(f"images: {out}")
    print(f"manifest: {result.manifest}")
    if args.save:
        stamp = time.strftime("%Y-%m-%d %H:%M %Z")
        Path(args.save).write_text(f"{report}\nmeasured {stamp}; model: generated random-weight SD1.5 "
                                   f"({'--checkpoint ' + args.checkpoint if args.url else args.variant})\n")
    return 1 if result.failed else 0


def render(args, run, out: Path):
    """Run the batch on the given server, or on the embedded host; returns (result, where)."""
    if args.url:
        return run(args.url, args.checkpoint), args.url
    print("Starting the embedded ComfyUI host on CPU. It uses a generated RANDOM-WEIGHT SD1.5 "
          f"checkpoint ({args.variant}): the images are noise, the timings are real.", flush=True)
    checkpoint = ensure_checkpoint(args.variant)
    with ComfyServer(out / "comfyui-output", extra_args=["--use-pytorch-cross-attention"]) as server:
        result = run(server.url, checkpoint)
    return result, f"embedded ComfyUI (log: {server.log_path})"


if __name__ == "__main__":
    sys.exit(main())
