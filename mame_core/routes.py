"""Which engine route plans a merge: ``cpu`` (tiles, log-step packing, tuned to a CPU's
caches) or ``gpu`` (a few large batched products, tuned to kernel launches and memory passes).

``auto`` picks by the tokens' device, as the proportional-attention routes do; the environment
variable ``MAME_ENGINE_ROUTE`` (``cpu`` or ``gpu``) forces one, so tests and benchmarks run the
GPU route on CPU tensors.
"""
from __future__ import annotations

import os

import torch

from .settings import MaMeConfigError

ROUTES = ("cpu", "gpu")
ROUTE_ENV = "MAME_ENGINE_ROUTE"


def engine_route(device: torch.device | str, route: str | None = None) -> str:
    """The route for tokens on ``device``: ``route`` if given, else ``$MAME_ENGINE_ROUTE``, else
    ``gpu`` for any accelerator and ``cpu`` for the CPU."""
    chosen = route if route is not None else os.environ.get(ROUTE_ENV, "auto").strip().lower() or "auto"
    if chosen == "auto":
        return "cpu" if torch.device(device).type == "cpu" else "gpu"
    if chosen not in ROUTES:
        source = "route" if route is not None else ROUTE_ENV
        raise MaMeConfigError(f"{source} must be one of auto, {', '.join(ROUTES)}; got {chosen!r}")
    return chosen
