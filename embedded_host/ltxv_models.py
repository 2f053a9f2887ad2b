"""A tiny LTX-Video of ComfyUI v0.3.75 (``LTXVModel``, ``comfy/ldm/lightricks/model.py``), built
from its own class with seeded weights (as ``dit_models``), and the conditioning it reads, so
the sampler drives its real forward.

The real model is 2048 wide (32 heads of 64) with 28 blocks on a 128-channel latent (32x in
space, 8x in time, patch 1). The tiny one keeps the latent and head width: 128 wide (2 heads
of 64), 3 blocks, 64-channel text tokens. ``keyframe_conditioning`` appends guide frames to the
latent along time and sets ``keyframe_idxs`` with ComfyUI's own ``LTXVAddGuide.append_keyframe``.
"""
from __future__ import annotations

from .dit_models import seeded_patcher

CONFIG = {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 128, "attention_head_dim": 64,
          "num_attention_heads": 2, "caption_channels": 64, "num_layers": 3}
LATENT_CHANNELS = 128
TEXT_CHANNELS = 64
SCALE_FACTORS = (8, 32, 32)  # the LTXV VAE's (time, height, width): vae.downscale_index_formula


def build_ltxv(seed: int = 0):
    """A ComfyUI ModelPatcher around a tiny real ``LTXVModel`` with seeded weights (CPU, fp32)."""
    from comfy import supported_models

    return seeded_patcher(supported_models.LTXV(dict(CONFIG)), seed)


def conditioning(tokens: int = 12, seed: int = 1):
    """``[[cond, extras]]`` with seeded text tokens (stand-ins for T5-XXL's output), the text
    encoder's attention mask (the last ``tokens // 4`` tokens padding) and a frame rate."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, tokens, dtype=torch.long)
    mask[:, tokens - tokens // 4:] = 0
    return [[torch.randn(1, tokens, TEXT_CHANNELS, generator=generator), {"attention_mask": mask, "frame_rate": 25.0}]]


def keyframe_conditioning(positive, negative, latent, noise_mask, guide_frames: int = 1, frame_idx: int = 0,
                          seed: int = 4):
    """``LTXVAddGuide`` without a VAE: a seeded guide latent of ``guide_frames`` frames appended to
    ``latent`` along time, its ``keyframe_idxs`` in both conditionings, its noise mask kept."""
    import torch
    from comfy_extras.nodes_lt import LTXVAddGuide

    b, c, _, h, w = latent.shape
    guide = torch.randn(b, c, guide_frames, h, w, generator=torch.Generator().manual_seed(seed))
    return LTXVAddGuide.append_keyframe(positive, negative, frame_idx, latent, noise_mask, guide, 1.0,
                                       SCALE_FACTORS)
