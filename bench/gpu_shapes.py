"""The block shapes that the GPU cost model (bench.gpu_cost) prices and the GPU suite
(bench/gpu_suite.sh) times: one self-attention block call of each model family at a size
users run, with the tokens MaMe merges.

``layers`` is how many transformer layers share one grid in that block (SDXL's half- and
quarter-resolution blocks hold 2 and 10), i.e. how many merge + restore pairs one plan serves
when the layers of a block share it. ``text`` tokens ride along in a DiT's joint attention and
are never merged. ``batch`` is what one model call carries (2 with classifier-free guidance in
one call; Flux is guidance-distilled).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockShape:
    name: str
    family: str  # unet | dit
    frames: int
    h: int
    w: int
    channels: int
    heads: int
    batch: int
    layers: int = 1
    text: int = 0
    note: str = ""

    @property
    def tokens(self) -> int:
        return self.frames * self.h * self.w

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.frames, self.h, self.w)


SHAPES = (
    BlockShape("sd15-512-d1", "unet", 1, 64, 64, 320, 8, 2, note="SD1.5 512x512, full-resolution blocks"),
    BlockShape("sd15-1024-d1", "unet", 1, 128, 128, 320, 8, 2, note="SD1.5 1024x1024, full-resolution blocks"),
    BlockShape("sd21-768-d1", "unet", 1, 96, 96, 320, 5, 2, note="SD2.1 768x768, full-resolution blocks"),
    BlockShape("sdxl-1024-d2", "unet", 1, 64, 64, 640, 10, 2, layers=2, note="SDXL 1024x1024, half resolution, 2 layers"),
    BlockShape("sdxl-1024-d4", "unet", 1, 32, 32, 1280, 20, 2, layers=10, note="SDXL 1024x1024, quarter resolution, 10 layers"),
    BlockShape("flux-1024", "dit", 1, 64, 64, 3072, 24, 1, text=512, note="Flux 1024x1024, 512 text tokens"),
    BlockShape("flux-2048", "dit", 1, 128, 128, 3072, 24, 1, text=512, note="Flux 2048x2048, 512 text tokens"),
    BlockShape("wan-480p-33f", "dit", 9, 30, 52, 1536, 12, 2, note="Wan 2.1 1.3B, 832x480, 33 frames"),
    BlockShape("wan-720p-81f", "dit", 21, 45, 80, 5120, 40, 1, note="Wan 2.1 14B, 1280x720, 81 frames"),
)

BY_NAME = {s.name: s for s in SHAPES}

# Tiny stand-ins with the same structure, for the CPU dry run of the GPU suite.
QUICK_SHAPES = (
    BlockShape("quick-unet", "unet", 1, 16, 16, 64, 2, 2, layers=2, note="dry run"),
    BlockShape("quick-dit", "dit", 1, 12, 10, 64, 2, 1, text=8, note="dry run, odd grid"),
    BlockShape("quick-video", "dit", 3, 6, 5, 64, 2, 2, note="dry run, video"),
)
