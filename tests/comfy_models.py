"""Small ComfyUI models for in-process tests: ComfyUI's own UNet and ModelPatcher classes
(2024-03 host), the SD1.5 block numbering at narrow width, seeded weights from the
checkpoint generator's scale."""
import torch

from embedded_host.checkpoint import SD15_UNET, fill_
from embedded_host.inprocess import comfy_host, extension

# The SD1.5 block numbering and levels with two levels of narrow channels: small enough to
# trace in seconds, with attention at d1 (input_1, output_3-5) and d2 (input_4, middle, output_0-2).
SMALL_SD15 = dict(SD15_UNET, model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
                  transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=32, num_heads=4,
                  use_temporal_attention=False, use_temporal_resblock=False, use_checkpoint=False)


def small_sd15():
    comfy_host()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    base = comfy.model_base.BaseModel(comfy.supported_models.SD15(dict(SMALL_SD15)), device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in base.diffusion_model.state_dict(keep_vars=True).items():
            fill_(name, tensor.data, gen)
    base.eval()
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    # ComfyUI keeps the last sampled model patched while it stays loaded (object patches
    # included), so keep the plain UNet now rather than read it from the model later.
    patcher.raw_unet = base.diffusion_model
    return patcher


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
