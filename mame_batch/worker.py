"""One ComfyUI server as a worker: render a task on it and hand the images back.

These classes become Ray actors in :mod:`mame_batch.cluster` (one actor owns one server); they
never write files. Every outcome is returned as a plain dict, so nothing depends on pickling
exception classes across processes:

- ``{"status": "ok", "prompt_id", "images": [(suffix, bytes)], "queued_at", "finished_at"}``
- ``{"status": "rejected" | "failed", "error", ...}``: the task's own fault, not the server's
- ``{"status": "server_down", "error"}``: the server died, stopped answering or forgot the prompt;
  the driver runs the task again elsewhere.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected


class ServerWorker:
    """Renders tasks on a running ComfyUI server at ``url``."""

    def __init__(self, url: str, retry_for: float = 3.0, job_timeout: float = 3600.0, poll: float = 0.25):
        self.url = url.rstrip("/")
        self.client = ComfyClient(self.url, timeout=30.0, retry_for=retry_for)
        self.job_timeout = job_timeout
        self.poll = poll

    def name(self) -> str:
        return self.url

    def ping(self) -> bool:
        probe = ComfyClient(self.url, timeout=5.0)
        try:
            probe.get_json("/system_stats")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False

    def render(self, graph: dict) -> dict:
        queued_at = time.time()
        try:
            prompt_id = self.client.queue(graph)
        except PromptRejected as err:
            return {"status": "rejected", "error": str(err), "node_errors": err.node_errors, "queued_at": queued_at}
        except Exception as err:  # noqa: BLE001 - connection refused, reset, timeout, HTTP 5xx
            return {"status": "server_down", "error": f"queueing failed: {err}"}
        try:
            return self._follow(prompt_id, queued_at)
        except Exception as err:  # noqa: BLE001
            return {"status": "server_down", "error": f"lost contact while rendering: {err}", "prompt_id": prompt_id}

    def _follow(self, prompt_id: str, queued_at: float) -> dict:
        deadline = time.monotonic() + self.job_timeout
        last_queue_check = time.monotonic()
        while time.monotonic() < deadline:
            record = self.client.history(prompt_id)
            if record is not None:
                status = record.get("status") or {}
                if status.get("status_str") == "error" or (status and not status.get("completed", True)):
                    failure = ExecutionFailed(prompt_id, status.get("messages", []))
                    return {"status": "failed", "error": failure.summary, "prompt_id": prompt_id,
                            "queued_at": queued_at}
                images = [(Path(image["filename"]).suffix or ".png", self.client.view(image))
                          for image in ComfyClient.output_images(record)]
                return {"status": "ok", "prompt_id": prompt_id, "images": images, "queued_at": queued_at,
                        "finished_at": time.time()}
            if time.monotonic() - last_queue_check > 2.0:
                last_queue_check = time.monotonic()
                running, pending = self.client.queue_state()
                if prompt_id not in running | pending and self.client.history(prompt_id) is None:
                    return {"status": "server_down", "prompt_id": prompt_id,
                            "error": "the server no longer knows the prompt (it restarted)"}
            time.sleep(self.poll)
        return {"status": "failed", "error": f"did not finish within {self.job_timeout:.0f}s", "prompt_id": prompt_id,
                "queued_at": queued_at}

    def shutdown(self) -> None:
        """Nothing to stop: the server belongs to whoever started it."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedServerWorker(ServerWorker):
    """Starts the ComfyUI it owns (``python main.py`` in ``comfyui_dir``) and renders on it.

    As a Ray actor with ``num_gpus=1`` it sees only the GPU Ray assigned to it
    (``CUDA_VISIBLE_DEVICES``), which the server inherits. The server listens on loopback of
    the actor's node: only its own actor talks to it."""

    def __init__(self, comfyui_dir: str, server_args: list[str] | None = None, python: str | None = None,
                 start_timeout: float = 300.0, **kwargs):
        port = _free_port()
        self.work_dir = Path(tempfile.mkdtemp(prefix="mame-batch-server-"))
        self.log_path = self.work_dir / "comfyui.log"
        log = open(self.log_path, "ab")
        args = [python or sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port),
                "--disable-auto-launch", "--output-directory", str(self.work_dir / "output"),
                "--temp-directory", str(self.work_dir / "temp"), *(server_args or [])]
        self.process = subprocess.Popen(args, cwd=comfyui_dir, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        super().__init__(f"http://127.0.0.1:{port}", **kwargs)
        self.label = f"{socket.gethostname()}:{port}"
        deadline = time.monotonic() + start_timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI in {comfyui_dir} exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.shutdown()
                raise TimeoutError(f"ComfyUI in {comfyui_dir} did not answer within {start_timeout:.0f}s")
            time.sleep(0.5)

    def name(self) -> str:
        return self.label

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def shutdown(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen | None, grace: float = 20.0) -> None:
    """Ask a server process to exit, and kill it if it has not within ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


__all__ = ["ComfyError", "ManagedServerWorker", "ServerWorker", "stop_process"]
