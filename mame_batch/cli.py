"""mame-batch: render a list of jobs through a ComfyUI server's HTTP API."""
from __future__ import annotations

import argparse
import sys

from .batch import plan_batch, run_batch
from .client import ComfyError
from .errors import BatchInputError

EPILOG = """examples:
  mame-batch workflows/sd15_txt2img_mame.json prompts.jsonl --out out/ --set MaMe.ratio=0,0.3,0.5
  mame-batch wf.json jobs.csv --out out/ --resume          # finish a batch that was stopped
  mame-batch wf.json jobs.jsonl --out out/ --dry-run        # check everything, queue nothing

jobs file: JSONL (one object a line) or CSV (header row) with any of
  prompt, negative, seed, width, height, steps, and NODE.input columns (e.g. MaMe.ratio).
NODE is a node id, a class_type (every node of it) or a node title."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mame-batch", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Save (API Format))")
    p.add_argument("jobs", nargs="?", help="jobs file (.jsonl or .csv); omit to run the workflow once per sweep setting")
    p.add_argument("--out", required=True, help="output folder for images and manifest.jsonl")
    p.add_argument("--url", default="http://127.0.0.1:8188", help="ComfyUI server (default %(default)s)")
    p.add_argument("--set", dest="sweep", action="append", default=[], metavar="NODE.input=V1[,V2...]",
                   help="override an input; several values sweep it (cartesian product over all --set)")
    p.add_argument("--concurrency", type=int, default=2, help="prompts kept queued on the server (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="skip tasks the manifest records as done")
    p.add_argument("--retry-for", type=float, default=120.0,
                   help="seconds to keep retrying while the server is down or restarting (default %(default)s)")
    p.add_argument("--baseline", help="setting label to compare speed against (default: the one with ratio 0)")
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="run the first task N times before the batch, untimed and unrecorded (model loading)")
    p.add_argument("--no-websocket", action="store_true", help="poll /history instead of following /ws")
    p.add_argument("--dry-run", action="store_true", help="validate and list the tasks; queue nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs else [{}]
    try:
        if args.dry_run:
            tasks = plan_batch(args.workflow, jobs, args.sweep)
            for t in tasks:
                print(f"{t.key}\t{t.setting_label}")
            print(f"{len(tasks)} tasks, nothing queued (dry run)")
            return 0
        result = run_batch(args.workflow, jobs, args.out, sweep=args.sweep, url=args.url,
                           concurrency=args.concurrency, resume=args.resume, retry_for=args.retry_for,
                           baseline=args.baseline, use_websocket=not args.no_websocket, warmup=args.warmup)
    except BatchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ComfyError as err:
        print(f"error: {err}\n(finished tasks are in the manifest; run again with --resume)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    print()
    print(result.table)
    if result.skipped:
        print(f"{result.skipped} tasks already done (--resume)")
    print(f"manifest: {result.manifest}")
    outputs = [p for r in result.records for p in r.get("outputs", [])]
    print(f"{len(outputs)} images written to {args.out}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
