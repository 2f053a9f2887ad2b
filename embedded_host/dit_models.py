"""Tiny DiT and video models built from ComfyUI's own model classes, with seeded weights.

Real Flux, SD3.5 and Wan weights cannot be downloaded here and compute cost does not depend
on the weights, so the tests use ComfyUI's real architectures (v0.3.75 host) at small widths
and depths, filled with seeded values at the scale of a trained model (unit norms, weights
~ 1/sqrt(fan_in)) so that attention moves the output measurably.

  flux  Flux (double + single stream blocks, 2-D RoPE, text first), 256 wide, 4 heads.
  flux2 Flux as Flux.2 uses it (patch 1, 128 latent channels, text padded to 512 tokens), 256 wide.
  sd3   MMDiT as SD3.5-medium lays it out (joint blocks, context first, an x-only second
        self-attention in block 0), 128 wide, 2 heads: small enough that ComfyUI's loader
        detects it from the saved file (depth = width / 64).
  wan   WanModel text-to-video (3-D RoPE, self-attention on video tokens, cross-attention
        to text), 256 wide, 2 heads.
  zimage NextDiT as Z-Image lays it out (caption and image padded with learned tokens to a
        multiple of 32, one context and one noise refiner block, then the main layers; 3-axis
        RoPE, Z-Image's modulation and time scale), 256 wide, 4 heads.
  hunyuan_video HunyuanVideo 1.0 (token refiner on the text, double blocks over image then
        text, single blocks, 3-D RoPE, patch (1, 2, 2)), 128 wide, 2 heads.
  hunyuan_image the same class as HunyuanImage 2.1 lays it out (2-D latent of 64 channels,
        patch 1, byT5 glyph tokens after the text, no pooled vector).

``python -m embedded_host.dit_models --host DIR sd3 OUT.safetensors`` writes a diffusion
model file for ComfyUI's UNETLoader.
"""
from __future__ import annotations

import argparse
import sys

from .checkpoint import fill_

CONFIGS = {
    "flux": {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 64,
        "hidden_size": 256, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 2,
        "axes_dim": [8, 28, 28], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
    },
    "flux2": {  # Flux.2 as ComfyUI detects it: patch 1 on a 128-channel latent, 4 RoPE axes, shared modulation
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "context_in_dim": 64,
        "hidden_size": 256, "mlp_ratio": 3.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 2,
        "axes_dim": [16, 16, 16, 16], "theta": 2000, "patch_size": 1, "qkv_bias": False, "guidance_embed": True,
        "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
        "ref_index_scale": 10.0,
    },
    "sd3": {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
        "adm_in_channels": 2048, "pos_embed_max_size": 48, "num_patches": 48 * 48, "qk_norm": "rms",
        "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [0],
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    },
    "wan": {
        "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16,
        "dim": 256, "ffn_dim": 512, "freq_dim": 256, "text_dim": 64, "out_dim": 16, "num_heads": 2,
        "num_layers": 3, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
    },
    "zimage": {  # model_detection's Z-Image entry at a small width (real: 3840 wide, 30 heads, 30 layers)
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 64,
        "n_layers": 2, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 4, "n_kv_heads": 4,
        "axes_dims": [16, 24, 24], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
        "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    },
    "hunyuan_video": {  # model_detection's HunyuanVideo 1.0 entry at a small width (real: 3072 wide, 24 heads)
        "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
        "context_in_dim": 64, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
        "depth_single_blocks": 2, "axes_dim": [16, 24, 24], "theta": 256, "patch_size": [1, 2, 2],
        "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
        "use_cond_type_embedding": False, "vision_in_dim": None,
    },
}
CONFIGS["hunyuan_image"] = {**CONFIGS["hunyuan_video"], "in_channels": 64, "out_channels": 64, "vec_in_dim": None,
                            "axes_dim": [32, 32], "patch_size": [1, 1], "byt5": True}
# Width of the conditioning each tiny model takes: (text tokens' channels, pooled vector size or None).
# SD3 takes the widths of its real text encoders (CLIP-L/G padded to 4096, pooled L+G 2048), so
# the server test can condition it with a generated CLIP-L through ComfyUI's own CLIPLoader.
CONDITIONING = {"flux": (64, 32), "flux2": (64, None), "sd3": (4096, 2048), "wan": (64, None), "zimage": (64, None),
                "hunyuan_video": (64, 32), "hunyuan_image": (64, None)}
LATENT_CHANNELS = 16


def _model_config(family: str):
    import torch
    from comfy import supported_models

    cls = {"flux": supported_models.Flux, "flux2": supported_models.Flux2, "sd3": supported_models.SD3,
           "wan": supported_models.WAN21_T2V, "zimage": supported_models.ZImage,
           "hunyuan_video": supported_models.HunyuanVideo, "hunyuan_image": supported_models.HunyuanImage21}[family]
    config = cls(dict(CONFIGS[family]))
    config.set_inference_dtype(torch.float32, None)
    return config


def filled_state_dict(module, seed: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in module.state_dict().items():
        value = torch.empty(tensor.shape, dtype=torch.float32)
        fill_(name, value, generator)
        if "pos_embed" in name:
            value.copy_(torch.randn(value.shape, generator=generator) * 0.5)
        state[name] = value
    return state


def seeded_patcher(config, seed: int = 0):
    """A ComfyUI ModelPatcher (CPU, fp32) around the model of ``config`` (a ``supported_models``
    entry) with seeded weights."""
    import torch
    from comfy.model_patcher import ModelPatcher

    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    model.diffusion_model.load_state_dict(filled_state_dict(model.diffusion_model, seed))
    model.eval()
    cpu = torch.device("cpu")
    return ModelPatcher(model, load_device=cpu, offload_device=cpu)


def build_model(family: str, seed: int = 0):
    """A ComfyUI ModelPatcher around the real ``family`` model class with seeded weights (CPU, fp32)."""
    return seeded_patcher(_model_config(family), seed)


def conditioning(family: str, batch: int = 1, tokens: int = 12, seed: int = 1):
    """ComfyUI conditioning ``[[cond, extras]]`` with seeded text tokens (stand-ins for the
    family's text encoder output, whose real encoders are too large to generate here)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    width, pooled = CONDITIONING[family]
    cond = torch.randn(batch, tokens, width, generator=generator)
    extras = {}
    if pooled is not None:
        extras["pooled_output"] = torch.randn(batch, pooled, generator=generator)
    elif family == "flux2":
        extras["pooled_output"] = None  # Flux.2's text encoder gives no pooled vector; ComfyUI's Flux reads the key
    if family.startswith("flux"):
        extras["guidance"] = 3.5
    return [[cond, extras]]


def save_diffusion_model(family: str, path: str, seed: int = 0) -> None:
    import safetensors.torch

    model = _model_config(family).get_model({})
    state = {k: v.to(__import__("torch").float16).contiguous()
             for k, v in filled_state_dict(model.diffusion_model, seed).items()}
    safetensors.torch.save_file(state, path)


def save_clip_l(path: str, seed: int = 0) -> None:
    """The full CLIP-L text encoder with seeded weights, as a text encoder file."""
    import safetensors.torch
    import torch
    from comfy import sd1_clip

    model = sd1_clip.SDClipModel()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.transformer.state_dict().items():
        value = torch.empty(tensor.shape, dtype=torch.float32)
        if name.endswith("position_ids"):
            state[name] = torch.arange(tensor.shape[-1]).reshape(tensor.shape)
            continue
        fill_(name, value, generator)
        state[name] = value.to(torch.float16).contiguous()
    safetensors.torch.save_file(state, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True, help="the ComfyUI folder whose model classes to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("family", choices=sorted(CONFIGS) + ["clip_l"])
    parser.add_argument("out")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.host)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    if args.family == "clip_l":
        save_clip_l(args.out, args.seed)
    else:
        save_diffusion_model(args.family, args.out, args.seed)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
