"""Inside a real UNet, the patched self-attention's output equals plan.restore(attn(plan.merge(x)))
computed directly on the same input with the same plan (mode kv: attn(x, kv=plan.merge(x))),
where attn is written out here (projections, softmax with each merged key's logit + its
plan.key_log_size: proportional attention, output projection): a wrong integration (merging
off, wrong tokens restored, the wrong plan, a stale step, the size bias missing) fails here
even where the UNet's final output would hide it. Weights are scaled so the patched attention
output differs from plain attention by a known, non-trivial amount."""
import pytest
import torch
from conftest import seeded

from mame_core.block_step import BlockAddress


def explicit_attention(module, queries, keys, log_size=None):
    """softmax(q k^T / sqrt(d) + log_size) v through the module's own projections."""
    to_out = module.to_out[0]
    heads = module.heads
    q, k, v = module.to_q(queries), module.to_k(keys), module.to_v(keys)
    b, n, width = q.shape
    d = width // heads
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) * d ** -0.5
    if log_size is not None:
        logits = logits + log_size[:, None, None, :]
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, width)
    return to_out(out)


def reference(step, module, x, address, grid, mode):
    plan = step.plan(x, address, grid)
    assert not plan.is_identity and plan.key_log_size is not None
    merged = plan.merge(x)
    if mode == "qkv":
        return plan.restore(explicit_attention(module, merged, merged, plan.key_log_size))
    return explicit_attention(module, x, merged, plan.key_log_size)


def relative(a, b):
    return float((a - b).norm() / b.norm())


# diffusers ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,moved", [("qkv", 0.2), ("kv", 0.05)])
def test_diffusers_hook_output_is_the_plan_applied_to_attention(mode, moved):
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel

    from bench.random_pipeline import TINY_UNET, seeded_weights_
    from mame_diffusers import apply_mame, mame_state, remove_mame

    unet = seeded_weights_(UNet2DConditionModel(**TINY_UNET)).eval()
    ref_block = next(b for b in unet.down_blocks[0].attentions[0].transformer_blocks)
    attn = ref_block.attn1
    seen = {}
    attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))  # before MaMe's pre-hook
    apply_mame(unet, ratio=0.5, mode=mode, seed=11)
    attn.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))  # after MaMe's restore
    gen = seeded(2)
    sample = torch.randn(2, 4, 32, 32, generator=gen)
    context = torch.randn(2, 7, 32, generator=gen)
    with torch.no_grad():
        unet(sample, torch.tensor(400), encoder_hidden_states=context)
        step = mame_state(unet).step
        x = seen["x"]
        expected = reference(step, attn, x, BlockAddress("input", 1, 0, 1), (32, 32), mode)
        plain = explicit_attention(attn, x, x)
    remove_mame(unet)
    assert seen["out"].shape == x.shape
    torch.testing.assert_close(seen["out"], expected, rtol=1e-4, atol=1e-5)
    assert relative(seen["out"], plain) > moved  # merging visibly moves attention at this weight scale


# ComfyUI (2024-03 host in-process) --------------------------------------------------------


@pytest.fixture(scope="module")
def comfy_model():
    from comfy_models import small_sd15

    return small_sd15()


def run_captured(model, stack):
    """Sample one step through ComfyUI's sampler with capture patches around the MaMe node(s):
    one before them (the block's input) and one after (the patched attention output)."""
    from comfy_models import mame_patch, sample

    seen = {}

    def capture_in(n, context, value, extra):
        if tuple(extra["block"]) == ("input", 1):
            seen["x"] = n
        return n, context, value

    def capture_out(out, extra):
        if tuple(extra["block"]) == ("input", 1):
            seen["out"] = out
        return out

    first = model.clone()
    first.set_model_attn1_patch(capture_in)
    first.raw_unet = model.raw_unet
    patched = first
    for inputs in stack:
        patched = mame_patch(patched, **inputs)
    patched.set_model_attn1_output_patch(capture_out)
    sample(patched, steps=1)
    return patched, seen


@pytest.mark.e2e
@pytest.mark.parametrize("mode,moved", [("qkv", 0.2), ("kv", 0.05)])
@pytest.mark.parametrize("kernel", ["attention_pytorch", "attention_sub_quad"])
def test_comfyui_patched_attention_is_the_plan_applied_to_attention(comfy_model, mode, moved, kernel, monkeypatch):
    # The host's kernel decides how the size bias reaches it: attention_pytorch on a CPU takes
    # it as a key mask, sub-quadratic attention as an extra channel; both must be exact.
    import comfy.ldm.modules.attention as comfy_attention

    masks = []
    chosen = getattr(comfy_attention, kernel)

    def kernel_spy(q, k, v, heads, mask=None, **kwargs):
        masks.append(None if mask is None else tuple(mask.shape))
        return chosen(q, k, v, heads, mask=mask, **kwargs)

    kernel_spy.__name__ = kernel
    monkeypatch.setattr(comfy_attention, "optimized_attention", kernel_spy)
    patched, seen = run_captured(comfy_model, [dict(mode=mode, seed=5)])
    merged_calls = [m for m in masks if m is not None]
    assert bool(merged_calls) == (kernel == "attention_pytorch")
    mame = patched.model_options["transformer_options"]["patches"]["attn1_patch"][1].__self__
    attn = comfy_model.raw_unet.input_blocks[1][1].transformer_blocks[0].attn1
    x = seen["x"]
    with torch.no_grad():
        expected = reference(mame.step, attn, x, BlockAddress("input", 1, 0, 1), (32, 32), mode)
        plain = explicit_attention(attn, x, x)
    torch.testing.assert_close(seen["out"], expected, rtol=1e-4, atol=1e-5)
    assert relative(seen["out"], plain) > moved


@pytest.mark.e2e
def test_comfyui_stacked_pair_applies_the_upstream_nodes_plan_once(comfy_model):
    patched, seen = run_captured(comfy_model, [dict(ratio=0.5, seed=5), dict(ratio=0.3, seed=9)])
    patches = patched.model_options["transformer_options"]["patches"]["attn1_patch"]
    upstream, downstream = patches[1].__self__, patches[2].__self__
    attn = comfy_model.raw_unet.input_blocks[1][1].transformer_blocks[0].attn1
    with torch.no_grad():
        expected = reference(upstream.step, attn, seen["x"], BlockAddress("input", 1, 0, 1), (32, 32), "qkv")
    torch.testing.assert_close(seen["out"], expected, rtol=1e-4, atol=1e-5)
    assert "input_1" in upstream.last_pass and "input_1" not in downstream.last_pass
