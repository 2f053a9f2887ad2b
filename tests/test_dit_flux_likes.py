"""MaMe on the Flux-like DiTs of ComfyUI v0.3.75 named by issue 27, in-process with their real
classes (tiny, seeded: embedded_host/image_dit_models.py), sampled through ComfyUI's sampler.

Chroma (``Chroma``) and Qwen-Image (``QwenImageTransformer2DModel``) merge: each block makes one
joint self-attention over [text, image], routed through ``transformer_options`` with the block
labelled (``block_type`` / ``block_index``) by the model itself. HiDream
(``HiDreamImageTransformer2DModel``) and Chroma Radiance (``ChromaRadiance``) pass through: their
attention calls do reach an override, but the registry gives each a reason not to merge, so MaMe
hands the model back unchanged with one warning."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from dit_helpers import (
    calls_plain_and_merged,
    counted,
    expected_merged,
    mame,
    merge_map_draws_the_grid,
    registry_names_each_class,
)
from test_dit_more_families import grid, sample

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

MERGING = ("chroma", "qwen_image")
TEXT = 12  # text tokens before the image in every joint call
CALLS = {"chroma": 4, "qwen_image": 2}  # joint self-attention calls per model call: Chroma 2 double + 2 single
PASSING = ("hidream", "chroma_radiance")
FAMILY = {name: name for name in MERGING + PASSING}


@pytest.fixture(scope="module")
def models(dit_host):
    from embedded_host.image_dit_models import build

    return {name: build(name) for name in FAMILY}


def test_each_class_has_its_registry_entry(dit_host, models):
    registry_names_each_class(dit_host, models, FAMILY, MERGING)
    from comfy.ldm.chroma.model import Chroma

    # Chroma Radiance subclasses Chroma: its own entry comes first in its MRO
    assert issubclass(type(models["chroma_radiance"].model.diffusion_model), Chroma)


@pytest.mark.parametrize("name", MERGING)
def test_self_attention_over_the_image_is_shortened(dit_host, models, name):
    full, calls, base, out = calls_plain_and_merged(dit_host, models[name], lambda model: sample(model, name))
    n = math.prod(grid(name))
    merged = expected_merged(dit_host, name, grid(name))
    assert merged < n and len(full) == len(calls) == CALLS[name], (len(full), len(calls))
    for (b, q_full, k_full), (b2, q_len, k_len) in zip(full, calls, strict=True):
        assert b == b2 and q_full == k_full == TEXT + n and q_len == k_len == TEXT + merged, (q_full, q_len)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change


@pytest.mark.parametrize("name, override, full_at", [("chroma", "double_1 = off, single_0 = off", (1, 2)),
                                                      ("qwen_image", "double_0 = off", (0,))])
def test_blocks_are_addressable(dit_host, models, name, override, full_at):
    model, counter = counted(models[name])
    sample(mame(dit_host, model, overrides=override), name)
    n = math.prod(grid(name))
    per_call = [q == TEXT + n for _, q, _ in counter.calls]
    assert per_call == [i in full_at for i in range(CALLS[name])], per_call


@pytest.mark.parametrize("name", MERGING)
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, models, name):
    assert torch.equal(sample(mame(dit_host, models[name], ratio=0.0), name), sample(models[name], name))


@pytest.mark.parametrize("name", MERGING)
def test_merge_map_draws_the_grid(dit_host, models, name):
    merge_map_draws_the_grid(dit_host, models[name], lambda patched: sample(patched, name), grid(name)[-2:])


@pytest.mark.parametrize("name", PASSING)
def test_passes_through_with_one_warning_that_names_the_reason(dit_host, models, name, caplog):
    # unlike PixArt's, these classes' attention calls reach an override: MaMe must not install one
    model, counter = counted(models[name])
    base = sample(model, name)
    assert counter.calls and torch.isfinite(base).all()
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        patched = mame(dit_host, models[name])
    assert patched is models[name]
    assert torch.equal(sample(patched, name), sample(models[name], name))
    entry = dit_host.nodes.families.family_of_class(type(models[name].model.diffusion_model))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and entry.title in warnings[0] and entry.reason in warnings[0], warnings
