"""What the UNet patch (attention_patch) and the DiT patch (dit_patch) both need, written once.

* :class:`SamplingClock`: sampling progress from sigma. The start/end percent are turned into
  sigmas once with the model's own ``percent_to_sigma`` (as ComfyUI's EasyCache does), so the
  window switches at the same step on every model; the progress itself (which seeds the
  destination pattern and labels Merge Map steps) is the inverse of ``percent_to_sigma`` by
  bisection, clamped so that it agrees with the sigma window.
* :class:`OnceLog`: warn-once and log-once by key.
* :class:`ErrorStop`: the one error policy of both patches.
"""
from __future__ import annotations

import logging
import math

log = logging.getLogger("comfyui-mame")

_BISECTIONS = 48


def sigma_of(timestep) -> float:
    """The first sigma of a model call's timestep tensor (or number)."""
    if hasattr(timestep, "reshape"):
        return float(timestep.reshape(-1)[0]) if timestep.numel() else 0.0
    return float(timestep)


class SamplingClock:
    def __init__(self, model_sampling, start_percent: float = 0.0, end_percent: float = 1.0):
        self.sampling = model_sampling
        self.start_percent = float(start_percent)
        self.end_percent = float(end_percent)
        if model_sampling is None:
            self.start_sigma, self.end_sigma = math.inf, 0.0
        else:
            self.start_sigma = float(model_sampling.percent_to_sigma(self.start_percent))
            self.end_sigma = float(model_sampling.percent_to_sigma(self.end_percent))
        self._cache: dict[float, float] = {}

    def in_window(self, sigma: float) -> bool:
        return self.end_sigma <= sigma <= self.start_sigma

    def progress(self, sigma: float) -> float:
        """0 = start of sampling, 1 = the end; inside [start, end] exactly when ``sigma`` is in the window."""
        sigma = float(sigma)
        cached = self._cache.get(sigma)
        if cached is not None:
            return cached
        raw = self._invert(sigma)
        if self.in_window(sigma):
            value = min(max(raw, self.start_percent), self.end_percent)
        elif sigma > self.start_sigma:
            value = min(raw, math.nextafter(self.start_percent, -math.inf))
        else:
            value = max(raw, math.nextafter(self.end_percent, math.inf))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[sigma] = value
        return value

    def _invert(self, sigma: float) -> float:
        if self.sampling is None:
            return 0.0
        low, high = 0.0, 1.0
        for _ in range(_BISECTIONS):  # percent_to_sigma falls as progress grows
            middle = (low + high) / 2
            if float(self.sampling.percent_to_sigma(middle)) >= sigma:
                low = middle
            else:
                high = middle
        return low


class OnceLog:
    """Warnings and info lines said once per key."""

    def __init__(self):
        self.said: set = set()

    def _first(self, key) -> bool:
        if key in self.said:
            return False
        self.said.add(key)
        return True

    def warn(self, key, message: str) -> None:
        if self._first(("warn", key)):
            log.warning("%s", message)

    def info(self, key, message: str) -> None:
        if self._first(("info", key)):
            log.info("%s", message)


class ErrorStop:
    """The first exception inside a patch switches merging off for that patched model, said
    once with its cause (the Merge Map shows it too); sampling goes on unmerged. An error that
    happened once would happen at every block of every step: going on would repeat its cost and
    its warning. A new run of the MaMe node (any input changed) starts merging again."""

    def __init__(self, recorder=None):
        self.error: str | None = None  # "Type: message" of the first exception
        self.recorder = recorder

    def fail(self, err: Exception, where: str) -> None:
        if self.error is not None:
            return
        self.error = f"{type(err).__name__}: {err}"
        if self.recorder is not None:
            self.recorder.error = self.error
        log.warning("MaMe: merging switched off for this model after an error in its %s: %s", where, self.error)
