"""A real HTTP server on loopback that speaks the part of ComfyUI's API the batch client
uses, and misbehaves on cue: drops connections, answers 503, starts late, forgets prompts
(as a restarted ComfyUI does), finishes a prompt between two reads, rejects or fails prompts.
It has no /ws, so clients poll."""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FlakyComfy:
    def __init__(self, port: int = 0, prompt_faults=(), polls_until_done: int = 2):
        self.prompt_faults = list(prompt_faults)  # per POST /prompt: "drop", 503 or None
        self.polls_until_done = polls_until_done
        self.prompts: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.forgotten: set[str] = set()
        self.forget_markers_used: set[str] = set()
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = None

    def start(self) -> "FlakyComfy":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(f"POST {self.path}")
                if self.path == "/prompt":
                    fault = fake.prompt_faults.pop(0) if fake.prompt_faults else None
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if fault == 503:
                        return self._send(503, {"error": "restarting"})
                    graph = body["prompt"]
                    marker = str(graph.get("1", {}).get("inputs", {}).get("marker"))
                    if marker == "invalid":
                        errors = {"1": {"errors": [{"message": "Value not in list", "details": "marker: 'invalid'"}],
                                        "class_type": "SaveImage"}}
                        return self._send(400, {"error": {"message": "Prompt outputs failed validation"},
                                                "node_errors": errors})
                    pid = uuid.uuid4().hex
                    with fake.lock:
                        fake.prompts[pid] = graph
                        fake.polls[pid] = 0
                        if marker.startswith("forget") and marker not in fake.forget_markers_used:
                            fake.forget_markers_used.add(marker)
                            fake.forgotten.add(pid)
                    return self._send(200, {"prompt_id": pid, "number": len(fake.prompts), "node_errors": {}})
                return self._send(200, {})

            def do_GET(self):
                fake.requests.append(f"GET {self.path}")
                if self.path.startswith("/history/"):
                    pid = self.path.rsplit("/", 1)[1]
                    with fake.lock:
                        if pid not in fake.prompts or pid in fake.forgotten:
                            return self._send(200, {})
                        fake.polls[pid] += 1
                        if fake.polls[pid] < fake.polls_until_done:
                            return self._send(200, {})
                    marker = str(fake.prompts[pid]["1"]["inputs"].get("marker"))
                    if marker == "fail":
                        status = {"status_str": "error", "completed": False, "messages": [
                            ["execution_error", {"node_id": "1", "node_type": "SaveImage",
                                                 "exception_type": "RuntimeError", "exception_message": "boom"}]]}
                        return self._send(200, {pid: {"status": status, "outputs": {}}})
                    image = {"filename": f"{pid}.png", "subfolder": "", "type": "output"}
                    status = {"status_str": "success", "completed": True, "messages": []}
                    return self._send(200, {pid: {"status": status, "outputs": {"1": {"images": [image]}}}})
                if self.path == "/queue":
                    with fake.lock:
                        # "finish-between-reads": the run ends just after a /history read said
                        # "not yet", so /queue no longer lists it (a real ComfyUI sends
                        # execution_success before its history entry exists)
                        running = [[i, pid] for i, pid in enumerate(fake.prompts)
                                   if pid not in fake.forgotten and fake.polls[pid] < fake.polls_until_done
                                   and fake.prompts[pid]["1"]["inputs"].get("marker") != "finish-between-reads"]
                    return self._send(200, {"queue_running": running[:1], "queue_pending": running[1:]})
                if self.path == "/system_stats":
                    return self._send(200, {"system": {"comfyui_version": "flaky"}, "devices": []})
                if self.path.startswith("/view"):
                    return self._send(200, b"PNG-" + self.path.encode(), "image/png")
                return self._send(404, {"error": "not found"})

        return Handler
