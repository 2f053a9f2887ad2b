"""torch.compile(unet, fullgraph=True) after apply_mame: one graph serves every sampling step,
a window boundary adds exactly one, compiled output equals eager MaMe, and compiling never
switches merging off (issue 14)."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
import torch._dynamo as dynamo  # noqa: E402
from conftest import seeded  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

from bench.random_pipeline import TINY_UNET, seeded_weights_  # noqa: E402
from mame_diffusers import apply_mame, mame_state, remove_mame  # noqa: E402

STEPS = 10
# Two levels, one layer each, attention at d1 and in the middle: small enough that dynamo
# traces it in seconds, with every kind of block MaMe hooks.
SMALL_UNET = dict(TINY_UNET, layers_per_block=1, block_out_channels=(32, 64),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


@pytest.fixture(scope="module")
def unet():
    return seeded_weights_(UNet2DConditionModel(**SMALL_UNET)).eval()


def sampling(model, steps=STEPS, size=32):
    """A DDIM-like loop: the timestep and the latent change every step, shapes do not."""
    gen = seeded(5)
    x = torch.randn(2, 4, size, size, generator=gen)
    context = torch.randn(2, 7, SMALL_UNET["cross_attention_dim"], generator=gen)
    outs = []
    with torch.no_grad():
        for t in torch.linspace(999, 1, steps).round().long():
            out = model(x, t, encoder_hidden_states=context).sample
            outs.append(out)
            x = x - 0.05 * out
    return outs


def compiled_run(unet, backend="eager"):
    dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(unet, backend=counter, fullgraph=True)
    outs = sampling(compiled)
    return outs, counter


@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_one_graph_for_every_step_and_the_same_output_as_eager(unet, mode):
    plain = sampling(unet)
    apply_mame(unet, ratio=0.5, mode=mode, seed=3)
    try:
        eager = sampling(unet)
        compiled, counter = compiled_run(unet)
        assert mame_state(unet).step.calls == 2 * STEPS  # the host part ran at every call, eager and compiled
    finally:
        remove_mame(unet)
        dynamo.reset()
    assert counter.frame_count == 1, "recompiled during sampling"
    for step, (c, e, p) in enumerate(zip(compiled, eager, plain, strict=False)):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5, msg=f"step {step}")
        # merging stays on when compiled: every step moves the output well beyond float noise
        assert (c - p).abs().max() > 1e-3 * p.abs().max(), f"step {step}: compiled output equals no MaMe"


def test_a_window_boundary_adds_exactly_one_graph(unet):
    apply_mame(unet, ratio=0.5, start_percent=0.0, end_percent=0.5)
    try:
        eager = sampling(unet)
        compiled, counter = compiled_run(unet)
    finally:
        remove_mame(unet)
        dynamo.reset()
    assert counter.frame_count == 2  # merging on, then off: each state compiled once
    for c, e in zip(compiled, eager, strict=False):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)


def test_without_mame_compiles_to_the_same_graph_count(unet):
    _, counter = compiled_run(unet)
    dynamo.reset()
    assert counter.frame_count == 1


def test_inductor(unet):
    """The real compiler once (CPU, gcc): same output as eager MaMe, no recompilation."""
    apply_mame(unet, ratio=0.5, seed=1)
    try:
        eager = sampling(unet, steps=3)
        dynamo.reset()
        counter = CompileCounterWithBackend("inductor")
        compiled = sampling(torch.compile(unet, backend=counter, fullgraph=True), steps=3)
    finally:
        remove_mame(unet)
        dynamo.reset()
    assert counter.frame_count == 1
    for c, e in zip(compiled, eager, strict=False):
        torch.testing.assert_close(c, e, rtol=1e-3, atol=1e-4)
