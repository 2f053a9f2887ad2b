"""Progress on stderr: an updating line on a terminal, one line per task otherwise."""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.total = self.done_count = self.failed = 0

    def begin(self, total: int) -> None:
        self.total = total
        self._line(f"batch: {total} tasks")

    def step(self, key: str, value: int, maximum: int) -> None:
        if self.tty and self.enabled:
            bar = self._bar(self.done_count, self.total)
            job = self._bar(value, maximum, 10)
            self.stream.write(f"\r{bar} {self.done_count}/{self.total} | {key[:48]} {job} {value}/{maximum}\033[K")
            self.stream.flush()

    def done(self, key: str, status: str, wall: float | None, error: str | None) -> None:
        self.done_count += 1
        self.failed += status != "ok"
        tail = f"{wall:.1f}s" if wall is not None else (error or "")[:200]
        self._line(f"{self._bar(self.done_count, self.total)} {self.done_count}/{self.total} {status:<11} {key} {tail}")

    def note(self, text: str) -> None:
        self._line(f"note: {text}")

    def end(self) -> None:
        if self.tty and self.enabled:
            self.stream.write("\n")

    @staticmethod
    def _bar(value: int, maximum: int, width: int = 20) -> str:
        filled = int(width * value / maximum) if maximum else 0
        return "[" + "#" * filled + "-" * (width - filled) + "]"

    def _line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + text + ("\033[K" if self.tty else "") + "\n")
            self.stream.flush()
