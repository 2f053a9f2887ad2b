"""The main job: render one workflow with and without MaMe and report the speed ratio.

By default it starts the embedded ComfyUI host on CPU with a generated random-weight SD1.5
checkpoint (the real architecture; pictures are noise-like but timings are real), and
drives it with mame-batch. Point it at your own ComfyUI and a real checkpoint with
``--url http://127.0.0.1:8188 --checkpoint your_model.safetensors``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mame_batch import run_batch

from .server import REPO, ComfyServer, ensure_checkpoint

PROMPTS = [
    ("a lighthouse on a rocky coast at sunset, detailed photo", 101),
    ("a bowl of ripe cherries on a wooden table, studio light", 202),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="use this running ComfyUI instead of starting the embedded host")
    p.add_argument("--checkpoint", help="checkpoint name on that server (default: the generated one)")
    p.add_argument("--variant", choices=["full", "tiny"], default="full",
                   help="generated model: full SD1.5 UNet (default) or the small test one")
    p.add_argument("--workflow", default=str(REPO / "workflows" / "sd15_txt2img_mame.json"))
    p.add_argument("--ratio", default="0.5", help="MaMe ratio(s) to compare with 0, comma-separated")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", help="output folder (default out/demo-<time>)")
    p.add_argument("--save", help="also write the report to this file (e.g. bench/results/demo-sd15-512.txt)")
    args = p.parse_args(argv)
    out = Path(args.out or REPO / "out" / time.strftime("demo-%Y%m%d-%H%M%S"))
    jobs = [{"prompt": text, "seed": seed, "width": args.width, "height": args.height, "steps": args.steps}
            for text, seed in PROMPTS]
    sweep = [f"MaMe.ratio=0,{args.ratio}"]

    def run(url: str, checkpoint: str):
        for job in jobs:
            job["CheckpointLoaderSimple.ckpt_name"] = checkpoint
        return run_batch(args.workflow, jobs, out, sweep=sweep, url=url, concurrency=1, warmup=1)

    if args.url:
        if not args.checkpoint:
            p.error("--checkpoint is needed with --url (a checkpoint name that server has)")
        result = run(args.url, args.checkpoint)
        where = f"{args.url}"
    else:
        print("Starting the embedded ComfyUI host on CPU. It uses a generated RANDOM-WEIGHT SD1.5 "
              f"checkpoint ({args.variant}): the images are noise, the timings are real.", flush=True)
        checkpoint = ensure_checkpoint(args.variant)
        with ComfyServer(out / "comfyui-output", extra_args=["--use-pytorch-cross-attention"]) as server:
            result = run(server.url, checkpoint)
        where = f"embedded ComfyUI (log: {server.log_path})"
    lines = [f"{args.width}x{args.height}, {args.steps} steps, CFG batch of 2, on {where}", result.table]
    mame_rows = [r for r in result.rows if not r["baseline"] and r["speedup"]]
    lines += [f"speed ratio with {r['setting']}: {r['speedup']:.2f}x per image (whole prompt: sampling, "
              "text encoding and VAE decode)" for r in mame_rows]
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


if __name__ == "__main__":
    sys.exit(main())
