"""One sampling step through ComfyUI's own UNet and the MaMe node's patch, with and without
MaMe, side by side: what a ComfyUI user gets per step. Builds the full SD1.5 or SDXL UNet
from ComfyUI's classes (random weights) in the embedded host, in-process.

Usage: python -m bench.comfy_step --model sd15|sdxl [--ratio 0.5] [--rounds 3] [--dtype bfloat16]
(default dtype: bf16 on a CPU with avx512_bf16 or amx_bf16, else float32)
"""
from __future__ import annotations

import argparse

import torch

from bench.timing import pick_dtype, time_interleaved
from embedded_host.checkpoint import SD15_UNET, fill_
from embedded_host.inprocess import comfy_host, extension
from mame_core.block_step import DEFAULTS

SDXL_UNET = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "context_dim": 2048, "use_linear_in_transformer": True,
    "use_temporal_attention": False, "use_temporal_resblock": False, "use_checkpoint": False,
}


def build(model: str, dtype: torch.dtype):
    comfy_host()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    if model == "sdxl":
        config = comfy.supported_models.SDXL(dict(SDXL_UNET, dtype=dtype))
        base = comfy.model_base.SDXL(config, device="cpu")
    else:
        config = comfy.supported_models.SD15(dict(SD15_UNET, dtype=dtype, use_temporal_attention=False,
                                                  use_temporal_resblock=False, use_checkpoint=False))
        base = comfy.model_base.BaseModel(config, device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in base.diffusion_model.state_dict(keep_vars=True).items():
            value = torch.empty(tensor.shape, dtype=torch.float32)
            fill_(name, value, gen)
            tensor.data.copy_(value.to(tensor.dtype))
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["sd15", "sdxl"], default="sd15")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: native to this CPU")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    args.dtype = pick_dtype(args.dtype)
    dtype = getattr(torch, args.dtype)
    model = build(args.model, dtype)
    node = extension().NODE_CLASS_MAPPINGS["MaMe"]()
    defaults = {k: v for k, v in DEFAULTS.items() if k != "ratio"}
    patched, _ = node.patch(model, ratio=args.ratio, **defaults)
    size = 1024 if args.model == "sdxl" else 512
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, size // 8, size // 8, generator=gen)
    sigma = torch.tensor([5.0, 5.0])
    ctx = torch.randn(2, 77, 2048 if args.model == "sdxl" else 768, generator=gen)
    extra = {"y": torch.randn(2, 2816, generator=gen)} if args.model == "sdxl" else {}

    def step(m):
        opts = dict(m.model_options.get("transformer_options", {}), sigmas=sigma)
        with torch.inference_mode():  # ComfyUI's apply_model takes sigmas and converts them itself
            return m.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=opts, **extra)

    res = time_interleaved({"without MaMe": lambda: step(model), f"MaMe r{args.ratio}": lambda: step(patched)},
                           rounds=args.rounds)
    base = res["without MaMe"]["median"]
    print(f"ComfyUI 2024-03 UNet, {args.model} at {size} px, {args.dtype}, batch 2 (CFG), one step, {args.rounds} rounds")
    for name, r in res.items():
        print(f"| {name} | {r['median']:.2f} s | min {r['min']:.2f} s | {base / r['median']:.2f}x |")
    patch = patched.model_options["transformer_options"]["patches"]["attn1_patch"][-1].__self__
    print(patch.summary())


if __name__ == "__main__":
    main()
