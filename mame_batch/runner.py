"""Run tasks against a ComfyUI server: queue with bounded concurrency, follow, download, record."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected
from .events import EventStream
from .jobs import Task
from .manifest import Manifest, task_record, unused_path
from .progress import Progress


@dataclass
class InFlight:
    task: Task
    prompt_id: str
    queued_at: float
    started_at: float | None = None
    attempts: int = 1
    step: tuple[int, int] | None = None
    announced: bool = False


@dataclass
class BatchRunner:
    client: ComfyClient
    out_dir: Path
    manifest: Manifest
    concurrency: int = 2
    progress: Progress = field(default_factory=Progress)
    use_websocket: bool = True
    poll_interval: float = 1.0
    requeue_limit: int = 2
    job_timeout: float = 3600.0
    _stream: EventStream | None = field(default=None, init=False, repr=False)

    def run(self, tasks: list[Task]) -> list[dict]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pending = list(tasks)
        inflight: dict[str, InFlight] = {}
        records: list[dict] = []
        self._last_finish = time.monotonic()
        stream = self._events()
        self.progress.begin(len(tasks))
        last_poll = 0.0
        try:
            while pending or inflight:
                while pending and len(inflight) < self.concurrency:
                    task = pending.pop(0)
                    entry = self._submit(task, records)
                    if entry:
                        inflight[entry.prompt_id] = entry
                finished = set()
                for kind, data, at in stream.drain(0.2 if stream.connected.is_set() else 0.05):
                    entry = inflight.get(data.get("prompt_id"))
                    if entry is None:
                        continue
                    if kind == "execution_start":
                        entry.started_at = at
                    if kind == "progress":
                        entry.step = (data.get("value", 0), data.get("max", 0))
                        self.progress.step(entry.task.key, *entry.step)
                    elif kind == "execution_start":
                        self.progress.running(entry.task.key)
                    ended = kind in ("execution_error", "execution_success", "execution_interrupted")
                    if ended or (kind == "executing" and data.get("node") is None):
                        finished.add(entry.prompt_id)
                interval = self.poll_interval * (3 if stream.connected.is_set() else 1)
                if finished or time.monotonic() - last_poll >= interval:
                    last_poll = time.monotonic()
                    self._poll(inflight, records)
                if not stream.connected.is_set() and not finished:
                    time.sleep(min(self.poll_interval, 0.25))
        except KeyboardInterrupt:
            self._cancel(inflight, pending, records)
            raise
        finally:
            self.close()
            self.progress.end()
        return records

    def _events(self) -> EventStream:
        """The one ``/ws`` stream of this runner, shared by the warm-up and the batch: ComfyUI keeps
        one socket per client id, and a second connection's close would drop the first one's."""
        if self._stream is None:
            self._stream = EventStream(self.client.ws_url(), on_note=self.progress.note)
            if self.use_websocket:
                self._stream.start()
                self._stream.connected.wait(2.0)  # so the first task's execution_start is not missed
        return self._stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def warm_up(self, graph: dict, label: str = "warm-up") -> None:
        """Run ``graph`` once, untimed and unrecorded (it loads the models), with a line when it
        starts and when it ends and its sampling steps on the progress bar in between."""
        started = time.monotonic()
        self.progress.note(f"{label}: running the first task once, untimed and unrecorded (it loads the models)")
        stream = self._events()
        prompt_id = self.client.queue(graph)
        last_poll = 0.0
        try:
            while True:
                for kind, data, _ in stream.drain(0.5 if stream.connected.is_set() else 0.05):
                    if kind == "progress" and data.get("prompt_id", prompt_id) == prompt_id:
                        self.progress.step(label, data.get("value", 0), data.get("max", 0))
                if time.monotonic() - last_poll >= self.poll_interval:
                    last_poll = time.monotonic()
                    record = self.client.history(prompt_id)
                    if record is not None:
                        status = record.get("status") or {}
                        if status.get("status_str") == "error":
                            raise ExecutionFailed(prompt_id, status.get("messages", []))
                        break
                if time.monotonic() - started > self.job_timeout:
                    raise ComfyError(f"{label}: prompt {prompt_id} did not finish within {self.job_timeout:.0f}s")
                if not stream.connected.is_set():
                    time.sleep(0.25)
        except KeyboardInterrupt:
            try:
                self.client.interrupt()
            except ComfyError:
                pass
            raise
        self.progress.note(f"{label}: done in {time.monotonic() - started:.0f}s")

    # ---------------------------------------------------------------------------------

    def _submit(self, task: Task, records: list, attempts: int = 1) -> InFlight | None:
        queued_at = time.monotonic()
        try:
            prompt_id = self.client.queue(task.graph)
        except PromptRejected as err:
            self._record(records, task, None, "rejected", queued_at, error=str(err), node_errors=err.node_errors)
            return None
        return InFlight(task, prompt_id, queued_at, attempts=attempts)

    def _poll(self, inflight: dict, records: list) -> None:
        lost = []
        for prompt_id, entry in list(inflight.items()):
            record = self.client.history(prompt_id)
            if record is None:
                if time.monotonic() - entry.queued_at > self.job_timeout:
                    del inflight[prompt_id]
                    self._record(records, entry.task, prompt_id, "failed", entry.queued_at, error="timed out")
                else:
                    lost.append(entry)
                continue
            del inflight[prompt_id]
            self._finish(entry, record, records)
        if not self.use_websocket and inflight:
            running, _ = self.client.queue_state()
            for prompt_id in running & set(inflight):
                if not inflight[prompt_id].announced:  # /history has no step counts: say it is running
                    inflight[prompt_id].announced = True
                    self.progress.running(inflight[prompt_id].task.key, polling=True)
        if lost:
            running, queued = self.client.queue_state()
            for entry in lost:
                if entry.prompt_id in running or entry.prompt_id in queued:
                    continue
                # It may have ended between the two reads (ComfyUI sends execution_success before it
                # writes the history entry): only a prompt absent from the queue *and then* from the
                # history is lost.
                del inflight[entry.prompt_id]
                record = self.client.history(entry.prompt_id)
                if record is not None:
                    self._finish(entry, record, records)
                    continue
                # Neither done nor queued: the server restarted and forgot it.
                if entry.attempts <= self.requeue_limit:
                    self.progress.note(f"{entry.task.key}: the server lost prompt {entry.prompt_id}; queuing it again")
                    again = self._submit(entry.task, records, entry.attempts + 1)
                    if again:
                        inflight[again.prompt_id] = again
                else:
                    self._record(records, entry.task, entry.prompt_id, "failed", entry.queued_at,
                                 error="lost by the server after restarts")

    def _finish(self, entry: InFlight, history: dict, records: list) -> None:
        status = history.get("status") or {}
        if status.get("status_str") == "error" or (status and not status.get("completed", True)):
            failure = ExecutionFailed(entry.prompt_id, status.get("messages", []))
            self._record(records, entry.task, entry.prompt_id, "failed", entry.queued_at, error=failure.summary,
                         started_at=entry.started_at)
            return
        paths = []
        for i, image in enumerate(ComfyClient.output_images(history)):
            data = self.client.view(image)
            suffix = Path(image["filename"]).suffix or ".png"
            target = unused_path(self.out_dir / f"{entry.task.key}_{i:02d}{suffix}")
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(data)
            tmp.rename(target)
            paths.append(str(target))
        self._record(records, entry.task, entry.prompt_id, "ok", entry.queued_at, outputs=paths,
                     started_at=entry.started_at)

    def _record(self, records, task, prompt_id, status, queued_at, started_at=None, **extra) -> None:
        now = time.monotonic()
        start = started_at if started_at is not None else max(queued_at, self._last_finish)
        self._last_finish = now if status != "rejected" else self._last_finish
        record = task_record(task, prompt_id, status, now - start, **extra)
        self.manifest.append(record)
        records.append(record)
        self.progress.done(task.key, status, record.get("wall_time"), record.get("error"))

    def _cancel(self, inflight: dict, pending: list, records: list) -> None:
        """Ctrl-C: take our queued prompts off the server and stop ours if it is running."""
        ids = list(inflight)
        try:
            running, _ = self.client.queue_state()
            self.client.delete_queued(ids)
            if running & set(ids):
                self.client.interrupt()
        except ComfyError as err:
            self.progress.note(f"could not cancel on the server: {err}")
        for entry in inflight.values():
            self._record(records, entry.task, entry.prompt_id, "interrupted", entry.queued_at)
        self.progress.note(f"interrupted: {len(inflight)} in flight cancelled, {len(pending)} not started; "
                           "run again with --resume to finish")
