"""Tiny Wan 2.1/2.2 variants of ComfyUI v0.3.75, built from its own model classes with seeded
weights (as ``dit_models``: real architectures at small width and depth), and the extra
conditioning each variant reads, so the sampler drives its real forward.

  ti2v     WanModel as the Wan 2.2 5B TI2V lays it out (48-channel Wan 2.2 VAE latent in and out,
           per-frame timesteps under a denoise mask: ComfyUI's WAN22 model).
  vace     VaceWanModel: 4 blocks and 2 VACE hint blocks (after blocks 0 and 2), 96-channel
           control context (32 latent channels + 64 mask channels, ComfyUI's layout).
  camera   CameraWanModel (Wan 2.1 Camera: I2V cross-attention, 32 input channels) with camera
           conditions (24 channels at 8x the latent size).
  humo     HumoWanModel (17B layout, 16 input channels) with audio embeddings (8 x 5 x 1280 a
           frame) and a reference frame appended after the video.
  animate  AnimateWanModel (I2V cross-attention) with pose latents added to frames 1..T.
  s2v      WanModel_S2V (passes through: see nodes/families.py).

All are 256 wide with 2 heads (head width 128, as the real models) and 3-4 blocks.
"""
from __future__ import annotations

from .dit_models import CONFIGS as DIT_CONFIGS
from .dit_models import seeded_patcher

CONFIGS = {  # each over the tiny Wan 2.1 of dit_models, its model_type replaced
    "ti2v": {"model_type": "t2v", "in_dim": 48, "out_dim": 48},
    "vace": {"model_type": "vace", "num_layers": 4, "vace_layers": 2, "vace_in_dim": 96},
    "camera": {"model_type": "camera", "in_dim": 32},
    "humo": {"model_type": "humo"},
    "animate": {"model_type": "animate"},
    "s2v": {"model_type": "s2v"},
}
SUPPORTED = {"ti2v": "WAN22_T2V", "vace": "WAN21_Vace", "camera": "WAN21_Camera", "humo": "WAN21_HuMo",
             "animate": "WAN22_Animate", "s2v": "WAN22_S2V"}
LATENT_CHANNELS = {"ti2v": 48}  # 16 elsewhere


def build_variant(variant: str, seed: int = 0):
    """A ComfyUI ModelPatcher around the real class of ``variant`` with seeded weights (CPU, fp32)."""
    from comfy import supported_models

    config = {**DIT_CONFIGS["wan"], **CONFIGS[variant]}
    return seeded_patcher(getattr(supported_models, SUPPORTED[variant])(config), seed)


def variant_extras(variant: str, latent_shape, seed: int = 3) -> dict:
    """The conditioning extras ``variant`` reads (ComfyUI's names, as its nodes set them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    _, _, t, h, w = latent_shape
    if variant == "vace":
        return {"vace_frames": [torch.randn(1, 32, t, h, w, generator=g)], "vace_mask": [torch.ones(1, 64, t, h, w)],
                "vace_strength": [1.0]}
    if variant == "camera":
        return {"camera_conditions": torch.randn(1, 24, t, h * 8, w * 8, generator=g)}
    if variant == "humo":
        return {"audio_embed": torch.randn(1, t, 8, 5, 1280, generator=g),
                "reference_latents": [torch.randn(1, 16, 1, h, w, generator=g)]}
    if variant == "animate":
        return {"pose_video_latent": torch.randn(1, 16, t - 1, h, w, generator=g)}
    return {}


def variant_conditioning(variant: str, latent_shape, seed: int = 1):
    """Seeded text tokens (as ``dit_models.conditioning('wan')``) plus the variant's extras."""
    from .dit_models import conditioning

    cond = conditioning("wan", seed=seed)
    cond[0][1].update(variant_extras(variant, latent_shape))
    return cond
