"""What the DiT test modules share: an attention override that records each call's lengths, the
MaMe node and its override on a tiny model, the sampler of the tiny image DiTs, the merged length
the engine gives a grid, and the checks several families run alike (extra tokens come back exact,
the Merge Map draws the grid)."""
from __future__ import annotations

import logging
import math

import torch
from conftest import seeded


class AttentionCounter:
    """An attention override under MaMe: records (batch, q length, k length) of every call, and
    with ``masks`` the mask it was given (a copy, or None) as a fourth item."""

    def __init__(self, masks: bool = False):
        self.calls = []
        self.masks = masks

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, *args, **kwargs):
        q, k = args[0], args[1]
        seq = 2 if kwargs.get("skip_reshape") else 1
        call = (q.shape[0], q.shape[seq], k.shape[seq])
        if self.masks:
            mask = kwargs.get("mask")
            call += (None if mask is None else mask.clone(),)
        self.calls.append(call)
        return func(*args, **kwargs)


def counted(model, masks: bool = False):
    """A clone of ``model`` with an ``AttentionCounter`` installed (MaMe chains it), and the counter."""
    counter = AttentionCounter(masks)
    clone = model.clone()
    clone.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counter
    return clone, counter


def registry_names_each_class(host, models, family, merging):
    """Each model's class finds the registry entry ``family[name]``, which merges iff ``name`` is in ``merging``."""
    families = host.nodes.families
    for name, model in models.items():
        entry = families.family_of_class(type(model.model.diffusion_model))
        assert entry is not None and entry.name == family[name], (name, entry)
        assert entry.merges == (name in merging), name


def calls_plain_and_merged(host, model, run, masks=False):
    """``run`` (which samples the model it is given) on ``model`` and on MaMe over it, with an
    ``AttentionCounter`` installed: (calls without MaMe, calls with it, output without, output with)."""
    model, counter = counted(model, masks)
    base = run(model)
    full = list(counter.calls)
    counter.calls.clear()
    out = run(mame(host, model))
    return full, counter.calls, base, out


def passes_through_with_one_warning(host, model, run, caplog, title):
    """No attention call of ``model`` reaches an override, MaMe hands the model back as it is (the
    output equals no node) and warns once, naming ``title`` and the missing transformer_options."""
    clone, counter = counted(model)
    base = run(clone)
    assert counter.calls == []
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        patched = mame(host, model)
    assert patched is model
    assert torch.equal(run(patched), run(model))
    assert torch.isfinite(base).all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and title in warnings[0] and "transformer_options" in warnings[0], warnings


def mame(host, model, ratio=0.5, mode="qkv", start=0.0, end=1.0, seed=0, overrides="", schedule=None):
    node = host.NODE_CLASS_MAPPINGS["MaMe"]()
    return node.patch(model, ratio, 0.7, mode, 8, "auto", start, end, seed, overrides, schedule)[0]


def started_override(host, model, mode="qkv"):
    """MaMe's attention override on ``model``, its block step started at the first step."""
    override = mame(host, model, mode=mode).model_options["transformer_options"]["optimized_attention_override"]
    override.step.start_call(0.0, torch.device("cpu"))
    return override


def expected_merged(host, family, grid, ratio=0.5):
    """The merged image length the engine gives this grid (asked of the engine, not hard-coded)."""
    dit_patch = host.nodes.dit_patch
    core = host.mame_core
    step = core.block_step.BlockStep(core.MergeSettings(ratio=ratio, tile=8), core.Schedule(ratio=ratio), 0)
    step.start_call(0.0, torch.device("cpu"))
    x = torch.randn(1, math.prod(grid), 64, generator=seeded(5))
    return dit_patch.plan_image(step, x, core.block_step.BlockAddress("blocks", 0), grid).merged_tokens


def tiled_image(heads, dim, grid, generator):
    """[1, heads, h*w, dim] image values, one value per 8x8 tile (tiles cut at the grid's edge)."""
    h, w = grid
    tiles = torch.randn(1, heads, -(-h // 8), -(-w // 8), dim, generator=generator)
    image = tiles.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)[:, :, :h, :w]
    return image.reshape(1, heads, h * w, dim)


def extra_tokens_come_back_exact(host, model, extra, call_info, seed):
    """A per-token "attention" (output = v) over 16x16 video tokens that are copies of their 8x8
    tile, followed by ``extra`` tokens unlike any video token: the call runs on the merged video
    plus the extra tokens, and the extra tokens come back exactly."""
    dit_patch = host.nodes.dit_patch
    override = started_override(host, model)
    heads, dim, n = 2, 16, 256
    g = seeded(seed)
    v = torch.cat([tiled_image(heads, dim, (16, 16), g), torch.randn(1, heads, extra, dim, generator=g) * 10], dim=2)
    seen = []

    def values_as_output(q, k, v, heads, skip_reshape=False, **kwargs):
        seen.append(q.shape[1])
        return v

    options = {dit_patch.CALL_KEY: call_info, dit_patch.BLOCK_KEY: ("blocks", 0), dit_patch.ATTN_COUNT_KEY: 0}
    out = override(values_as_output, v.clone(), v.clone(), v.clone(), heads, skip_reshape=True,
                   transformer_options=options)
    expected = v.transpose(1, 2).reshape(1, n + extra, heads * dim)
    assert seen == [expected_merged(host, "wan", (1, 16, 16)) + extra]
    assert torch.equal(out[:, n:], expected[:, n:])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=4e-6)


def merge_map_draws_the_grid(host, model, run, grid, pixels=16):
    """MaMe with a Merge Map node reading it; ``run(patched)`` samples once; the map drawn over an
    image of ``pixels`` per token names the (first frame's) ``grid`` and changes the image."""
    h, w = grid
    prompt = {"2": {"class_type": "MaMe", "inputs": {}},
              "9": {"class_type": "MaMeMergeMap", "inputs": {"merge_map": ["2", 1]}}}
    node = host.NODE_CLASS_MAPPINGS["MaMe"]()
    patched, recorder = node.patch(model, 0.5, 0.7, "qkv", 8, "auto", 0.0, 1.0, 0, "", None,
                                   prompt=prompt, unique_id="2")
    run(patched)
    image = torch.rand(1, h * pixels, w * pixels, 3, generator=seeded(4))
    drawn, text = host.NODE_CLASS_MAPPINGS["MaMeMergeMap"]().draw(image, recorder, "auto", 0, -1, 0, 0.5)["result"]
    assert f"grid {h}x{w}" in text, text
    assert drawn.shape == image.shape and not torch.equal(drawn, image)


def sample_image_dit(model, name, steps=1, cfg=2.0, extras=None):
    """A tiny model of embedded_host/image_dit_models.py sampled through ComfyUI's sampler (seeded
    noise, its own conditioning, ``extras`` added to both conds)."""
    import comfy.sample

    from embedded_host.image_dit_models import LATENTS, conditioning

    shape = LATENTS[name][0]
    noise = torch.randn(shape, generator=seeded(0))
    cond, uncond = conditioning(name), conditioning(name, seed=2)
    for c in (cond, uncond):
        c[0][1].update(extras or {})
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", cond, uncond, torch.zeros(shape),
                                   seed=0, disable_pbar=True)
