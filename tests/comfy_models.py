"""Small ComfyUI models for in-process tests: ComfyUI's own UNet and ModelPatcher classes, the
SD1.5, SDXL and SD2.1-768-v block layouts at narrow width, seeded weights from the checkpoint
generator's scale.

A full SDXL checkpoint (CLIP-G included) is several GB, too much to generate in CI, so the SDXL
and SD2.1 UNets are built in-process with the real block layout (levels, block numbering,
transformer depth > 1 on SDXL) and narrower channels."""
import torch

from embedded_host.checkpoint import SD15_UNET, fill_
from embedded_host.inprocess import comfy_host, extension

# The SD1.5 block numbering and levels with two levels of narrow channels: small enough to
# trace in seconds, with attention at d1 (input_1, output_3-5) and d2 (input_4, middle, output_0-2).
SMALL_SD15 = dict(SD15_UNET, model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
                  transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=32, num_heads=4,
                  use_temporal_attention=False, use_temporal_resblock=False, use_checkpoint=False)


SDXL_LAYOUT = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 64,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 3, 3], "channel_mult": [1, 2, 2],
    "transformer_depth_middle": 3, "use_linear_in_transformer": True, "context_dim": 2048,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 3, 3, 3], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SD21_LAYOUT = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 64, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 1, 2, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 1024, "transformer_depth_output": [1] * 9 + [0] * 3,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def seeded_patcher(base):
    """A CPU ModelPatcher around ``base`` (a comfy.model_base model), its UNet weights seeded."""
    import comfy.model_patcher

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in base.diffusion_model.state_dict(keep_vars=True).items():
            fill_(name, tensor.data, gen)
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def small_sd15():
    comfy_host()
    import comfy.model_base
    import comfy.supported_models

    patcher = seeded_patcher(comfy.model_base.BaseModel(comfy.supported_models.SD15(dict(SMALL_SD15)), device="cpu"))
    # ComfyUI keeps the last sampled model patched while it stays loaded (object patches
    # included), so keep the plain UNet now rather than read it from the model later.
    patcher.raw_unet = patcher.model.diffusion_model
    return patcher


def layout_model(kind):
    """The SDXL (``kind`` "sdxl") or SD2.1-768-v ("sd21") UNet layout at narrow width."""
    comfy_host()
    import comfy.model_base
    import comfy.supported_models

    if kind == "sdxl":
        return seeded_patcher(comfy.model_base.SDXL(comfy.supported_models.SDXL(dict(SDXL_LAYOUT)), device="cpu"))
    config = comfy.supported_models.SD20(dict(SD21_LAYOUT))  # ComfyUI names SD2.x "SD20"
    return seeded_patcher(comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.V_PREDICTION,
                                                     device="cpu"))


def mame_patch(model, **inputs):
    settings = dict(ratio=0.5, threshold=0.7, mode="qkv", tile_size=8, levels="auto", start_percent=0.0,
                    end_percent=1.0, seed=0, overrides="")
    settings.update(inputs)
    patched = extension().NODE_CLASS_MAPPINGS["MaMe"]().patch(model, **settings)[0]
    patched.raw_unet = getattr(model, "raw_unet", None)
    return patched


def sample(model, steps, batch=1):
    import comfy.sample

    gen = torch.Generator().manual_seed(1)
    latent = torch.zeros(batch, 4, 32, 32)
    noise = torch.randn(latent.shape, generator=gen)
    pos = [[torch.randn(1, 7, 32, generator=gen), {}]]
    neg = [[torch.randn(1, 7, 32, generator=gen), {}]]
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", pos, neg, latent, disable_pbar=True, seed=1)


def sample_at(model, width, height, batch=1, context_dim=2048, steps=2):
    """A seeded sample of an SDXL or SD2.1 layout model (``context_dim`` 1024 for SD2.1)."""
    import comfy.sample

    gen = torch.Generator().manual_seed(1)
    latent = torch.zeros(batch, 4, height // 8, width // 8)
    noise = torch.randn(latent.shape, generator=gen)
    pooled = {"pooled_output": torch.randn(1, 1280, generator=gen), "width": width, "height": height}
    pos = [[torch.randn(1, 77, context_dim, generator=gen), dict(pooled)]]
    neg = [[torch.randn(1, 77, context_dim, generator=gen), dict(pooled)]]
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", pos, neg, latent, disable_pbar=True, seed=1)
