"""The real UNet architectures, as explicit diffusers configs (no hub), with inputs."""
from __future__ import annotations

import torch

SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
SD21 = dict(SD15, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SDXL = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
MODELS = {
    "sd15": (SD15, 512, "SD1.5"),
    "sd21": (SD21, 768, "SD2.1"),
    "sdxl": (SDXL, 1024, "SDXL"),
}


def build_unet(name: str, dtype: torch.dtype, device: str):
    from diffusers import UNet2DConditionModel

    config, _, _ = MODELS[name]
    # diffusers' own initialisers draw from torch's global RNG; fork it so the caller's
    # state is untouched (weights do not change compute cost).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config)
    return unet.to(device=device, dtype=dtype).eval()


def unet_inputs(name: str, batch: int, dtype: torch.dtype, device: str, size: int | tuple[int, int] | None = None) -> dict:
    """UNet inputs for an image of ``size`` px: a side, or (height, width)."""
    config, default_size, _ = MODELS[name]
    height, width = size if isinstance(size, tuple) else (size or default_size, size or default_size)
    gen = torch.Generator().manual_seed(0)
    kwargs = {
        "sample": torch.randn(batch, 4, height // 8, width // 8, generator=gen),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(batch, 77, config["cross_attention_dim"], generator=gen),
    }
    if config.get("addition_embed_type") == "text_time":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 1280, generator=gen),
                                       "time_ids": torch.tensor([[height, width, 0, 0, height, width]] * batch,
                                                                dtype=torch.float32)}
    return {k: (v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) if isinstance(v, torch.Tensor)
                else {kk: vv.to(device=device, dtype=dtype) for kk, vv in v.items()}) for k, v in kwargs.items()}
