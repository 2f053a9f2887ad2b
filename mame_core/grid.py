"""Finding a block's token grid from the latent shape, as the UNet downsamples it."""
from __future__ import annotations

from collections.abc import Sequence


def level_sizes(latent_h: int, latent_w: int, max_levels: int = 8) -> list[tuple[int, int, int]]:
    """``(downsample, h, w)`` for every UNet level: each stride-2 conv gives ``ceil(n / 2)``."""
    sizes = []
    h, w, d = latent_h, latent_w, 1
    for _ in range(max_levels):
        sizes.append((d, h, w))
        h, w, d = (h + 1) // 2, (w + 1) // 2, d * 2
    return sizes


def infer_grid(tokens: int, latent_shape: Sequence[int]) -> tuple[int, int, int] | None:
    """``(downsample, h, w)`` of the level whose grid has ``tokens`` tokens, or None.

    ``latent_shape`` is the latent's ``[B, C, H, W]`` (ComfyUI's ``original_shape``).
    """
    latent_h, latent_w = int(latent_shape[-2]), int(latent_shape[-1])
    for d, h, w in level_sizes(latent_h, latent_w):
        if h * w == tokens:
            return d, h, w
    return None
