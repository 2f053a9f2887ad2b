"""ComfyUI (2024-03 host, in-process): the MaMe-patched model compiled the way ComfyUI's
TorchCompileModel node does it (an object patch of ``diffusion_model`` with
``torch.compile``; that host predates the node), sampled with ComfyUI's real sampler.
MaMe must add no graph break and no recompilation, give the eager output, and keep merging."""
import pytest
import torch

from embedded_host.checkpoint import SD15_UNET, fill_
from embedded_host.inprocess import comfy_host, extension

pytestmark = pytest.mark.e2e
STEPS = 10

# The SD1.5 block numbering and levels with two levels of narrow channels: small enough to
# trace in seconds, with attention at d1 and d2.
LAYOUT = dict(SD15_UNET, model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
              transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=32, num_heads=4,
              use_temporal_attention=False, use_temporal_resblock=False, use_checkpoint=False)


@pytest.fixture(scope="module")
def model():
    comfy_host()
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    base = comfy.model_base.BaseModel(comfy.supported_models.SD15(dict(LAYOUT)), device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in base.diffusion_model.state_dict(keep_vars=True).items():
            fill_(name, tensor.data, gen)
    base.eval()
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    # ComfyUI keeps the last sampled model patched while it stays loaded, so take the
    # uncompiled UNet now rather than from the model later.
    patcher.raw_unet = base.diffusion_model
    return patcher


def with_mame(model, **inputs):
    settings = dict(ratio=0.5, threshold=0.7, mode="qkv", tile_size=4, levels="auto", start_percent=0.0,
                    end_percent=1.0, seed=0, overrides="")
    settings.update(inputs)
    patched = extension().NODE_CLASS_MAPPINGS["MaMe"]().patch(model, **settings)[0]
    patched.raw_unet = model.raw_unet
    return patched


def compiled(model, counter):
    """What TorchCompileModel does: a clone whose diffusion_model is the torch.compile'd one."""
    patched = model.clone()
    patched.add_object_patch("diffusion_model", torch.compile(model.raw_unet, backend=counter))
    return patched


def sample(model):
    import comfy.sample

    gen = torch.Generator().manual_seed(1)
    latent = torch.zeros(1, 4, 32, 32)
    noise = torch.randn(latent.shape, generator=gen)
    pos = [[torch.randn(1, 7, 32, generator=gen), {}]]
    neg = [[torch.randn(1, 7, 32, generator=gen), {}]]
    return comfy.sample.sample(model, noise, STEPS, 5.0, "euler", "normal", pos, neg, latent, disable_pbar=True, seed=1)


def compile_stats(model):
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    counter = CompileCounterWithBackend("eager")
    out = sample(compiled(model, counter))
    breaks = sum(counters["graph_break"].values())
    dynamo.reset()
    return out, counter.frame_count, breaks


@pytest.fixture(scope="module")
def plain(model):
    return compile_stats(model)


@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_mame_adds_no_break_and_no_recompilation(model, plain, mode):
    plain_out, plain_frames, plain_breaks = plain
    patched = with_mame(model, mode=mode)
    eager = sample(patched)
    out, frames, breaks = compile_stats(patched)
    assert (frames, breaks) == (plain_frames, plain_breaks)
    assert frames >= 1  # it did compile
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert (out - plain_out).abs().max() > 1e-2 * plain_out.abs().max()  # merging stayed on when compiled


def test_a_window_boundary_adds_one_graph(model, plain):
    _, plain_frames, plain_breaks = plain
    patched = with_mame(model, end_percent=0.5)
    eager = sample(patched)
    out, frames, breaks = compile_stats(patched)
    assert breaks == plain_breaks
    assert frames == plain_frames + 1  # merging on, then off
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
