"""Headless batch generation through ComfyUI's HTTP API (the ``mame-batch`` command)."""
from .batch import BatchResult, plan_batch, run_batch, run_cluster_batch
from .client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected
from .errors import BatchInputError

__all__ = [
    "BatchInputError",
    "BatchResult",
    "ComfyClient",
    "ComfyError",
    "ExecutionFailed",
    "PromptRejected",
    "plan_batch",
    "run_batch",
    "run_cluster_batch",
]
