"""Where merging pays, per kind of device: below a token count, merge and restore cost more
than the attention they save, and ``auto`` leaves the block at full length.

The thresholds come from the GPU cost model and the H200 measurements of the GPU suite
(bench/results/gpu-cost.txt, bench/results/gpu-kernels.txt): on a GPU the attention of a few
thousand tokens takes a fraction of a millisecond, less than the launches of any merge. On a
CPU, attention dominates from the smallest SD grid on (bench/results/speed-sd15.txt).
``MAME_FORCE_MERGE=1`` (or ``force=True``) merges every scheduled block anyway.
"""
from __future__ import annotations

import os

import torch

FORCE_ENV = "MAME_FORCE_MERGE"
MIN_TOKENS = {"cpu": 0, "cuda": 16384}
UNKNOWN_DEVICE_TOKENS = 16384  # other accelerators (mps, xpu): priced like a GPU until measured


def min_tokens(device: torch.device | str) -> int:
    kind = torch.device(device).type
    return MIN_TOKENS.get(kind, UNKNOWN_DEVICE_TOKENS)


def forced() -> bool:
    return os.environ.get(FORCE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pays(tokens: int, device: torch.device | str, force: bool | None = None) -> bool:
    """Whether merging ``tokens`` image tokens is expected to save time on ``device``."""
    if force if force is not None else forced():
        return True
    return tokens >= min_tokens(device)


def why_not(tokens: int, device: torch.device | str) -> str:
    kind = torch.device(device).type
    return (f"{tokens} tokens on {kind} are below the {min_tokens(device)} from which merging saves time there "
            f"(bench/results/gpu-kernels.txt); set {FORCE_ENV}=1 to merge anyway")
