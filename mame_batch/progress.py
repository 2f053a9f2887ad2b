"""Progress on stderr: an updating line on a terminal, one line per task otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, enabled: bool = True, log_every: float = 5.0):
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self._last_step: tuple = ("", -1, float("-inf"))
        self.enabled = enabled
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.total = self.done_count = self.failed = 0

    def begin(self, total: int) -> None:
        self.total = total
        self._line(f"batch: {total} tasks")

    def step(self, key: str, value: int, maximum: int) -> None:
        """Step ``value`` of ``maximum`` of the running task: the updating line on a terminal; in a
        log, one line per step (at most one every ``log_every`` seconds, and always the last)."""
        if not self.enabled:
            return
        text = f"{key[:48]} step {value} of {maximum} {self._bar(value, maximum, 10)}"
        if self.tty:
            bar = self._bar(self.done_count, self.total)
            self.stream.write(f"\r{bar} {self.done_count}/{self.total} | {text}\033[K")
            self.stream.flush()
            return
        now = time.monotonic()
        if (key, value) != self._last_step[:2] and (value >= maximum or now - self._last_step[2] >= self.log_every):
            self._last_step = (key, value, now)
            self._line(f"  {text}")

    def running(self, key: str, polling: bool = False) -> None:
        tail = " (polling /history: step counts need /ws)" if polling else ""
        self._line(f"  {key[:48]} running{tail}")

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
