"""mame-batch: render a list of jobs through a ComfyUI server's HTTP API."""
from __future__ import annotations

import argparse
import sys

from .batch import plan_batch, run_batch, run_cluster_batch
from .client import ComfyClient, ComfyError
from .cluster import format_servers, read_servers_file
from .errors import BatchInputError
from .progress import Progress
from .validate import check_tasks

DEFAULT_URL = "http://127.0.0.1:8188"

EPILOG = """examples:
  mame-batch workflows/sd15_txt2img_mame.json prompts.jsonl --out out/ --set MaMe.ratio=0,0.3,0.5
  mame-batch wf.json jobs.csv --out out/ --resume          # finish a batch that was stopped
  mame-batch wf.json jobs.jsonl --out out/ --dry-run        # check everything, queue nothing
  mame-batch wf.json jobs.jsonl --out out/ --url http://gpu0:8188 --url http://gpu1:8188   # several servers (Ray)
  mame-batch wf.json jobs.jsonl --out out/ --ray auto --start-servers 8 --comfyui /opt/ComfyUI
                                                           # one ComfyUI per GPU of a Ray cluster

jobs file: JSONL (one object a line) or CSV (header row) with any of
  prompt, negative, seed, width, height, steps, and NODE.input columns (e.g. MaMe.ratio).
NODE is a node id, a class_type (every node of it) or a node title."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mame-batch", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Save (API Format))")
    p.add_argument("jobs", nargs="?", help="jobs file (.jsonl or .csv); omit to run the workflow once per sweep setting")
    p.add_argument("--out", required=True, help="output folder for images and manifest.jsonl")
    p.add_argument("--url", action="append", default=[], dest="urls",
                   help="ComfyUI server (default http://127.0.0.1:8188); repeat it to spread the batch over several "
                        "servers with Ray (pip install 'comfyui-mame[cluster]')")
    p.add_argument("--servers", metavar="FILE", help="file of server URLs, one a line (several servers: Ray)")
    p.add_argument("--ray", metavar="ADDRESS", help="Ray cluster to use ('auto' for the one this machine is in); "
                                                     "default: a local Ray instance when there are several servers")
    p.add_argument("--start-servers", type=int, default=0, metavar="N",
                   help="have Ray start N ComfyUI servers, each on its own GPU (needs --comfyui)")
    p.add_argument("--comfyui", metavar="DIR", help="ComfyUI folder on every Ray node, for --start-servers")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for each started ComfyUI, e.g. --server-arg=--cpu (repeatable)")
    p.add_argument("--server-python", metavar="PATH",
                   help="Python that runs each started ComfyUI (default: the Ray worker's own)")
    p.add_argument("--gpus-per-server", type=float, default=1.0,
                   help="GPUs Ray reserves for each started server (default %(default)s; 0 for CPU servers)")
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
    p.add_argument("--dry-run", action="store_true",
                   help="validate and list the tasks; queue nothing (with --url, values are checked against that server)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs else [{}]
    try:
        urls = list(args.urls) + (read_servers_file(args.servers) if args.servers else [])
        cluster = len(urls) > 1 or args.servers or args.ray or args.start_servers
        if cluster and (args.warmup or args.no_websocket):
            raise BatchInputError("--warmup and --no-websocket apply to a single server; a multi-server batch "
                                  "polls each server and has no warm-up")
        if args.dry_run:
            tasks = plan_batch(args.workflow, jobs, args.sweep)
            if urls:  # a server to ask: check every value against its /object_info too
                check_tasks(tasks, ComfyClient(urls[0], retry_for=args.retry_for), Progress().note)
            for t in tasks:
                print(f"{t.key}\t{t.setting_label}")
            print(f"{len(tasks)} tasks, nothing queued (dry run)")
            return 0
        if cluster:
            result = run_cluster_batch(args.workflow, jobs, args.out, sweep=args.sweep, urls=urls,
                                       concurrency=args.concurrency, resume=args.resume, retry_for=args.retry_for,
                                       baseline=args.baseline, ray_address=args.ray, start_servers=args.start_servers,
                                       comfyui_dir=args.comfyui, server_args=args.server_arg,
                                       gpus_per_server=args.gpus_per_server, python=args.server_python)
        else:
            result = run_batch(args.workflow, jobs, args.out, sweep=args.sweep, url=(urls or [DEFAULT_URL])[0],
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
    if result.servers:
        print()
        print(format_servers(result.servers))
    if result.skipped:
        print(f"{result.skipped} tasks already done (--resume)")
    print(f"manifest: {result.manifest}")
    outputs = [p for r in result.records for p in r.get("outputs", [])]
    print(f"{len(outputs)} images written to {args.out}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
