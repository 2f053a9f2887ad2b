"""Exactly ``count`` highest scores of each row, without sorting: a radix descent on counts.

Every score becomes a distinct integer key (the score on a ``2**-20`` grid, then the position,
earlier first). The ``count``-th largest key is found digit by digit, four bits at a time: for
each of the 15 candidate digits, count the keys at or above the candidate threshold and keep the
largest digit whose count still reaches ``count``. Each step is one comparison and one sum over
the row, a fixed number of steps for a given row length, so it runs on the device with static
shapes and no host sync. ``key >= threshold`` then marks exactly ``count`` entries.
"""
from __future__ import annotations

import torch

SCORE_BITS = 20  # scores are compared on a 2**-20 grid; closer ones are ranked by position
DIGIT_BITS = 4


def _keys(score: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, int]:
    """Distinct non-negative int64 keys, ``[..., N]``, and how many bits they need."""
    n = score.shape[-1]
    levels = int((high - low) * 2**SCORE_BITS) + 1
    q = torch.round((score.float().clamp(low, high) - low) * 2**SCORE_BITS).to(torch.int64)
    position = torch.arange(n, device=score.device)
    keys = q * n + (n - 1 - position)
    return keys, (levels * n).bit_length()


def top_count_mask(score: torch.Tensor, count: int, low: float = -4.0, high: float = 1.0) -> torch.Tensor:
    """Bool ``[..., N]`` with exactly ``count`` trues per row: the highest ``score`` values
    (scores within ``2**-20`` of each other are ranked by position, earlier first).
    ``score`` must lie in ``[low, high]``."""
    n = score.shape[-1]
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, {n}], got {count}")
    if count == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    keys, bits = _keys(score, low, high)
    digits = -(-bits // DIGIT_BITS)
    threshold = torch.zeros(keys.shape[:-1] + (1,), dtype=torch.int64, device=keys.device)
    candidates = torch.arange(1, 2**DIGIT_BITS, device=keys.device, dtype=torch.int64)
    for digit in reversed(range(digits)):
        shift = digit * DIGIT_BITS
        trial = threshold + (candidates << shift)  # [..., 15]
        reached = (keys.unsqueeze(-1) >= trial.unsqueeze(-2)).sum(dim=-2) >= count  # [..., 15]
        threshold = threshold + (reached.sum(dim=-1, keepdim=True).to(torch.int64) << shift)
    return keys >= threshold
