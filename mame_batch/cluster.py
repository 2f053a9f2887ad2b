"""Batches across many ComfyUI servers, placed and supervised by Ray (``pip install comfyui-mame[cluster]``).

One Ray actor owns each server: either a running server given by URL (:class:`ServerWorker`), or
one the actor starts itself on a GPU Ray assigns to it (:class:`ManagedServerWorker`). This
driver keeps up to ``concurrency`` tasks on each server, so a faster server takes more. A task
whose server dies or stops answering goes back to the front of the queue for any server; the
dead server is probed and comes back if it answers within ``retry_for`` seconds, else it is
dropped. The batch fails with :class:`NoServerLeft` only when every server is gone.

Only the driver writes: every image and every manifest line, so nothing is lost, duplicated or
overwritten whichever worker rendered it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .client import ComfyError
from .errors import BatchInputError
from .jobs import Task
from .manifest import Manifest, task_record, unused_path
from .progress import Progress
from .worker import ManagedServerWorker, ServerWorker


class NoServerLeft(ComfyError):
    """Every server of the batch died and none came back within ``retry_for``."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise BatchInputError("batches over several servers need Ray: pip install 'comfyui-mame[cluster]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``auto`` for the one this machine belongs to), or start a
    local instance for this batch when ``address`` is None or ``local``."""
    ray = import_ray()
    if ray.is_initialized():
        return
    package_root = str(Path(__file__).resolve().parent.parent)
    if address in (None, "local"):
        # A local instance runs workers from this interpreter; they import mame_batch from here.
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": package_root}})
    else:
        # Cluster nodes import mame_batch from their own install of comfyui-mame[cluster].
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def url_actors(urls: list[str], concurrency: int):
    ray = import_ray()
    actor = ray.remote(num_cpus=0, max_concurrency=concurrency + 2)(ServerWorker)
    return [actor.remote(url) for url in urls]


def managed_actors(count: int, comfyui_dir: str, server_args: list[str], gpus_per_server: float,
                   concurrency: int, python: str | None = None):
    """Start ``count`` actors, each launching its own ComfyUI with the GPU(s) Ray gives it."""
    ray = import_ray()
    actor = ray.remote(num_cpus=0 if gpus_per_server else 1, num_gpus=gpus_per_server,
                       max_concurrency=concurrency + 2)(ManagedServerWorker)
    return [actor.remote(comfyui_dir, server_args, python=python) for _ in range(count)]


@dataclass
class Server:
    actor: object
    name: str = "?"
    inflight: dict = field(default_factory=dict)  # ObjectRef -> (Task, attempt)
    down_since: float | None = None
    dropped: bool = False
    probe: object = None
    last_probe: float = 0.0
    last_finish: float = 0.0
    images: int = 0
    tasks: int = 0

    @property
    def usable(self) -> bool:
        return not self.dropped and self.down_since is None


@dataclass
class ClusterRunner:
    servers: list[Server]
    out_dir: Path
    manifest: Manifest
    concurrency: int = 2
    retry_for: float = 120.0
    progress: Progress = field(default_factory=Progress)
    max_attempts: int = 5
    probe_every: float = 1.0

    def run(self, tasks: list[Task]) -> list[dict]:
        ray = import_ray()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.started = time.time()
        pending: deque = deque((task, 1) for task in tasks)
        self.progress.begin(len(tasks))
        while pending or any(s.inflight for s in self.servers):
            for server in self.servers:
                while server.usable and pending and len(server.inflight) < self.concurrency:
                    task, attempt = pending.popleft()
                    server.inflight[server.actor.render.remote(task.graph)] = (task, attempt)
            self._probe_down_servers()
            if pending and all(s.dropped for s in self.servers):
                raise NoServerLeft(f"no ComfyUI server left for the {len(pending)} remaining tasks: "
                                   + "; ".join(f"{s.name} stopped answering" for s in self.servers))
            waiting = {ref: s for s in self.servers for ref in s.inflight}
            waiting.update({s.probe: s for s in self.servers if s.probe is not None})
            if not waiting:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=0.5)
            for ref in ready:
                server = waiting[ref]
                if ref is server.probe or ref == server.probe:
                    self._probe_answered(server, ref)
                else:
                    self._task_answered(server, ref, pending)
        self.ended = time.time()
        self.progress.end()
        return self.records

    # ---------------------------------------------------------------------------------

    def _task_answered(self, server: Server, ref, pending: deque) -> None:
        ray = import_ray()
        task, attempt = server.inflight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as err:  # the actor itself died (its node is gone)
            result = {"status": "server_down", "error": f"worker lost: {type(err).__name__}"}
        if result["status"] == "server_down":
            self._mark_down(server, result["error"])
            if attempt >= self.max_attempts:
                self._record(server, task, result, "failed", attempt,
                             error=f"tried {attempt} times, each time the server went away: {result['error']}")
            else:
                self.progress.note(f"{task.key}: {server.name} went away mid-task; queuing it for any server")
                pending.appendleft((task, attempt + 1))
            return
        if result["status"] != "ok":
            self._record(server, task, result, result["status"], attempt)
            return
        paths = []
        for i, (suffix, data) in enumerate(result["images"]):
            target = unused_path(self.out_dir / f"{task.key}_{i:02d}{suffix}")
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(data)
            tmp.rename(target)
            paths.append(str(target))
        server.images += len(paths)
        self._record(server, task, result, "ok", attempt, outputs=paths)

    def _record(self, server: Server, task: Task, result: dict, status: str, attempt: int, **extra) -> None:
        now = time.time()
        server.tasks += status == "ok"
        start = max(result.get("queued_at") or now, server.last_finish)
        if status != "rejected":
            server.last_finish = now
        details = {key: result[key] for key in ("error", "node_errors") if result.get(key)}
        details.update(extra)  # the caller's error, where given, says more than the worker's
        record = task_record(task, result.get("prompt_id"), status, now - start, server=server.name,
                             attempts=attempt, **details)
        self.manifest.append(record)
        self.records.append(record)
        self.progress.done(f"{task.key} @ {server.name}", status, record["wall_time"], record.get("error"))

    def _mark_down(self, server: Server, why: str) -> None:
        if server.down_since is None and not server.dropped:
            server.down_since = time.monotonic()
            self.progress.note(f"{server.name} is not answering ({why}); probing it for {self.retry_for:.0f}s")

    def _probe_down_servers(self) -> None:
        now = time.monotonic()
        for server in self.servers:
            if server.down_since is None or server.dropped or server.probe is not None:
                continue
            if now - server.down_since > self.retry_for:
                server.dropped = True
                self.progress.note(f"{server.name} did not come back within {self.retry_for:.0f}s; dropped")
            elif now - server.last_probe >= self.probe_every:
                server.last_probe = now
                server.probe = server.actor.ping.remote()

    def _probe_answered(self, server: Server, ref) -> None:
        ray = import_ray()
        server.probe = None
        try:
            alive = ray.get(ref)
        except ray.exceptions.RayError:
            alive = False
        if alive and server.down_since is not None:
            server.down_since = None
            self.progress.note(f"{server.name} is back; using it again")

    def server_rows(self) -> list[dict]:
        minutes = max(self.ended - self.started, 1e-9) / 60
        rows = [{"server": s.name, "tasks": s.tasks, "images": s.images, "images_per_minute": s.images / minutes,
                 "state": "dropped" if s.dropped else ("down" if s.down_since is not None else "up")}
                for s in self.servers]
        total = sum(s.images for s in self.servers)
        rows.append({"server": "all", "tasks": sum(s.tasks for s in self.servers), "images": total,
                     "images_per_minute": total / minutes, "state": f"{minutes * 60:.1f}s wall"})
        return rows


def format_servers(rows: list[dict]) -> str:
    header = f"{'server':<40} {'tasks':>6} {'images':>7} {'images/min':>11}  state"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['server'][:40]:<40} {r['tasks']:>6} {r['images']:>7} {r['images_per_minute']:>11.2f}  {r['state']}")
    return "\n".join(lines)


def start_servers(urls: list[str], concurrency: int, ray_address: str | None = None, managed: int = 0,
                  comfyui_dir: str | None = None, server_args: list[str] = (), gpus_per_server: float = 1.0,
                  python: str | None = None) -> list[Server]:
    """Connect to Ray and create one actor per server; returns them named and answering."""
    ray = import_ray()
    if managed and not comfyui_dir:
        raise BatchInputError("--start-servers needs --comfyui DIR: the ComfyUI folder (with comfyui-mame "
                              "in custom_nodes/) on every node")
    if not urls and not managed:
        raise BatchInputError("no server: give --url (repeatable), --servers FILE or --start-servers N")
    connect(ray_address)
    actors = url_actors(urls, concurrency)
    if managed:
        actors += managed_actors(managed, comfyui_dir, list(server_args), gpus_per_server, concurrency, python)
    try:
        names = ray.get([a.name.remote() for a in actors])
    except ray.exceptions.RayError as err:
        for a in actors:
            ray.kill(a)
        raise ComfyError(f"a server worker could not start: {err}") from None
    return [Server(actor=a, name=n) for a, n in zip(actors, names, strict=True)]


def stop_servers(servers: list[Server]) -> None:
    ray = import_ray()
    refs = [s.actor.shutdown.remote() for s in servers]
    try:
        ray.get(refs, timeout=60)
    except ray.exceptions.RayError:
        pass
    for s in servers:
        ray.kill(s.actor)


def read_servers_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise BatchInputError(f"servers file not found: {path}") from None
    urls = [line.split("#", 1)[0].strip() for line in lines]
    urls = [u for u in urls if u]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise BatchInputError(f"{path}: each line must be a server URL like http://127.0.0.1:8188; got {bad[0]!r}")
    if not urls:
        raise BatchInputError(f"{path} lists no server")
    return urls
