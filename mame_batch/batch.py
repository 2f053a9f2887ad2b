"""The Python API: everything the command line does, callable from scripts and notebooks.

    from mame_batch import run_batch
    result = run_batch("workflows/sd15_txt2img_mame.json", "prompts.jsonl", "out/",
                       sweep=["MaMe.ratio=0,0.5"], url="http://127.0.0.1:8188")
    print(result.table)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .client import ComfyClient
from .graph_edit import load_workflow
from .jobs import Job, expand, load_jobs, parse_sweep
from .manifest import Manifest
from .progress import Progress
from .runner import BatchRunner
from .summary import format_table, summarize
from .validate import check_tasks, check_tasks_on_any


@dataclass
class BatchResult:
    records: list[dict]
    skipped: int
    rows: list[dict]
    manifest: Path
    servers: list[dict] | None = None  # per-server figures of a multi-server batch

    @property
    def table(self) -> str:
        return format_table(self.rows)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]


def plan_batch(workflow, jobs, sweep=()):
    """Validate everything and return the tasks, without touching any server."""
    graph = workflow if isinstance(workflow, dict) else load_workflow(workflow)
    if isinstance(jobs, (str, Path)):
        job_list = load_jobs(jobs)
    else:
        job_list = [j if isinstance(j, Job) else _job(i, j) for i, j in enumerate(jobs or [{}])]
    return expand(graph, job_list, parse_sweep(list(sweep)))


def _job(index: int, data: dict) -> Job:
    from .jobs import _job_from_mapping

    return _job_from_mapping(index, dict(data), f"job {index}")


def run_batch(workflow, jobs, out_dir, sweep=(), url="http://127.0.0.1:8188", concurrency=2, resume=False,
              retry_for=120.0, baseline=None, progress: Progress | None = None, use_websocket=True,
              manifest_name="manifest.jsonl", warmup=0) -> BatchResult:
    tasks = plan_batch(workflow, jobs, sweep)
    out = Path(out_dir)
    manifest = Manifest(out / manifest_name)
    tasks, skipped = _resumable(tasks, manifest, resume)
    progress = progress or Progress()
    client = ComfyClient(url, retry_for=retry_for, on_retry=progress.note)
    check_tasks(tasks, client, progress.note)  # every value against the server's /object_info, before any work
    runner = BatchRunner(client, out, manifest, concurrency=concurrency, progress=progress, use_websocket=use_websocket)
    try:
        for n in range(warmup if tasks else 0):
            runner.warm_up(_uncached_variant(tasks[0].graph, n), f"warm-up {n + 1}/{warmup}")
        records = runner.run(tasks)
    finally:
        runner.close()
    all_records = [r for r in manifest.records() if r["status"] != "interrupted"] if resume else records
    return BatchResult(records, skipped, summarize(_latest(all_records), baseline), manifest.path)


def run_cluster_batch(workflow, jobs, out_dir, sweep=(), urls=(), concurrency=2, resume=False, retry_for=120.0,
                      baseline=None, progress: Progress | None = None, manifest_name="manifest.jsonl",
                      ray_address=None, start_servers=0, comfyui_dir=None, server_args=(), gpus_per_server=1.0,
                      python=None) -> BatchResult:
    """The batch over several servers through Ray (see :mod:`mame_batch.cluster`); ``result.servers``
    gives images per minute per server and overall."""
    from .cluster import ClusterRunner, stop_servers
    from .cluster import start_servers as start

    tasks = plan_batch(workflow, jobs, sweep)
    out = Path(out_dir)
    manifest = Manifest(out / manifest_name)
    tasks, skipped = _resumable(tasks, manifest, resume)
    progress = progress or Progress()
    # every value against the first given server that answers (servers Ray starts check when queued)
    if urls:
        check_tasks_on_any(tasks, [ComfyClient(u, timeout=10.0, retry_for=2.0) for u in urls], progress.note)
    servers = start(list(urls), concurrency, ray_address, start_servers, comfyui_dir, list(server_args),
                    gpus_per_server, python)
    progress.note("servers: " + ", ".join(s.name for s in servers) + (f"; {skipped} tasks already done" if skipped else ""))
    runner = ClusterRunner(servers, out, manifest, concurrency=concurrency, retry_for=retry_for, progress=progress)
    try:
        records = runner.run(tasks)
    finally:
        stop_servers(servers)
    all_records = [r for r in manifest.records() if r["status"] != "interrupted"] if resume else records
    result = BatchResult(records, skipped, summarize(_latest(all_records), baseline), manifest.path)
    result.servers = runner.server_rows()
    return result


def _resumable(tasks: list, manifest: Manifest, resume: bool) -> tuple[list, int]:
    """The tasks still to run, and how many the manifest already records as done."""
    if resume:
        done = manifest.done_keys()
        return [t for t in tasks if t.key not in done], sum(t.key in done for t in tasks)
    if manifest.path.exists() and manifest.records():
        from .errors import BatchInputError

        raise BatchInputError(f"{manifest.path} already records a batch; use --resume to continue it, or another --out")
    return tasks, 0


def _uncached_variant(graph: dict, n: int) -> dict:
    """The graph with its sampler seeds moved, so ComfyUI cannot answer a later identical
    task from its cache (which would make that task look instant)."""
    import copy

    graph = copy.deepcopy(graph)
    for node in graph.values():
        for name in ("seed", "noise_seed"):
            value = node["inputs"].get(name)
            if "positive" in node["inputs"] and isinstance(value, int):
                node["inputs"][name] = (value + 7919 * (n + 1)) % (2**63)
    return graph


def _latest(records: list[dict]) -> list[dict]:
    """One record per task key: the last one written (a resumed task replaces its failure)."""
    by_key = {}
    for r in records:
        by_key[r["key"]] = r
    return list(by_key.values())
