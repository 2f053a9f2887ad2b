"""The GPU route of the engine (mame_core.dense_merge), run here on CPU tensors: the same
promises as the CPU route (exact token count, copies restored, dense sync-free ops, one graph)."""
import pytest
import torch
from conftest import seeded

from mame_core import MaMeConfigError, MergeSettings, engine_route, merged_tokens_for, plan_merge
from mame_core.regions import choose_regions
from op_audit import audited

GRIDS = [(1, 16, 16), (1, 13, 19), (3, 6, 5), (1, 64, 64), (1, 52, 76), (1, 128, 128), (9, 30, 52), (1, 1, 7)]


@pytest.mark.parametrize("frames,h,w", GRIDS)
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_exact_token_count_and_groups(frames, h, w, ratio):
    x = torch.randn(2, frames * h * w, 8, generator=seeded(1))
    settings = MergeSettings(ratio=ratio)
    plan = plan_merge(x, h, w, settings, 5, frames, route="gpu")
    want = merged_tokens_for(h, w, settings, frames)
    if want == x.shape[1]:
        assert plan.is_identity
        return
    merged = plan.merge(x)
    assert merged.shape == (2, want, 8) and plan.key_log_size.shape == (2, want)
    groups = plan.groups()
    for b in range(2):  # every merged token is the mean of its group, and sizes count the group
        counts = torch.bincount(groups[b], minlength=want)
        assert counts.min() >= 1 and counts.numel() == want
        torch.testing.assert_close(torch.exp(plan.key_log_size[b]), counts.float())
        means = torch.zeros(want, 8).index_add_(0, groups[b], x[b]) / counts.unsqueeze(-1)  # test-side bookkeeping
        torch.testing.assert_close(merged[b], means, rtol=1e-5, atol=1e-5)
    assert plan.restore(merged).shape == x.shape


def test_ratio_zero_is_the_identity():
    x = torch.randn(2, 64, 8, generator=seeded(0))
    plan = plan_merge(x, 8, 8, MergeSettings(ratio=0.0), 3, route="gpu")
    assert plan.is_identity and plan.merge(x) is x and plan.restore(x) is x


@pytest.mark.parametrize("frames,h,w", [(1, 16, 16), (1, 13, 19), (3, 6, 5), (1, 128, 128)])
def test_copies_are_restored_exactly(frames, h, w):
    """Tokens constant on 2x2 cells (2x2x2 on video): each merged token is a copy of its
    destination or of a token with the same features, so merge -> restore gives them back."""
    gen = seeded(2)
    cells = torch.randn(2, (frames + 1) // 2, (h + 1) // 2, (w + 1) // 2, 16, generator=gen)
    grid = cells.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :frames, :h, :w]
    x = grid.reshape(2, frames * h * w, 16)
    plan = plan_merge(x, h, w, MergeSettings(ratio=0.5), 9, frames, route="gpu")
    torch.testing.assert_close(plan.restore(plan.merge(x)), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames,h,w", [(1, 16, 16), (1, 13, 19), (3, 6, 5)])
@pytest.mark.parametrize("tau,gate,pattern", [(-1.0, "hard", 7), (0.5, "hard", "tensor"), (0.5, "sigmoid", 7)])
def test_no_forbidden_op_and_no_host_sync(dtype, frames, h, w, tau, gate, pattern):
    x = torch.randn(2, frames * h * w, 16, generator=seeded(3)).to(dtype)
    settings = MergeSettings(ratio=0.5, threshold=tau, gate=gate)
    p = torch.tensor(7) if pattern == "tensor" else 7

    def run():
        plan = plan_merge(x, h, w, settings, p, frames, route="gpu")
        plan.restore(plan.merge(x) * 2)

    run()  # the first call of a grid builds its static tables (host lists to the device), once
    ops = audited(run)
    assert "bmm" in ops


def test_host_and_device_patterns_pick_the_same_destinations():
    x = torch.randn(2, 13 * 19, 16, generator=seeded(4))
    settings = MergeSettings(ratio=0.5)
    for p in (0, 5, 2**40 + 3):
        a = plan_merge(x, 13, 19, settings, p, route="gpu")
        b = plan_merge(x, 13, 19, settings, torch.tensor(p), route="gpu")
        torch.testing.assert_close(a.restore(a.merge(x)), b.restore(b.merge(x)))
        assert torch.equal(a.groups(), b.groups())


def test_fullgraph_compile_without_recompiling_for_a_new_pattern():
    import torch._dynamo as dynamo

    settings = MergeSettings(ratio=0.5)

    def step(x, pattern):
        plan = plan_merge(x, 13, 19, settings, pattern, route="gpu")
        return plan.restore(torch.tanh(plan.merge(x))), plan.key_log_size

    dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 13 * 19, 8, generator=seeded(5))
    pattern = torch.tensor(3)
    with dynamo.config.patch(error_on_recompile=True):
        for value in (3, 11, 12345):
            pattern.fill_(value)
            for got, want in zip(compiled(x, pattern), step(x, pattern), strict=True):
                torch.testing.assert_close(got, want)
    dynamo.reset()


def test_gradients_flow_through_merge_and_restore():
    x = torch.randn(1, 8 * 8, 4, generator=seeded(6), dtype=torch.float64, requires_grad=True)
    plan = plan_merge(x.detach(), 8, 8, MergeSettings(ratio=0.5), 1, route="gpu")
    torch.autograd.gradcheck(lambda t: plan.restore(torch.tanh(plan.merge(t))), (x,))


def test_roles_match_the_groups():
    x = torch.randn(1, 16 * 16, 8, generator=seeded(7))
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.5, threshold=0.2), 2, route="gpu")
    roles = plan.roles()
    assert int(roles["merged"].sum()) == 256 - plan.merged_tokens
    assert not (roles["merged"] & roles["destination"]).any()
    assert not (roles["averaged"] & ~roles["merged"]).any()


def test_regions_tile_the_grid_and_divide_the_count():
    for frames, h, w, removed, channels in [(1, 128, 128, 8192, 320), (21, 45, 80, 37800, 5120), (9, 30, 52, 7020, 1536)]:
        regions = choose_regions(frames, h, w, removed, channels)
        assert regions.count * regions.size == frames * h * w
        assert regions.size <= 4096
        x = torch.arange(frames * h * w, dtype=torch.float32).reshape(1, -1, 1)
        assert torch.equal(regions.join(regions.split(x)), x)


def test_route_choice(monkeypatch):
    assert engine_route("cpu") == "cpu" and engine_route("cuda") == "gpu"
    monkeypatch.setenv("MAME_ENGINE_ROUTE", "gpu")
    assert engine_route("cpu") == "gpu"
    assert type(plan_merge(torch.randn(1, 64, 4), 8, 8, MergeSettings(), 0)).__name__ == "DensePlan"
    monkeypatch.setenv("MAME_ENGINE_ROUTE", "fast")
    with pytest.raises(MaMeConfigError, match="MAME_ENGINE_ROUTE must be one of auto, cpu, gpu"):
        engine_route("cpu")


def test_zero_tokens_in_half_precision_stay_finite():
    """A token of norm 0 (black image regions after a norm) must not turn the plan into NaN."""
    x = torch.randn(1, 16 * 16, 16, generator=seeded(8)).half()
    x[:, :40] = 0
    plan = plan_merge(x, 16, 16, MergeSettings(ratio=0.5), 3, route="gpu")
    out = plan.restore(plan.merge(x))
    assert torch.isfinite(out).all() and torch.isfinite(plan.key_log_size).all()


def test_auto_leaves_blocks_too_small_to_pay_and_force_merges(monkeypatch, caplog):
    from mame_core import BlockAddress, BlockStep, Schedule
    from mame_core.payoff import MIN_TOKENS

    monkeypatch.setitem(MIN_TOKENS, "cpu", 1000)  # as if this CPU were a GPU with that threshold
    x = torch.randn(1, 16 * 16, 8, generator=seeded(9))
    step = BlockStep(MergeSettings(ratio=0.5), Schedule(ratio=0.5), seed=0)
    step.start_call(0.5)
    with caplog.at_level("WARNING", logger="comfyui-mame"):
        assert step.plan(x, BlockAddress("input", 1), (16, 16)).is_identity
    assert "below the 1000 from which merging saves time" in caplog.text and "MAME_FORCE_MERGE=1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="comfyui-mame"):
        assert step.plan(x, BlockAddress("output", 9), (16, 16)).is_identity
    assert not caplog.text  # one line per patched model, not one per block
    forced = BlockStep(MergeSettings(ratio=0.5), Schedule(ratio=0.5), seed=0, force=True)
    forced.start_call(0.5)
    assert forced.plan(x, BlockAddress("input", 1), (16, 16)).merged_tokens == 128
    monkeypatch.setenv("MAME_FORCE_MERGE", "1")
    assert not step.plan(x, BlockAddress("input", 1), (16, 16)).is_identity


def test_block_step_passes_a_host_pattern_to_the_gpu_route(monkeypatch):
    from mame_core import BlockAddress, BlockStep, Schedule

    monkeypatch.setenv("MAME_ENGINE_ROUTE", "gpu")
    x = torch.randn(2, 16 * 16, 8, generator=seeded(10))
    step = BlockStep(MergeSettings(ratio=0.5), Schedule(ratio=0.5), seed=4)
    step.start_call(0.25)
    plan = step.plan(x, BlockAddress("input", 1), (16, 16))
    address = BlockAddress("input", 1)
    again = plan_merge(x, 16, 16, MergeSettings(ratio=0.5), torch.tensor(step.pattern_of(address)), route="gpu")
    assert torch.equal(plan.groups(), again.groups())
