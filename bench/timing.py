"""Side-by-side timing: settings are interleaved round by round, so drift and noise from
the machine hit every setting alike. Reports min and median per setting."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Seconds per call of each case: ``{name: {"min": s, "median": s, "runs": n}}``."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"min": min(s), "median": statistics.median(s), "runs": len(s)} for name, s in samples.items()
    }
