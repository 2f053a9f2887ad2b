"""Property tests over random grids, batches, tiles, ratios and dtypes."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import seeded
from mame_core import MergeSettings, plan_seeded

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    batch=st.integers(1, 5),
    dtype=st.sampled_from(DTYPES),
    mode=st.sampled_from(["qkv", "kv"]),
    tile=st.sampled_from([(2, 2), (4, 4), (8, 8), (4, 8), (3, 5)]),
    ratio=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_any_grid_keeps_shape_dtype_and_constant_tokens(h, w, batch, dtype, mode, tile, ratio, seed):
    gen = seeded(seed)
    x = torch.randn(batch, h * w, 12, generator=gen).to(dtype)
    plan = plan_seeded(x, h, w, MergeSettings(ratio=ratio, mode=mode, tile=tile), seed, "block", 0)
    merged = plan.merge(x)
    assert merged.shape == (batch, plan.merged_tokens, 12)
    assert plan.merged_tokens <= h * w
    restored = plan.restore(merged)
    assert restored.shape == x.shape and restored.dtype == dtype
    assert torch.isfinite(restored.float()).all()

    # A grid of one repeated token is a fixed point of merge then restore.
    const = torch.randn(batch, 1, 12, generator=gen).to(dtype).expand(batch, h * w, 12).contiguous()
    plan = plan_seeded(const, h, w, MergeSettings(ratio=ratio, mode=mode, tile=tile), seed, "block", 0)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(plan.restore(plan.merge(const)), const, rtol=tol, atol=tol)


@settings(max_examples=20, deadline=None)
@given(h=st.sampled_from([52, 13, 26, 64]), w=st.sampled_from([76, 19, 38, 64]), batch=st.integers(1, 5))
def test_sdxl_portrait_grids(h, w, batch):
    x = torch.randn(batch, h * w, 8, generator=seeded(h * w + batch))
    plan = plan_seeded(x, h, w, MergeSettings(ratio=0.5), 0, "input", 4)
    assert plan.merged_tokens < h * w
    assert plan.restore(plan.merge(x)).shape == x.shape
