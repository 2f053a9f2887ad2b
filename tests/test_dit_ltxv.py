"""MaMe on LTX-Video (ComfyUI v0.3.75's ``LTXVModel``, issue 27), in-process with its real class
(tiny, seeded: embedded_host/ltxv_models.py), sampled through ComfyUI's sampler with the
conditioning it reads: text tokens and frame rate, image-to-video's noise mask (per-token
timesteps on the kept first frame) and LTXVAddGuide's keyframes (guide frames appended to the
latent along time, their positions in ``keyframe_idxs``).

Per model call each block makes two attention calls: ``S`` self-attention over the video tokens
(and any keyframe tokens after them: merged video, keyframes untouched), ``x`` cross-attention
to the text (left alone)."""
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
    merge_map_draws_the_grid,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

FRAMES, HEIGHT, WIDTH = 3, 8, 10  # latent, patch 1: 3 x 8 x 10 = 240 video tokens
GRID = (FRAMES, HEIGHT, WIDTH)
N = FRAMES * HEIGHT * WIDTH
CALLS = "Sx" * 3


@pytest.fixture(scope="module")
def ltxv(dit_host):
    from embedded_host.ltxv_models import build_ltxv

    return build_ltxv()


def sample(model, keyframes=0, i2v=False, steps=1, cfg=2.0):
    import comfy.sample

    from embedded_host.ltxv_models import LATENT_CHANNELS, conditioning, keyframe_conditioning

    shape = (1, LATENT_CHANNELS, FRAMES, HEIGHT, WIDTH)
    latent = torch.randn(shape, generator=seeded(6)) * 0.5
    mask = torch.ones(1, 1, FRAMES, 1, 1)
    if i2v:  # LTXVImgToVideo: the first frame holds the image latent and is kept (per-token timesteps)
        mask[:, :, 0] = 0.0
    positive, negative = conditioning(), conditioning(seed=2)
    if keyframes:
        positive, negative, latent, mask = keyframe_conditioning(positive, negative, latent, mask, keyframes)
    noise = torch.randn(latent.shape, generator=seeded(0))
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                                   noise_mask=mask, seed=0, disable_pbar=True)


CASES = {"t2v": {}, "i2v": {"i2v": True}, "keyframe": {"keyframes": 1, "i2v": True}}


def test_ltxv_has_its_registry_entry_and_patch_1(dit_host, ltxv):
    dit = dit_host.nodes.dit_inspect.inspect_dit(ltxv)
    assert dit is not None and dit.name == "ltxv" and dit.family.merges
    assert dit.patch == (1, 1, 1) and dit.blocks == {"blocks": 3}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, ltxv, case):
    assert torch.equal(sample(mame(dit_host, ltxv, ratio=0.0), **CASES[case]), sample(ltxv, **CASES[case]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_self_attention_over_the_video_is_shortened_and_the_rest_is_untouched(dit_host, ltxv, case):
    full, calls, base, out = calls_plain_and_merged(dit_host, ltxv, lambda model: sample(model, **CASES[case]))
    keyframe_tokens = CASES[case].get("keyframes", 0) * HEIGHT * WIDTH
    merged = expected_merged(dit_host, "ltxv", GRID)
    assert merged < N and len(full) == len(calls) == len(CALLS), (len(full), len(calls))
    for kind, (b, q_full, k_full), (b2, q_len, k_len) in zip(CALLS, full, calls, strict=True):
        assert b == b2
        if kind == "S":  # the keyframe tokens follow the video at full length
            assert q_full == k_full == N + keyframe_tokens, (case, q_full)
            assert q_len == k_len == merged + keyframe_tokens, (case, q_len)
        else:  # cross-attention: q video, k/v the 12 text tokens
            assert k_full == 12 and (q_len, k_len) == (q_full, k_full), (case, q_full, k_full, q_len)
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change


def test_keyframe_tokens_stay_outside_the_merged_span(dit_host, ltxv):
    # layout image_first: video at [0, N), the guide frames' tokens after it come back exactly
    call = dit_host.nodes.dit_patch.CallInfo((1, 16, 16), 12)
    extra_tokens_come_back_exact(dit_host, ltxv, 64, call, seed=11)


def test_blocks_are_addressable(dit_host, ltxv):
    model, counter = counted(ltxv)
    sample(mame(dit_host, model, overrides="blocks_1 = off"))
    self_calls = [q for kind, (_, q, _) in zip(CALLS, counter.calls, strict=True) if kind == "S"]
    assert [q == N for q in self_calls] == [False, True, False], self_calls


def test_merge_map_draws_the_frame_grid(dit_host, ltxv):
    merge_map_draws_the_grid(dit_host, ltxv, lambda patched: sample(patched, keyframes=1), (HEIGHT, WIDTH), pixels=32)
