"""Follow ComfyUI's ``/ws`` websocket in a background thread, reconnecting when it drops.

Uses the ``websocket-client`` package when installed; without it (or while the socket is
down) the runner simply polls ``/history``.
"""
from __future__ import annotations

import json
import queue
import threading
import time

try:
    import websocket  # websocket-client
except ImportError:  # pragma: no cover - exercised where the package is absent
    websocket = None


class EventStream:
    def __init__(self, url: str, on_note=None):
        self.url = url
        self.events: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._on_note = on_note
        self._thread = None
        self.available = websocket is not None

    def start(self) -> "EventStream":
        if self.available:
            self._thread = threading.Thread(target=self._run, name="comfy-ws", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.connected.clear()

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(self.url, timeout=5)
            except Exception as err:  # noqa: BLE001 - any failure means "poll for now, retry later"
                self._note(f"websocket unavailable ({err}); polling /history")
                self._stop.wait(delay)
                delay = min(delay * 2, 8.0)
                continue
            delay = 0.5
            self.connected.set()
            try:
                ws.settimeout(1.0)
                while not self._stop.is_set():
                    try:
                        message = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if isinstance(message, str) and message:
                        try:
                            data = json.loads(message)
                        except ValueError:
                            continue
                        self.events.put((data.get("type"), data.get("data") or {}, time.monotonic()))
            except Exception as err:  # noqa: BLE001
                if not self._stop.is_set():
                    self._note(f"websocket dropped ({err}); polling /history until it is back")
            finally:
                self.connected.clear()
                try:
                    ws.close()
                except Exception:  # noqa: BLE001
                    pass

    def _note(self, text: str) -> None:
        if self._on_note:
            self._on_note(text)

    def drain(self, wait: float):
        """Events that arrive within ``wait`` seconds (returns early once one has arrived)."""
        out = []
        try:
            out.append(self.events.get(timeout=wait))
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return out
