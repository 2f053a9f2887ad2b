"""ComfyUI in-process (MAME_HOST=2024 or 2025): the MaMe-patched model compiled the way
ComfyUI's TorchCompileModel node does it (see ``compiled``), sampled with ComfyUI's real sampler.
MaMe must add no graph break and no recompilation, give the eager output, and keep merging."""
import pytest
import torch
from comfy_models import mame_patch, sample, small_sd15

pytestmark = pytest.mark.e2e
STEPS = 10


@pytest.fixture(scope="module")
def model():
    return small_sd15()


def with_mame(model, **inputs):
    return mame_patch(model, tile_size=4, **inputs)


def compiled(model, counter):
    """A clone compiled as ComfyUI's TorchCompileModel node does it: on the 2025 host with the
    node's own helper (it compiles diffusion_model inside an apply_model wrapper), on the 2024
    host (no such node yet) as an object patch of diffusion_model with torch.compile."""
    patched = model.clone()
    try:
        from comfy_api.torch_helpers import set_torch_compile_wrapper
    except ImportError:
        patched.add_object_patch("diffusion_model", torch.compile(model.raw_unet, backend=counter))
    else:
        set_torch_compile_wrapper(model=patched, backend=counter)
    return patched


def compile_stats(model):
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    counter = CompileCounterWithBackend("eager")
    out = sample(compiled(model, counter), STEPS)
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
    eager = sample(patched, STEPS)
    out, frames, breaks = compile_stats(patched)
    assert (frames, breaks) == (plain_frames, plain_breaks)
    assert frames >= 1  # it did compile
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert (out - plain_out).abs().max() > 1e-2 * plain_out.abs().max()  # merging stayed on when compiled


def test_a_window_boundary_adds_one_graph(model, plain):
    _, plain_frames, plain_breaks = plain
    patched = with_mame(model, end_percent=0.5)
    eager = sample(patched, STEPS)
    out, frames, breaks = compile_stats(patched)
    assert breaks == plain_breaks
    assert frames == plain_frames + 1  # merging on, then off
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
