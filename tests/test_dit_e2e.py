"""MaMe on DiTs and video models, in-process with ComfyUI v0.3.75's real model classes
(Flux, MMDiT/SD3, WanModel, NextDiT as Z-Image), ModelPatcher and sampler. Models are tiny with seeded weights
(embedded_host/dit_models.py); text conditioning is seeded tensors in place of the text
encoders' output (T5-XXL / umT5 are too large to generate here)."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import seeded
from dit_helpers import (
    calls_plain_and_merged,
    counted,
    expected_merged,
    mame,
    merge_map_draws_the_grid,
    started_override,
    tiled_image,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

LATENTS = {"flux": (1, 16, 32, 40), "flux2": (1, 128, 16, 20), "sd3": (1, 16, 32, 40), "wan": (1, 16, 5, 16, 20),
           "zimage": (1, 16, 32, 40)}
# per model call: blocks (+ SD3's x-only attn2, Wan's cross, NextDiT's context and noise refiners)
ATTENTION_CALLS = {"flux": 4, "flux2": 4, "sd3": 3, "wan": 6, "zimage": 4}
PATCH = {"flux2": 1}  # latent cells per token side; 2 elsewhere
CONTEXT_TOKENS = 12
TEXT_TOKENS = {"flux2": 512, "zimage": 32}  # Flux.2 pads the text to 512 tokens, Z-Image to a multiple of 32
REFINER_CALLS = {"zimage": 2}  # NextDiT's context and noise refiner: the first calls, left at full length
IMAGE_PAD = {"zimage": 32}  # Z-Image pads the image tokens with learned tokens to a multiple of 32


@pytest.fixture(scope="module")
def models(dit_host):
    from embedded_host.dit_models import build_model

    return {family: build_model(family) for family in LATENTS}


def sample(model, family, steps=2, cfg=2.0, shape=None, noise_seed=0, batch=1):
    import comfy.sample

    from embedded_host.dit_models import conditioning

    shape = tuple(shape or LATENTS[family])
    shape = (batch,) + shape[1:]
    noise = torch.randn(shape, generator=seeded(noise_seed))
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conditioning(family),
                                   conditioning(family, seed=2), torch.zeros(shape), seed=0, disable_pbar=True)


def image_pad(family, n):
    return (-n) % IMAGE_PAD.get(family, 1)


def grid_of(family, shape):
    if family == "wan":
        return (shape[2], shape[3] // 2, shape[4] // 2)
    p = PATCH.get(family, 2)
    return (-(-shape[2] // p), -(-shape[3] // p))


@pytest.mark.parametrize("family", sorted(LATENTS))
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, models, family):
    base = sample(models[family], family)
    assert torch.equal(sample(mame(dit_host, models[family], ratio=0.0), family), base)


@pytest.mark.parametrize("family", sorted(LATENTS))
def test_attention_runs_on_the_merged_length_and_moves_the_output(dit_host, models, family):
    full_calls, calls, base, out = calls_plain_and_merged(dit_host, models[family],
                                                          lambda model: sample(model, family, steps=1))
    grid = grid_of(family, LATENTS[family])
    n = math.prod(grid)
    merged = expected_merged(dit_host, family, grid)
    assert merged < n
    assert len(calls) == len(full_calls) == ATTENTION_CALLS[family]
    assert {b for b, _, _ in calls} == {2}  # cond and uncond in one CFG batch
    pad = image_pad(family, n)
    for i, ((b, q_full, k_full), (b2, q_len, k_len)) in enumerate(zip(full_calls, calls, strict=True)):
        assert b == b2
        if i < REFINER_CALLS.get(family, 0):  # NextDiT's refiners (caption only, image + pad only): untouched
            assert (q_len, k_len) == (q_full, k_full) and q_full in (TEXT_TOKENS[family], n + pad)
            continue
        if k_full != q_full:  # Wan's cross-attention to the text: untouched
            assert family == "wan" and (q_len, k_len) == (q_full, k_full) == (n, CONTEXT_TOKENS)
            continue
        text = q_full - n - pad
        assert text in ((TEXT_TOKENS.get(family, CONTEXT_TOKENS), 0) if family != "wan" else (0,))
        assert q_len == k_len == text + merged + pad, (family, q_full, q_len)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change  # attention matters at this weight scale, merging stays close


def test_restore_is_exact_where_image_tokens_are_copies_of_their_destinations(dit_host, models):
    dit_patch = dit_host.nodes.dit_patch
    override = started_override(dit_host, models["flux"])
    heads, dim, text, grid = 4, 16, 5, (16, 16)
    g = seeded(3)
    image = tiled_image(heads, dim, grid, g)
    v = torch.cat([torch.randn(1, heads, text, dim, generator=g), image], dim=2)
    options = {dit_patch.CALL_KEY: dit_patch.CallInfo(grid, text), "block_type": "double", "block_index": 0}
    seen = []

    def values_as_output(q, k, v, heads, skip_reshape=False, **kwargs):  # a per-token "attention"
        seen.append(q.shape[1])
        return v

    out = override(values_as_output, v.clone(), v.clone(), v.clone(), heads, skip_reshape=True,
                   transformer_options=options)
    expected = v.transpose(1, 2).reshape(1, text + 256, heads * dim)
    assert seen == [text + expected_merged(dit_host, "flux", grid)]
    assert torch.equal(out[:, :text], expected[:, :text])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=4e-6)  # fp32 rounding of averaging equal copies


@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_size_bias_as_a_mask_equals_the_size_channel(dit_host, models, mode):
    # The host's attention_pytorch on a CPU gets the log-size bias as an additive key mask; any
    # other kernel gets the extra channel per head. Both must be the same proportional attention.
    import comfy.ldm.modules.attention as comfy_attention

    dit_patch = dit_host.nodes.dit_patch
    model = mame(dit_host, models["flux"], mode=mode)
    override = model.model_options["transformer_options"]["optimized_attention_override"]
    override.step.start_call(0.0, torch.device("cpu"))
    heads, dim, text, grid = 4, 16, 5, (16, 16)
    g = seeded(4)
    q, k, v = (torch.randn(1, heads, text + 256, dim, generator=g) for _ in range(3))
    options = {dit_patch.CALL_KEY: dit_patch.CallInfo(grid, text), "block_type": "double", "block_index": 0}
    seen = {}

    def spy(name):
        def attention(q, k, v, heads, mask=None, **kwargs):
            seen[name] = (q.shape[-1], None if mask is None else tuple(mask.shape))
            return comfy_attention.attention_pytorch(q, k, v, heads, mask=mask, **kwargs)
        attention.__name__ = name
        return attention

    def run(func):
        return override(func, q, k, v, heads, skip_reshape=True, mask=None, transformer_options=dict(options))

    masked, channelled = run(spy("attention_pytorch")), run(spy("attention_sub_quad"))
    merged_length = text + expected_merged(dit_host, "flux", grid)
    assert seen["attention_pytorch"] == (heads * dim, (1, 1, 1, merged_length))
    assert seen["attention_sub_quad"][1] is None and seen["attention_sub_quad"][0] > heads * dim
    torch.testing.assert_close(masked, channelled, rtol=1e-5, atol=1e-5)
    plain = override(lambda *a, **kw: comfy_attention.attention_pytorch(*a, **kw), q, k, v, heads,
                     skip_reshape=True, transformer_options={})  # no call info: not merged
    assert (masked - plain).abs().max() > 1e-3


def test_cfg_batch_rows_merge_independently(dit_host, models):
    model = mame(dit_host, models["flux"])
    both = sample(model, "flux", batch=2)  # 2 latents x (cond, uncond) in one model call
    noise = torch.randn((2,) + LATENTS["flux"][1:], generator=seeded(0))
    import comfy.sample

    from embedded_host.dit_models import conditioning

    for row in range(2):
        with torch.no_grad():
            alone = comfy.sample.sample(model, noise[row:row + 1], 2, 2.0, "euler", "simple", conditioning("flux"),
                                        conditioning("flux", seed=2), torch.zeros_like(noise[:1]), seed=0,
                                        disable_pbar=True)
        torch.testing.assert_close(both[row:row + 1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family,shape", [("flux", (1, 16, 38, 26)), ("wan", (1, 16, 5, 12, 18)),
                                          ("zimage", (1, 16, 30, 38)), ("zimage", (1, 16, 31, 37))])
def test_odd_grids_and_frame_counts(dit_host, models, family, shape):
    # Flux 19x13 tokens (a 1216x832-style grid that tiles of 8 do not divide); Wan 5 latent frames;
    # Z-Image 15x19 = 285 image tokens + 3 pad tokens (and an odd latent, padded to whole patches:
    # 16x19 = 304 + 16 pad tokens), so the learned image pad tokens follow the image in every block.
    model, counter = counted(models[family])
    out = sample(mame(dit_host, model), family, steps=1, shape=shape)
    grid = grid_of(family, shape)
    merged = expected_merged(dit_host, family, grid)
    n = math.prod(grid)
    pad = image_pad(family, n)
    assert (pad > 0) == (family == "zimage")
    self_calls = [c for c in counter.calls[REFINER_CALLS.get(family, 0):] if c[1] == c[2]]
    text = {"flux": CONTEXT_TOKENS, "zimage": TEXT_TOKENS["zimage"]}.get(family, 0)
    assert self_calls and all(q == text + merged + pad for _, q, _ in self_calls), (self_calls, text, merged, pad)
    assert merged < n and torch.isfinite(out).all()


def test_nextdit_pad_tokens_stay_outside_the_merged_span(dit_host, models):
    # A per-token "attention" (output = v) on caption, image tokens that are copies of their 8x8
    # tile, and image pad tokens that differ from every image token: the caption and the pad
    # tokens come back exactly, so no pad token was merged into (or averaged with) the image.
    dit_patch = dit_host.nodes.dit_patch
    override = started_override(dit_host, models["zimage"])
    heads, dim, caption, grid = 4, 16, 32, (16, 15)
    n = grid[0] * grid[1]
    pad = image_pad("zimage", n)
    assert pad == 16
    g = seeded(6)
    v = torch.cat([torch.randn(1, heads, caption, dim, generator=g), tiled_image(heads, dim, grid, g),
                   torch.randn(1, heads, pad, dim, generator=g) * 10], dim=2)
    leading = override.model.leading_calls
    assert leading == REFINER_CALLS["zimage"] and override.model.pad_multiple == 32
    seen = []

    def values_as_output(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
        seen.append(q.shape[2] if skip_reshape else q.shape[1])
        return v

    options = {dit_patch.CALL_KEY: dit_patch.CallInfo(grid, 12), dit_patch.ATTN_COUNT_KEY: leading}
    out = override(values_as_output, v.clone(), v.clone(), v.clone(), heads, None, skip_reshape=True,
                   transformer_options=options)  # NextDiT passes its (None) mask positionally
    expected = v.transpose(1, 2).reshape(1, caption + n + pad, heads * dim)
    assert seen == [caption + expected_merged(dit_host, "zimage", grid) + pad]
    assert torch.equal(out[:, :caption], expected[:, :caption]) and torch.equal(out[:, -pad:], expected[:, -pad:])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=4e-6)
    assert options[dit_patch.ATTN_COUNT_KEY] == leading + 1
    masked = override(values_as_output, v, v, v, heads, torch.zeros(1, 1, 1, caption + n + pad), skip_reshape=True,
                      transformer_options=options)  # a masked call runs at full length, but counts
    assert seen[-1] == caption + n + pad and masked.shape == (1, heads, caption + n + pad, dim)
    assert options[dit_patch.ATTN_COUNT_KEY] == leading + 2


def test_second_mame_node_leaves_merged_blocks_alone(dit_host, models):
    model, counter = counted(models["flux"])
    once = mame(dit_host, model, ratio=0.5)
    single = sample(once, "flux", steps=1)
    single_calls = list(counter.calls)
    counter.calls.clear()
    stacked = sample(mame(dit_host, once, ratio=0.3, seed=7), "flux", steps=1)
    assert counter.calls == single_calls
    assert torch.equal(stacked, single)


def test_schedule_addresses_dit_blocks_and_window(dit_host, models):
    model, counter = counted(models["flux"])
    sample(mame(dit_host, model, overrides="single_* = off"), "flux", steps=1)
    full = CONTEXT_TOKENS + 320
    lengths = [q for _, q, _ in counter.calls]
    assert lengths[:2] != [full, full] and lengths[2:4] == [full, full]  # double merged, single off

    counter.calls.clear()
    sample(mame(dit_host, model, start=0.5), "flux", steps=4, cfg=1.0)
    per_step = [counter.calls[i:i + 4] for i in range(0, len(counter.calls), 4)]
    assert len(per_step) == 4
    assert all(q == full for _, q, _ in per_step[0] + per_step[1])
    assert all(q < full for _, q, _ in per_step[3])


def test_unknown_dit_family_passes_through_with_one_warning(dit_host, caplog):
    import comfy.model_base
    from comfy.model_patcher import ModelPatcher

    class Mystery(torch.nn.Module):
        def forward(self, x, *args, **kwargs):
            return x

    base = comfy.model_base.BaseModel.__new__(comfy.model_base.BaseModel)
    torch.nn.Module.__init__(base)
    base.diffusion_model = Mystery()
    patcher = ModelPatcher(base, torch.device("cpu"), torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        out = mame(dit_host, patcher)
    assert out is patcher
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Mystery" in warnings[0]


def test_mame_stacks_with_easycache(dit_host, models):
    # EasyCache (ComfyUI's own node) skips whole model calls; MaMe shortens attention in the
    # calls that run. A high reuse threshold makes the cache skip steps of this random model.
    from comfy_extras.nodes_easycache import EasyCacheNode

    model, counter = counted(models["flux"])
    cached = EasyCacheNode.execute(mame(dit_host, model), 3.0, 0.15, 0.95, False).result[0]
    steps = 8
    out = sample(cached, "flux", steps=steps, cfg=1.0)
    calls = len(counter.calls) // ATTENTION_CALLS["flux"]
    assert 1 <= calls < steps  # the cache skipped steps
    merged = CONTEXT_TOKENS + expected_merged(dit_host, "flux", (16, 20))
    assert all(q == merged for _, q, _ in counter.calls)  # every call that ran was merged
    assert torch.isfinite(out).all()


def test_override_installed_before_and_after_mame_both_act(dit_host, models):
    # Before: `counted` installs an override that MaMe finds and chains (a SageAttention-style
    # patch): it runs on the merged length. After: an override that chains the one it finds,
    # as ComfyUI's block-sparse attention node does: it sees every call at full length.
    model, before = counted(models["flux"])
    patched = mame(dit_host, model)
    found = patched.model_options["transformer_options"]["optimized_attention_override"]
    after_calls = []

    def after(func, *args, **kwargs):
        seq = 2 if kwargs.get("skip_reshape") else 1
        after_calls.append(args[0].shape[seq])
        return found(func, *args, **kwargs)

    later = patched.clone()
    later.model_options["transformer_options"]["optimized_attention_override"] = after
    sample(later, "flux", steps=1)
    grid = grid_of("flux", LATENTS["flux"])
    full = CONTEXT_TOKENS + grid[0] * grid[1]
    merged = CONTEXT_TOKENS + expected_merged(dit_host, "flux", grid)
    assert after_calls == [full] * ATTENTION_CALLS["flux"]
    assert [q for _, q, _ in before.calls] == [merged] * ATTENTION_CALLS["flux"]


@pytest.mark.parametrize("family", ["flux2", "zimage"])
def test_stages_are_addressable_and_the_merge_map_draws_the_grid(dit_host, models, family):
    # Each stage the registry names for the family, and its last block, turn off alone (NextDiT's
    # refiners are never merged); the Merge Map draws the grid.
    dit = dit_host.nodes.dit_inspect.inspect_dit(models[family])
    grid = grid_of(family, LATENTS[family])
    n = grid[0] * grid[1]
    full = TEXT_TOKENS.get(family, CONTEXT_TOKENS) + n + image_pad(family, n)
    refiners = REFINER_CALLS.get(family, 0)
    model, counter = counted(models[family])
    sample(model, family, steps=1)
    unmerged = [q for _, q, _ in counter.calls]
    assert unmerged[refiners:] == [full] * (ATTENTION_CALLS[family] - refiners)
    first = refiners
    for stage in dit.family.stages:
        count = dit.blocks[stage]
        for rule, off in ((f"{stage}_* = off", range(first, first + count)), (f"{stage}_{count - 1} = off",
                                                                             [first + count - 1])):
            counter.calls.clear()
            sample(mame(dit_host, model, overrides=rule), family, steps=1)
            lengths = [q for _, q, _ in counter.calls]
            assert len(lengths) == ATTENTION_CALLS[family]
            assert lengths[:refiners] == unmerged[:refiners], (rule, lengths)
            assert all((lengths[i] == full) == (i in off) for i in range(refiners, len(lengths))), (rule, lengths)
        first += count
    merge_map_draws_the_grid(dit_host, models[family], lambda patched: sample(patched, family, steps=1), grid)


def test_an_error_switches_dit_merging_off_once_as_on_a_unet(dit_host, models, caplog, monkeypatch):
    """One error policy for both patches (nodes/kit.py ErrorStop): the first exception in the
    DiT override is said once with its cause, sampling goes on unmerged, later calls do not try again."""
    patched = mame(dit_host, models["flux"])
    override = patched.model_options["transformer_options"]["optimized_attention_override"]
    tried = []

    def broken(*args, **kwargs):
        tried.append(1)
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(override.step, "plan", broken)
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        out = sample(patched, "flux")
    assert torch.equal(out, sample(models["flux"], "flux"))
    warnings = [r.getMessage() for r in caplog.records if "switched off" in r.getMessage()]
    assert warnings == ["MaMe: merging switched off for this model after an error in its DiT attention override: "
                        "RuntimeError: Expected all tensors to be on the same device"]
    assert len(tried) == 1 and override.stop.error.startswith("RuntimeError")
