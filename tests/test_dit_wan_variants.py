"""MaMe on the Wan 2.1/2.2 variants ComfyUI v0.3.75 ships (issue 27), in-process with their real
classes (tiny, seeded: embedded_host/wan_variant_models.py), each sampled through ComfyUI's
sampler with the extra conditioning its model reads (VACE control frames, camera conditions,
HuMo audio and reference frame, Animate pose latents, TI2V's per-frame timesteps), and
Phantom (the plain WanModel with subject frames appended along time, ``time_dim_concat``).

Per model call, each variant's attention calls follow a fixed pattern (``CALLS``): ``S`` a
block's self-attention over the video tokens (merged), ``V`` a VACE hint block's
self-attention over the control tokens (left at full length), ``x`` a cross-attention (text,
CLIP image, audio: left alone)."""
from __future__ import annotations

import pytest
import torch
from conftest import seeded
from dit_helpers import (
    calls_plain_and_merged,
    counted,
    expected_merged,
    extra_tokens_come_back_exact,
    mame,
    passes_through_with_one_warning,
    registry_names_each_class,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

MERGING = ("ti2v", "vace", "camera", "humo", "animate")
FRAMES, HEIGHT, WIDTH = 3, 16, 20  # latent; 3 x 8 x 10 = 240 video tokens
CALLS = {"ti2v": "Sx" * 3, "vace": "SxVx" + "Sx" + "SxVx" + "Sx", "camera": "Sxx" * 3, "humo": "Sxx" * 3,
         "animate": "Sxx" * 3}  # Camera and Animate: I2V cross-attention (CLIP, text); HuMo: text, audio
REFERENCE_TOKENS = {"humo": 1 * 8 * 10}  # HuMo's reference frame follows the video in self-attention
FAMILY = {"ti2v": "wan", "camera": "wan", "animate": "wan", "vace": "wan_vace", "humo": "wan_humo",
          "s2v": "wan_s2v"}


def latent_shape(variant):
    from embedded_host.wan_variant_models import LATENT_CHANNELS

    return (1, LATENT_CHANNELS.get(variant, 16), FRAMES, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def variants(dit_host):
    from embedded_host.wan_variant_models import build_variant

    return {name: build_variant(name) for name in MERGING + ("s2v",)}


def sample(model, variant, steps=1, cfg=2.0):
    import comfy.sample

    from embedded_host.wan_variant_models import variant_conditioning

    shape = latent_shape(variant)
    noise = torch.randn(shape, generator=seeded(0))
    mask = None
    if variant == "ti2v":  # TI2V keeps its first frame: WAN22 turns the mask into per-frame timesteps
        mask = torch.ones(1, 1, *shape[2:])
        mask[:, :, 0] = 0.0
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", variant_conditioning(variant, shape),
                                   variant_conditioning(variant, shape, seed=2), torch.zeros(shape), noise_mask=mask,
                                   seed=0, disable_pbar=True)


def test_each_variant_class_has_its_registry_entry(dit_host, variants):
    registry_names_each_class(dit_host, variants, FAMILY, MERGING)  # S2V passes through


@pytest.mark.parametrize("variant", MERGING)
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, variants, variant):
    base = sample(variants[variant], variant)
    assert torch.equal(sample(mame(dit_host, variants[variant], ratio=0.0), variant), base)


@pytest.mark.parametrize("variant", MERGING)
def test_self_attention_over_the_video_is_shortened_and_the_rest_is_untouched(dit_host, variants, variant):
    full, calls, base, out = calls_plain_and_merged(dit_host, variants[variant], lambda model: sample(model, variant))
    grid = (FRAMES, HEIGHT // 2, WIDTH // 2)
    n = grid[0] * grid[1] * grid[2]
    merged = expected_merged(dit_host, "wan", grid)
    ref = REFERENCE_TOKENS.get(variant, 0)
    pattern = CALLS[variant]
    assert merged < n and len(full) == len(calls) == len(pattern), (len(full), len(calls))
    for kind, (b, q_full, k_full), (b2, q_len, k_len) in zip(pattern, full, calls, strict=True):
        assert b == b2
        if kind == "S":
            assert q_full == k_full == n + ref and q_len == k_len == merged + ref, (variant, q_full, q_len)
        elif kind == "V":  # the VACE hint block: control tokens on the same grid, at full length
            assert q_full == k_full == n and (q_len, k_len) == (q_full, k_full)
        else:
            assert k_full != q_full and (q_len, k_len) == (q_full, k_full), (variant, q_full, k_full, q_len)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change


def test_humo_reference_frame_stays_outside_the_merged_span(dit_host, variants):
    # HuMo (layout image_first): the reference frame's tokens follow the video
    call = dit_host.nodes.dit_patch.CallInfo((1, 16, 16), 12)
    extra_tokens_come_back_exact(dit_host, variants["humo"], 64, call, seed=7)


@pytest.mark.parametrize("variant", ["vace", "humo"])
def test_blocks_are_addressable(dit_host, variants, variant):
    model, counter = counted(variants[variant])
    sample(mame(dit_host, model, overrides="blocks_1 = off"), variant)
    self_calls = [q for kind, (_, q, _) in zip(CALLS[variant], counter.calls, strict=True) if kind == "S"]
    full = FRAMES * (HEIGHT // 2) * (WIDTH // 2) + REFERENCE_TOKENS.get(variant, 0)
    assert [q == full for q in self_calls] == [i == 1 for i in range(len(self_calls))], self_calls


def test_s2v_passes_through_with_one_warning_that_names_the_reason(dit_host, variants, caplog):
    # S2V's blocks call attention without transformer_options: an override sees none of their calls
    passes_through_with_one_warning(dit_host, variants["s2v"], lambda model: sample(model, "s2v"), caplog, "S2V")


@pytest.fixture(scope="module")
def phantom(dit_host):
    from embedded_host.dit_models import build_model

    return build_model("wan")


def sample_phantom(model, subjects=1):
    # Wan Phantom (WanPhantomSubjectToVideo): the subject images' latents go in as time_dim_concat,
    # which WanModel appends to the video along time: self-attention over video, then subject frames
    import comfy.sample

    from embedded_host.dit_models import conditioning

    shape = (1, 16, FRAMES, HEIGHT, WIDTH)
    extras = {"time_dim_concat": torch.randn(1, 16, subjects, HEIGHT, WIDTH, generator=seeded(8))}
    cond, uncond = conditioning("wan"), conditioning("wan", seed=2)
    for c in (cond, uncond):
        c[0][1].update(extras)
    with torch.no_grad():
        return comfy.sample.sample(model, torch.randn(shape, generator=seeded(0)), 1, 2.0, "euler", "simple", cond,
                                   uncond, torch.zeros(shape), seed=0, disable_pbar=True)


def test_phantom_merges_the_video_and_leaves_the_subject_frames_alone(dit_host, phantom):
    assert torch.equal(sample_phantom(mame(dit_host, phantom, ratio=0.0)), sample_phantom(phantom))
    full, calls, base, out = calls_plain_and_merged(dit_host, phantom, sample_phantom)
    grid = (FRAMES, HEIGHT // 2, WIDTH // 2)
    n, subjects = grid[0] * grid[1] * grid[2], grid[1] * grid[2]
    merged = expected_merged(dit_host, "wan", grid)
    for kind, (_, q_full, k_full), (_, q_len, k_len) in zip("Sx" * 3, full, calls, strict=True):
        if kind == "S":
            assert q_full == k_full == n + subjects and q_len == k_len == merged + subjects, (q_full, q_len)
        else:
            assert (q_len, k_len) == (q_full, k_full)
    assert 1e-3 < ((out - base).norm() / base.norm()).item() < 0.5


def test_phantom_subject_tokens_stay_outside_the_merged_span(dit_host, phantom):
    # Wan (layout image_last) with time_dim_concat: the subject frames' tokens follow the video
    call = dit_host.nodes.dit_patch.CallInfo((1, 16, 16), 12, trailing_tokens=64)
    extra_tokens_come_back_exact(dit_host, phantom, 64, call, seed=9)
