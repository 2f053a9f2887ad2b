"""Property tests over random grids, batches, tiles, ratios and dtypes; an identity "merge"
would fail them (the token count is the one the ratio asks for, and merging changes tokens)."""
import torch
from conftest import seeded
from hypothesis import given, settings
from hypothesis import strategies as st

from mame_core import MergeSettings, merged_tokens_for, plan_seeded
from mame_core.merge import destinations_in, tiling_for

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    batch=st.integers(1, 5),
    dtype=st.sampled_from(DTYPES),
    mode=st.sampled_from(["qkv", "kv"]),
    tile=st.sampled_from([(2, 2), (4, 4), (8, 8), (4, 8), (3, 5), (16, 16)]),
    ratio=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_any_grid_merges_the_count_the_ratio_asks_for(h, w, batch, dtype, mode, tile, ratio, seed):
    gen = seeded(seed)
    ms = MergeSettings(ratio=ratio, mode=mode, tile=tile)
    x = torch.randn(batch, h * w, 12, generator=gen).to(dtype)
    plan = plan_seeded(x, h, w, ms, seed, "block", 0)
    blocks = tiling_for(h, w, ms).blocks
    sources = sum(b.tiles * (b.tile_tokens - destinations_in(b, ratio)) for b in blocks)
    expected = h * w - min(sources, round(ratio * h * w))  # the whole grid's count, not each tile's
    if ratio <= 0.75 and min(b.tile_tokens for b in blocks) >= 4:  # enough sources in every tile
        assert expected == h * w - round(ratio * h * w)
    assert plan.merged_tokens == merged_tokens_for(h, w, ms) == expected
    merged = plan.merge(x)
    assert merged.shape == (batch, expected, 12)
    restored = plan.restore(merged)
    assert restored.shape == x.shape and restored.dtype == dtype
    assert torch.isfinite(restored.float()).all()
    if expected < h * w and dtype == torch.float32:
        # merging changes what it must: the restored grid holds exactly `expected` distinct
        # tokens per item, and some restored token differs from its input
        assert not torch.allclose(restored, x)
        for item in restored:
            assert torch.unique(item, dim=0).shape[0] == expected
        assert torch.allclose(plan.key_log_size.exp().sum(dim=1), torch.full((batch,), float(h * w)))

    # A grid of one repeated token is a fixed point of merge then restore.
    const = torch.randn(batch, 1, 12, generator=gen).to(dtype).expand(batch, h * w, 12).contiguous()
    plan = plan_seeded(const, h, w, ms, seed, "block", 0)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(plan.restore(plan.merge(const)), const, rtol=tol, atol=tol)


@settings(max_examples=20, deadline=None)
@given(
    frames=st.integers(2, 7),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    tile_frames=st.integers(1, 4),
    ratio=st.floats(0.1, 0.9),
)
def test_video_grids(frames, h, w, tile_frames, ratio):
    ms = MergeSettings(ratio=ratio, tile=(4, 4), tile_frames=tile_frames)
    x = torch.randn(2, frames * h * w, 8, generator=seeded(frames * h * w))
    plan = plan_seeded(x, h, w, ms, 0, "blocks", 3, frames=frames)
    assert plan.merged_tokens == merged_tokens_for(h, w, ms, frames)
    assert plan.restore(plan.merge(x)).shape == x.shape
