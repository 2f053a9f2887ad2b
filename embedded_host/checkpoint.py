"""Generate a random-weight SD1.5 checkpoint that ComfyUI's loader detects as SD1.5.

Real SD weights cannot be downloaded here, and compute cost does not depend on weights,
so the tests and the demo use checkpoints built from ComfyUI's own model classes (the
real architecture) and filled with seeded random values. ComfyUI's layers skip weight
initialisation, so every tensor is filled explicitly.

Variants:
  tiny  SD1.5 block layout (same blocks, levels and 320/768 widths) with channel_mult
        1,1,1,1: every UNet level keeps 320 channels. Fast enough for CPU tests.
  full  The real SD1.5 UNet (channel_mult 1,2,4,4, 860M parameters).
Both carry the full CLIP-L text encoder and the full SD VAE.

Run inside the host:  python -m embedded_host.checkpoint --host DIR --variant tiny OUT
"""
from __future__ import annotations

import argparse
import math
import os
import sys

SD15_UNET = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_spatial_transformer": True, "legacy": False, "context_dim": 768, "num_heads": 8,
    "use_linear_in_transformer": False, "adm_in_channels": None,
}
VARIANTS = {"tiny": {"channel_mult": [1, 1, 1, 1]}, "full": {}}
VAE_CONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}


def fill_(name: str, tensor, generator) -> None:
    """Seeded values that keep activations in range: unit norms, zero biases, scaled weights."""
    import torch

    if not tensor.is_floating_point():
        return
    last = name.rsplit(".", 1)[-1]
    if tensor.dim() == 1 and last == "weight":
        tensor.fill_(1.0)
    elif last == "bias" or tensor.dim() == 0:
        tensor.zero_()
    elif "embedding" in name:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    else:
        fan_in = math.prod(tensor.shape[1:]) if tensor.dim() > 1 else tensor.shape[0]
        tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(max(fan_in, 1)))


def build_state_dict(variant: str, seed: int = 0) -> dict:
    import torch
    from comfy import sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    generator = torch.Generator().manual_seed(seed)
    state = {}
    with torch.no_grad():
        parts = {
            "model.diffusion_model.": UNetModel(**{**SD15_UNET, **VARIANTS[variant]}),
            "cond_stage_model.": sd1_clip.SDClipModel(),
            "first_stage_model.": AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4),
        }
        for prefix, module in parts.items():
            for name, tensor in module.state_dict().items():
                if prefix == "cond_stage_model." and not name.startswith("transformer.text_model."):
                    continue  # logit_scale / projection are not part of an SD checkpoint
                value = torch.empty(tensor.shape, dtype=torch.float32)
                if name.endswith("position_ids"):
                    value = torch.arange(tensor.shape[-1]).reshape(tensor.shape).to(torch.int64)
                else:
                    fill_(name, value, generator)
                    value = value.to(torch.float16)
                state[prefix + name] = value.contiguous()
    return state


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--host", required=True, help="the ComfyUI folder whose model classes to use")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, args.host)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()  # so comfy reads --cpu instead of probing CUDA
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    state = build_state_dict(args.variant, args.seed)
    tmp = args.out + ".part"
    save_file(state, tmp, metadata={"generator": "comfyui-mame embedded_host", "variant": args.variant})
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(state)} tensors, variant {args.variant}")


if __name__ == "__main__":
    main()
