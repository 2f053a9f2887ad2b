"""MaMe on the Flux-like DiTs of ComfyUI v0.3.75 named by issue 27, in-process with their real
classes (tiny, seeded: embedded_host/image_dit_models.py), sampled through ComfyUI's sampler.

Each block of theirs makes one joint self-attention, routed through ``transformer_options``.
Chroma (``Chroma``), Chroma Radiance (``ChromaRadiance``: Chroma's blocks on 16x16-pixel patches)
and Qwen-Image (``QwenImageTransformer2DModel``) attend over [text, image] and label their blocks
(``block_type`` / ``block_index``) themselves. HiDream (``HiDreamImageTransformer2DModel``) attends
over [image, T5 + Llama text, the block's own Llama tokens], unmasked, and labels nothing: MaMe
numbers its double-stream, then its single-stream blocks by counting the calls. With HiDream E1's
``image_cond`` (joined to the image along its width, so the image is no longer one span) those
calls run at full length, with one warning."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from dit_helpers import (
    calls_plain_and_merged,
    counted,
    expected_merged,
    extra_tokens_come_back_exact,
    mame,
    merge_map_draws_the_grid,
    registry_names_each_class,
    sample_image_dit,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

MERGING = ("chroma", "chroma_radiance", "qwen_image", "hidream")
# tokens beside the image in every joint call: 12 text; HiDream 12 T5 + 12 Llama + the block's 12 Llama
BESIDE = {"chroma": 12, "chroma_radiance": 12, "qwen_image": 12, "hidream": 36}
CALLS = {"chroma": 4, "chroma_radiance": 4, "qwen_image": 2, "hidream": 4}  # 2 double + 2 single; Qwen: 2 blocks
FAMILY = {name: name for name in MERGING}


@pytest.fixture(scope="module")
def models(dit_host):
    from embedded_host.image_dit_models import build

    return {name: build(name) for name in FAMILY}


def grid(host, models, name):
    from embedded_host.image_dit_models import LATENTS

    inspect = host.nodes.dit_inspect
    return inspect.token_grid(LATENTS[name][0], inspect.inspect_dit(models[name]).patch)


def test_each_class_has_its_registry_entry(dit_host, models):
    registry_names_each_class(dit_host, models, FAMILY, MERGING)
    assert dit_host.nodes.dit_inspect.inspect_dit(models["chroma_radiance"]).patch == (1, 16, 16)
    assert grid(dit_host, models, "chroma_radiance") == (8, 10)  # a 128x160 RGB image


@pytest.mark.parametrize("name", MERGING)
def test_self_attention_over_the_image_is_shortened(dit_host, models, name):
    full, calls, base, out = calls_plain_and_merged(dit_host, models[name], lambda model: sample_image_dit(model, name))
    shape = grid(dit_host, models, name)
    n, merged, beside = math.prod(shape), expected_merged(dit_host, name, shape), BESIDE[name]
    assert merged < n and len(full) == len(calls) == CALLS[name], (len(full), len(calls))
    for (b, q_full, k_full), (b2, q_len, k_len) in zip(full, calls, strict=True):
        assert b == b2 and q_full == k_full == n + beside and q_len == k_len == merged + beside, (q_full, q_len)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change


@pytest.mark.parametrize("name, override, full_at", [("chroma", "double_1 = off, single_0 = off", (1, 2)),
                                                      ("chroma_radiance", "single_1 = off", (3,)),
                                                      ("qwen_image", "double_0 = off", (0,)),
                                                      ("hidream", "double_1 = off, single_0 = off", (1, 2))])
def test_blocks_are_addressable(dit_host, models, name, override, full_at):
    model, counter = counted(models[name])
    sample_image_dit(mame(dit_host, model, overrides=override), name)
    full_length = math.prod(grid(dit_host, models, name)) + BESIDE[name]
    per_call = [q == full_length for _, q, _ in counter.calls]
    assert per_call == [i in full_at for i in range(CALLS[name])], per_call


@pytest.mark.parametrize("name", MERGING)
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, models, name):
    assert torch.equal(sample_image_dit(mame(dit_host, models[name], ratio=0.0), name), sample_image_dit(models[name], name))


@pytest.mark.parametrize("name", MERGING)
def test_merge_map_draws_the_grid(dit_host, models, name):
    first_frame = grid(dit_host, models, name)[-2:]
    merge_map_draws_the_grid(dit_host, models[name], lambda patched: sample_image_dit(patched, name), first_frame)


def test_qwen_image_reference_latent_stays_outside_the_merged_span(dit_host, models):
    # Qwen-Image Edit: a reference latent's tokens follow the image, [text, image, reference]
    extras = {"reference_latents": [torch.randn(1, 16, 1, 16, 20, generator=torch.Generator().manual_seed(8))]}
    model, counter = counted(models["qwen_image"])
    sample_image_dit(mame(dit_host, model), "qwen_image", extras=extras)
    merged = expected_merged(dit_host, "qwen_image", (1, 16, 20))
    assert [q for _, q, _ in counter.calls] == [12 + merged + 80] * 2, counter.calls


def test_hidream_text_after_the_image_stays_outside_the_merged_span(dit_host, models):
    # HiDream (layout image_first): its T5 and Llama tokens follow the image
    call = dit_host.nodes.dit_patch.CallInfo((1, 16, 16), 12)
    extra_tokens_come_back_exact(dit_host, models["hidream"], 36, call, seed=7)


def test_hidream_e1_image_cond_runs_at_full_length_with_one_warning(dit_host, models, caplog):
    extras = {"concat_latent_image": torch.randn(1, 16, 32, 40, generator=torch.Generator().manual_seed(9))}
    model, counter = counted(models["hidream"])
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        out = sample_image_dit(mame(dit_host, model), "hidream", extras=extras)
    assert [q for _, q, _ in counter.calls] == [2 * 320 + 36] * 4  # the image and the edited image, full length
    assert torch.equal(out, sample_image_dit(models["hidream"], "hidream", extras=extras))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "image_cond" in warnings[0], warnings
