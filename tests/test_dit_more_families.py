"""MaMe on the further image/video DiTs of ComfyUI v0.3.75 named by issue 27, in-process with their
real classes (tiny, seeded: embedded_host/image_dit_models.py), sampled through ComfyUI's sampler.

AuraFlow (``MMDiT`` of comfy/ldm/aura) and Mochi (``AsymmDiTJoint``) merge: every attention call
of theirs is a joint self-attention ([registers + text, image] / [video, text]) routed through
``transformer_options``, and MaMe labels their blocks through ``patches_replace["dit"]``.
Cosmos 1 (``GeneralDIT``) and Cosmos Predict2 (``MiniTrainDIT``) merge: each block makes a
self-attention over the video tokens, then a cross-attention to the text; MaMe numbers the
blocks by counting the calls, two a block. OmniGen2 (``OmniGen2Transformer2DModel``) merges its
main layers over [text, reference images, image], numbered by counting the calls after its
refiners' (the reference-image refiner runs only with reference latents). PixArt and
HunyuanDiT pass through: their attention calls ``optimized_attention`` without ``transformer_options``, so no
override sees them (the counter below records none)."""
from __future__ import annotations

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
    passes_through_with_one_warning,
    registry_names_each_class,
    sample_image_dit,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

MERGING = ("auraflow", "mochi", "cosmos", "cosmos_predict2", "omnigen2")
CONTEXT = {"auraflow": 8 + 12, "mochi": 12, "omnigen2": 12}  # tokens beside the image in each call: AuraFlow's 8 registers + text
# attention calls per model call (cond and uncond batched): S self-attention over the image (merged),
# x cross-attention to the 12 text tokens, r a refiner's call (both left alone). AuraFlow: 2 double +
# 2 single layers; OmniGen2: context refiner (text), noise refiner (image), 2 layers.
CALLS = {"auraflow": "SSSS", "mochi": "SSS", "cosmos": "Sx" * 3, "cosmos_predict2": "Sx" * 3, "omnigen2": "rrSS"}
PASSING = {"pixart": "PixArt", "hunyuan_dit": "HunyuanDiT"}  # name -> the title its warning gives
FAMILY = {name: name for name in MERGING + tuple(PASSING)}


@pytest.fixture(scope="module")
def models(dit_host):
    from embedded_host.image_dit_models import build

    return {name: build(name) for name in FAMILY}


def grid(name):
    from embedded_host.image_dit_models import LATENTS

    shape = LATENTS[name][0]
    return tuple(shape[2:-2]) + (shape[-2] // 2, shape[-1] // 2)


def test_each_class_has_its_registry_entry(dit_host, models):
    registry_names_each_class(dit_host, models, FAMILY, MERGING)
    families = dit_host.nodes.families
    assert dit_host.nodes.dit_inspect.inspect_dit(models["cosmos"]).patch == (1, 2, 2)  # read from patch_spatial
    # AuraFlow's class is called MMDiT, as SD3's base class is: the module-qualified name tells them apart
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    assert families.family_of_class(MMDiT).name == "sd3"


@pytest.mark.parametrize("name", MERGING)
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, models, name):
    assert torch.equal(sample_image_dit(mame(dit_host, models[name], ratio=0.0), name), sample_image_dit(models[name], name))


@pytest.mark.parametrize("name", MERGING)
def test_self_attention_over_the_image_is_shortened(dit_host, models, name):
    full, calls, base, out = calls_plain_and_merged(dit_host, models[name], lambda model: sample_image_dit(model, name))
    n = math.prod(grid(name))
    merged = expected_merged(dit_host, name, grid(name))
    context = CONTEXT.get(name, 0)
    assert merged < n and len(full) == len(calls) == len(CALLS[name]), (len(full), len(calls))
    for kind, (b, q_full, k_full), (b2, q_len, k_len) in zip(CALLS[name], full, calls, strict=True):
        assert b == b2
        if kind == "S":
            assert q_full == k_full == n + context and q_len == k_len == merged + context, (q_full, q_len)
        else:
            assert (q_full, k_full) == (q_len, k_len), (kind, q_full, k_full, q_len, k_len)
            assert kind == "r" or (q_full, k_full) == (n, 12), (q_full, k_full)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5 if name != "mochi" else 1e-3 < change < 1.0, change  # Mochi: 0.51 on random weights


@pytest.mark.parametrize("name, override, full_at", [("auraflow", "double_1 = off, single_0 = off", (1, 2)),
                                                      ("mochi", "blocks_1 = off", (1,)),
                                                      ("cosmos", "blocks_0 = off", (0,)),
                                                      ("cosmos_predict2", "blocks_2 = off", (2,)),
                                                      ("omnigen2", "blocks_1 = off", (1,))])
def test_blocks_are_addressable(dit_host, models, name, override, full_at):
    model, counter = counted(models[name])
    sample_image_dit(mame(dit_host, model, overrides=override), name)
    n = math.prod(grid(name))
    per_block = [q == n + CONTEXT.get(name, 0) for kind, (_, q, _) in zip(CALLS[name], counter.calls, strict=True)
                 if kind == "S"]
    assert per_block == [i in full_at for i in range(len(per_block))], per_block


def test_omnigen2_with_a_reference_image_counts_its_reference_refiner(dit_host, models):
    # with reference latents the reference-image refiner runs before the layers, which attend over
    # [text, reference, image]: the layers are still numbered right (blocks_1 off, blocks_0 merged)
    extras = {"reference_latents": [torch.randn(1, 16, 16, 20, generator=seeded(8))]}  # 8 x 10 tokens
    model, counter = counted(models["omnigen2"])
    sample_image_dit(mame(dit_host, model, overrides="blocks_1 = off"), "omnigen2", extras=extras)
    n, ref = 16 * 20, 8 * 10
    merged = expected_merged(dit_host, "omnigen2", (16, 20))
    assert [q for _, q, _ in counter.calls] == [12, n, ref, 12 + ref + merged, 12 + ref + n], counter.calls


@pytest.mark.parametrize("name", MERGING)
def test_merge_map_draws_the_grid(dit_host, models, name):
    first_frame = grid(name)[-2:]
    merge_map_draws_the_grid(dit_host, models[name], lambda patched: sample_image_dit(patched, name), first_frame)


@pytest.mark.parametrize("name", PASSING)
def test_passes_through_with_one_warning_that_names_the_reason(dit_host, models, name, caplog):
    passes_through_with_one_warning(dit_host, models[name], lambda model: sample_image_dit(model, name), caplog, PASSING[name])
