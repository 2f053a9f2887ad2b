"""Headless batch generation through ComfyUI's HTTP API (client package of comfyui-mame)."""
from .client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected

__all__ = ["ComfyClient", "ComfyError", "ExecutionFailed", "PromptRejected"]
