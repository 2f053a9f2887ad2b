"""A small, dependency-free client for ComfyUI's HTTP API (standard library only)."""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ComfyError(RuntimeError):
    """The server could not be reached or answered something unexpected."""


class PromptRejected(ComfyError):
    """``POST /prompt`` answered 400: the graph failed validation."""

    def __init__(self, error: dict | str, node_errors: dict):
        self.error = error
        self.node_errors = node_errors or {}
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        details = "; ".join(
            f"node {node}: " + ", ".join(f"{e.get('message')} ({e.get('details')})" for e in info.get("errors", []))
            for node, info in self.node_errors.items()
        )
        super().__init__(f"prompt rejected: {message}" + (f" - {details}" if details else ""))


class ExecutionFailed(ComfyError):
    """The prompt was queued but failed while running."""

    def __init__(self, prompt_id: str, messages: list):
        self.prompt_id = prompt_id
        self.messages = messages
        errors = [data for kind, data in messages if kind == "execution_error" and isinstance(data, dict)]
        if errors:
            e = errors[-1]
            what = f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_type')}: {e.get('exception_message')}"
        else:
            what = "no error message"
        self.summary = what
        super().__init__(f"prompt {prompt_id} failed in {what}")


RETRYABLE_STATUS = {502, 503, 504}


def _is_transient(err: Exception) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in RETRYABLE_STATUS
    return isinstance(err, (urllib.error.URLError, ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError))


class ComfyClient:
    """ComfyUI's HTTP routes. Transient failures (server down, restarting, dropped
    connections, 502/503/504) are retried with exponential backoff for ``retry_for`` seconds."""

    def __init__(self, url: str = "http://127.0.0.1:8188", timeout: float = 30.0, client_id: str | None = None,
                 retry_for: float = 0.0, on_retry=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.retry_for = retry_for
        self.on_retry = on_retry
        self.retries = 0

    # plain HTTP -----------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.retry_for
        delay = 0.25
        while True:
            request = urllib.request.Request(
                self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except Exception as err:  # noqa: BLE001 - sorted into transient or not just below
                if not _is_transient(err):
                    raise
                if time.monotonic() + delay > deadline:
                    raise ComfyError(f"{method} {self.url}{path} failed: {err}") from err
                self.retries += 1
                if self.on_retry:
                    self.on_retry(f"{method} {path}: {err}; retrying in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def get_json(self, path: str):
        return json.loads(self._request("GET", path) or b"null")

    # ComfyUI routes ----------------------------------------------------------------------

    def queue(self, graph: dict) -> str:
        """Queue an API-format graph; returns its prompt id or raises :class:`PromptRejected`."""
        try:
            answer = json.loads(self._request("POST", "/prompt", {"prompt": graph, "client_id": self.client_id}))
        except urllib.error.HTTPError as err:
            if err.code == 400:
                try:
                    payload = json.loads(err.read() or b"{}")
                except ValueError:
                    payload = {"error": "HTTP 400 with an unreadable body"}
                raise PromptRejected(payload.get("error", "invalid prompt"), payload.get("node_errors", {})) from None
            raise
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return (self.get_json(f"/history/{urllib.parse.quote(prompt_id)}") or {}).get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 900.0, poll: float = 0.25) -> dict:
        """Poll ``/history`` until the prompt is done; raises :class:`ExecutionFailed` on error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.history(prompt_id)
            if record is not None:
                status = record.get("status") or {}
                if status.get("status_str") == "error":
                    raise ExecutionFailed(prompt_id, status.get("messages", []))
                return record
            time.sleep(poll)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def run(self, graph: dict, timeout: float = 900.0) -> dict:
        return self.wait(self.queue(graph), timeout=timeout)

    @staticmethod
    def output_images(record: dict) -> list[dict]:
        """Every image a finished prompt produced, each with its node id."""
        images = []
        for node, output in (record.get("outputs") or {}).items():
            for image in output.get("images", []):
                images.append({**image, "node": node})
        return images

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode(
            {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image.get("type", "output")}
        )
        return self._request("GET", f"/view?{query}")

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def interrupt(self) -> None:
        self._request("POST", "/interrupt", {})

    def delete_queued(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", {"delete": list(prompt_ids)})

    def queue_state(self) -> tuple[set[str], set[str]]:
        """Prompt ids (running, pending) on the server now."""
        state = self.get_json("/queue") or {}
        ids = lambda rows: {row[1] for row in rows if len(row) > 1}  # noqa: E731
        return ids(state.get("queue_running", [])), ids(state.get("queue_pending", []))

    def ws_url(self) -> str:
        base = self.url.replace("https://", "wss://").replace("http://", "ws://")
        return f"{base}/ws?clientId={urllib.parse.quote(self.client_id)}"
