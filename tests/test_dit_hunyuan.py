"""MaMe on HunyuanVideo (ComfyUI's ``HunyuanVideo`` class, v0.3.75: HunyuanVideo 1.0/1.5 and
HunyuanImage 2.1), in-process with a tiny seeded model of the real class and ComfyUI's sampler.

Its joint sequence is ``[ref_latent], image, text``; the text is padded and masked by an
additive key mask ``[1, 1, image + text]`` (zeros over the image), and a token refiner runs
self-attention over the text alone under a text x text mask first. MaMe merges the image
tokens of the double and single blocks and shortens the key mask with them."""
from __future__ import annotations

import math

import dit_helpers as helpers
import pytest
import torch
from conftest import seeded

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

FAMILY = "hunyuan_video"
IMAGE = (1, 16, 1, 32, 40)  # one latent frame: 16x20 = 320 image tokens
VIDEO = (1, 16, 3, 16, 20)  # three latent frames of 8x10: 240 video tokens
TEXT, PADDED = 12, 4  # text tokens, of which the last 4 are padding under the mask
REFINER_CALLS = 2  # txt_in's token refiner: two text-only self-attention calls, left alone
BLOCK_CALLS = 4  # 2 double + 2 single blocks


@pytest.fixture(scope="module")
def model(dit_host):
    from embedded_host.dit_models import build_model

    return build_model(FAMILY)


def text_mask(padded=PADDED):
    mask = torch.ones(1, TEXT, dtype=torch.long)
    if padded:
        mask[:, -padded:] = 0
    return mask


def sample(model, shape, steps=1, padded=PADDED, ref_latent=None):
    """The positive prompt has padded text under a mask, the negative none (ComfyUI's
    HunyuanVideo cannot batch two text masks in one call), so each model call has batch 1."""
    import comfy.sample

    from embedded_host.dit_models import conditioning

    positive = conditioning(FAMILY)
    positive[0][1]["attention_mask"] = text_mask(padded)
    if ref_latent is not None:
        positive[0][1]["ref_latent"] = ref_latent
    noise = torch.randn(shape, generator=seeded(0))
    with torch.no_grad():
        return comfy.sample.sample(model, noise, steps, 2.0, "euler", "simple", positive,
                                   conditioning(FAMILY, seed=2), torch.zeros(shape), seed=0, disable_pbar=True)


def grid_of(shape):
    return (shape[2], shape[3] // 2, shape[4] // 2)


def image_grid(grid):
    return grid if grid[0] > 1 else grid[1:]  # one frame merges as an image


def test_registry_entry_merges(dit_host, model):
    dit = dit_host.nodes.dit_inspect.inspect_dit(model)
    assert dit is not None and dit.family.merges and dit.family.key_mask
    assert dit.blocks == {"double": 2, "single": 2} and dit.patch == (1, 2, 2)


@pytest.mark.parametrize("shape", [IMAGE, VIDEO], ids=["image", "video"])
def test_ratio_zero_is_bit_identical_to_no_node(dit_host, model, shape):
    base = sample(model, shape)
    assert torch.equal(sample(helpers.mame(dit_host, model, ratio=0.0), shape), base)


def test_the_text_mask_masks_something(model):
    # the padded text under the mask changes the sample: the mask the merge must keep matters
    assert not torch.equal(sample(model, IMAGE), sample(model, IMAGE, padded=0))


@pytest.mark.parametrize("shape", [IMAGE, VIDEO], ids=["image", "video"])
def test_self_attention_runs_on_the_merged_image_and_the_mask_follows(dit_host, model, shape):
    full_calls, calls, base, out = helpers.calls_plain_and_merged(dit_host, model, lambda m: sample(m, shape),
                                                                  masks=True)
    grid = grid_of(shape)
    n = math.prod(grid)
    merged = helpers.expected_merged(dit_host, FAMILY, image_grid(grid))
    assert merged < n
    per_model_call = REFINER_CALLS + BLOCK_CALLS
    assert len(calls) == len(full_calls) == 2 * per_model_call  # positive (masked) and negative
    for i, ((b, q_full, k_full, m_full), (b2, q_len, k_len, mask)) in enumerate(
            zip(full_calls, calls, strict=True)):
        assert b == b2 == 1
        if i % per_model_call < REFINER_CALLS:  # token refiner: text only, untouched
            assert (q_len, k_len) == (q_full, k_full) == (TEXT, TEXT)
            continue
        assert q_full == k_full == n + TEXT
        assert q_len == k_len == merged + TEXT, (i, q_full, q_len)
        if m_full is None:  # the negative prompt has no mask
            assert mask is None
            continue
        # the model's key mask [1, 1, image + text]: zeros over the image, the text pad masked
        assert m_full.shape == (1, 1, n + TEXT) and torch.equal(m_full[..., :n], torch.zeros(1, 1, n))
        assert (m_full[..., -PADDED:] < -1e30).all() and torch.equal(m_full[..., n:-PADDED], torch.zeros(1, 1, 8))
        # shortened with the image: zeros over the merged image, the text part kept bit for bit
        assert mask.shape == (1, 1, 1, merged + TEXT)
        assert torch.equal(mask[..., :merged], torch.zeros(1, 1, 1, merged))
        assert torch.equal(mask[..., merged:].reshape(-1), m_full[..., n:].reshape(-1))
    change = ((out - base).norm() / base.norm()).item()
    assert 1e-3 < change < 0.5, change


def joint_values(grid, heads=2, dim=16, seed=6):
    """[1, heads, image + text, dim]: image values one per 8x8 tile, text values distinct."""
    g = seeded(seed)
    image = helpers.tiled_image(heads, dim, grid, g)
    return torch.cat([image, torch.randn(1, heads, TEXT, dim, generator=g) * 3], dim=2)


def key_mask(n):
    mask = torch.zeros(1, 1, n + TEXT)
    mask[..., -PADDED:] = -torch.finfo(torch.float32).max
    return mask


@pytest.mark.parametrize("reference", [0, 40], ids=["plain", "ref_latent"])
def test_text_comes_back_untouched_and_image_restores(dit_host, model, reference):
    # A per-token "attention" (output = v) on image tokens that are copies of their 8x8 tile, then
    # text: the text comes back exactly and the image is restored; the attention sees the merged
    # length and the shortened mask. With a reference latent its tokens come first, untouched.
    dit_patch = dit_host.nodes.dit_patch
    override = helpers.started_override(dit_host, model)
    heads, dim, grid = 2, 16, (16, 20)
    n = math.prod(grid)
    v = joint_values(grid, heads, dim)
    if reference:
        v = torch.cat([torch.randn(1, heads, reference, dim, generator=seeded(8)) * 5, v], dim=2)
    mask = torch.cat([torch.zeros(1, 1, reference), key_mask(n)], dim=2)
    seen = []

    def values_as_output(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
        seen.append((q.shape[1], None if mask is None else mask.clone()))
        return v

    options = {dit_patch.CALL_KEY: dit_patch.CallInfo(grid, TEXT, reference), "block_type": "single",
               "block_index": 1}
    out = override(values_as_output, v.clone(), v.clone(), v.clone(), heads, skip_reshape=True, mask=mask,
                   transformer_options=options)
    length = reference + n + TEXT
    expected = v.transpose(1, 2).reshape(1, length, heads * dim)
    merged = helpers.expected_merged(dit_host, FAMILY, grid)
    (q_len, seen_mask), = seen
    assert q_len == reference + merged + TEXT
    assert torch.equal(seen_mask[..., reference + merged:].reshape(-1), mask[..., reference + n:].reshape(-1))
    assert torch.equal(seen_mask[..., :reference + merged], torch.zeros(1, 1, 1, reference + merged))
    assert torch.equal(out[:, reference + n:], expected[:, reference + n:])  # text, bit for bit
    assert torch.equal(out[:, :reference], expected[:, :reference])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=4e-6)  # image: averaging equal copies


@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_size_bias_on_top_of_the_text_mask_is_the_same_on_both_routes(dit_host, model, mode):
    # attention_pytorch on a CPU gets the log-size bias added to the shortened text mask; other
    # kernels get the size channel and the mask as it is: the same proportional attention, and
    # the padded text keys stay masked (their values do not reach the output).
    import comfy.ldm.modules.attention as comfy_attention

    dit_patch = dit_host.nodes.dit_patch
    override = helpers.started_override(dit_host, model, mode)
    heads, dim, grid = 2, 16, (16, 20)
    n = math.prod(grid)
    g = seeded(9)
    q, k, v = (torch.randn(1, heads, n + TEXT, dim, generator=g) for _ in range(3))
    mask = key_mask(n)
    options = {dit_patch.CALL_KEY: dit_patch.CallInfo(grid, TEXT), "block_type": "double", "block_index": 0}
    seen = {}

    def spy(name):
        def attention(q, k, v, heads, mask=None, **kwargs):
            seen[name] = None if mask is None else tuple(mask.shape)
            return comfy_attention.attention_pytorch(q, k, v, heads, mask=mask, **kwargs)
        attention.__name__ = name
        return attention

    def run(func, values=v):
        return override(func, q, k, values, heads, skip_reshape=True, mask=mask, transformer_options=dict(options))

    masked, channelled = run(spy("attention_pytorch")), run(spy("attention_sub_quad"))
    merged = helpers.expected_merged(dit_host, FAMILY, grid)
    assert seen == {"attention_pytorch": (1, 1, 1, merged + TEXT), "attention_sub_quad": (1, 1, 1, merged + TEXT)}
    torch.testing.assert_close(masked, channelled, rtol=1e-5, atol=1e-5)
    padded_moved = v.clone()
    padded_moved[:, :, -PADDED:] += 100.0
    torch.testing.assert_close(run(spy("attention_pytorch"), padded_moved), masked, rtol=1e-5, atol=1e-5)


def test_reference_latent_tokens_stay_before_the_merged_image(dit_host, model):
    # HunyuanVideo I2V "custom" guidance: ref_latent's tokens come before the image, unmerged
    clone, counter = helpers.counted(model, masks=True)
    ref = torch.randn(1, 16, 1, 16, 20, generator=seeded(3))
    out = sample(helpers.mame(dit_host, clone), VIDEO, ref_latent=ref)
    n, r = math.prod(grid_of(VIDEO)), math.prod(grid_of(ref.shape))
    merged = helpers.expected_merged(dit_host, FAMILY, grid_of(VIDEO))
    blocks = [c for c in counter.calls if c[1] != TEXT]
    masked = [c for c in blocks if c[3] is not None]
    assert len(blocks) == 2 * BLOCK_CALLS and len(masked) == BLOCK_CALLS
    for _, q, k, m in blocks:  # the positive prompt carries the reference (and the mask), the negative neither
        assert q == k == (r if m is not None else 0) + merged + TEXT, (r, n, merged, q)
    assert all(torch.equal(m[..., :r + merged], torch.zeros(1, 1, 1, r + merged)) for *_, m in masked)
    assert torch.isfinite(out).all()


def test_hunyuan_image_2d_latent_with_byt5_tokens(dit_host):
    # HunyuanImage 2.1: a 2-D latent, patch 1, and 7 byT5 glyph tokens appended to the text
    import comfy.sample

    from embedded_host.dit_models import build_model, conditioning

    clone, counter = helpers.counted(build_model("hunyuan_image"), masks=True)
    positive = conditioning("hunyuan_image")
    positive[0][1]["conditioning_byt5small"] = torch.randn(1, 7, 1472, generator=seeded(5))
    shape = (1, 64, 16, 20)
    merged, outs = helpers.expected_merged(dit_host, FAMILY, (16, 20)), []
    half, zero = helpers.mame(dit_host, clone), helpers.mame(dit_host, clone, ratio=0.0)
    for model, image in ((clone, 320), (half, merged), (zero, 320)):
        counter.calls.clear()
        with torch.no_grad():
            outs.append(comfy.sample.sample(model, torch.randn(shape, generator=seeded(0)), 1, 2.0, "euler", "simple",
                                            positive, conditioning("hunyuan_image", seed=2), torch.zeros(shape),
                                            seed=0, disable_pbar=True))
        lengths = sorted({q for _, q, _, _ in counter.calls})
        assert lengths == [TEXT, image + TEXT, image + TEXT + 7], lengths  # refiner; negative; positive + byT5
    assert torch.equal(outs[2], outs[0]) and not torch.equal(outs[1], outs[0])


def test_stages_are_addressable_and_the_merge_map_draws_the_grid(dit_host, model):
    # double and single blocks, and the last of each, turn off alone; the token refiner is never
    # merged; the Merge Map draws the first frame's grid of a video.
    dit = dit_host.nodes.dit_inspect.inspect_dit(model)
    grid = grid_of(VIDEO)
    full = math.prod(grid) + TEXT
    clone, counter = helpers.counted(model, masks=True)
    per_model_call = REFINER_CALLS + BLOCK_CALLS
    first = REFINER_CALLS
    for stage in dit.family.stages:
        count = dit.blocks[stage]
        for rule, off in ((f"{stage}_* = off", range(first, first + count)),
                          (f"{stage}_{count - 1} = off", [first + count - 1])):
            counter.calls.clear()
            sample(helpers.mame(dit_host, clone, overrides=rule), VIDEO)
            lengths = [q for _, q, _, _ in counter.calls]
            assert len(lengths) == 2 * per_model_call
            for i, q in enumerate(lengths):
                j = i % per_model_call
                if j < REFINER_CALLS:
                    assert q == TEXT
                else:
                    assert (q == full) == (j in off), (rule, lengths)
        first += count
    helpers.merge_map_draws_the_grid(dit_host, model, lambda patched: sample(patched, VIDEO), grid[1:])
