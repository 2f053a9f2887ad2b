"""Plans shared by the layers of a block and reused over sampling steps (mame_core.plan_reuse)."""
import pytest
import torch
from conftest import seeded

from bench.op_count import count, fake_cuda
from mame_core import BlockAddress, BlockStep, MaMeConfigError, MergeSettings, Schedule, plan_merge
from mame_core.plan_reuse import Reuse


def _step(reuse: Reuse, ratio=0.5) -> BlockStep:
    return BlockStep(MergeSettings(ratio=ratio), Schedule(ratio=ratio), seed=3, reuse=reuse)


def _x(seed: int, tokens=256, channels=32, batch=2) -> torch.Tensor:
    return torch.randn(batch, tokens, channels, generator=seeded(seed))


LAYER0 = BlockAddress("input", 1, layer=0, level=1)
LAYER1 = BlockAddress("input", 1, layer=1, level=1)
OTHER = BlockAddress("output", 9, layer=0, level=1)


@pytest.mark.parametrize("route", ["cpu", "gpu"])
def test_later_layers_of_a_block_share_the_first_layers_plan(route, monkeypatch):
    monkeypatch.setenv("MAME_ENGINE_ROUTE", route)
    step = _step(Reuse(layers=True))
    step.start_call(0.1)
    first = step.plan(_x(0), LAYER0, (16, 16))
    assert step.plan(_x(1), LAYER1, (16, 16)) is first
    assert step.plan(_x(2), OTHER, (16, 16)) is not first
    assert step.records["input_1"].layers == frozenset({0, 1})
    step.start_call(0.2)  # the next step plans again
    assert step.plan(_x(0), LAYER0, (16, 16)) is not first


@pytest.mark.parametrize("route", ["cpu", "gpu"])
def test_layers_plan_apart_when_sharing_is_off(route, monkeypatch):
    monkeypatch.setenv("MAME_ENGINE_ROUTE", route)
    step = _step(Reuse(layers=False))
    step.start_call(0.1)
    first = step.plan(_x(0), LAYER0, (16, 16))
    second = step.plan(_x(1), LAYER1, (16, 16))
    assert second is not first
    fresh = plan_merge(_x(1), 16, 16, MergeSettings(ratio=0.5), pattern=step.pattern_value + LAYER1.offset,
                       route=route)
    assert torch.equal(second.groups(), fresh.groups())


def test_a_shared_plan_merges_the_new_tokens_by_the_first_layers_groups(monkeypatch):
    monkeypatch.setenv("MAME_ENGINE_ROUTE", "gpu")
    step = _step(Reuse(layers=True))
    step.start_call(0.1)
    x0, x1 = _x(0), _x(1)
    plan = step.plan(x0, LAYER0, (16, 16))
    shared = step.plan(x1, LAYER1, (16, 16))
    groups = plan.groups()[0]
    merged = shared.merge(x1)[0]
    # each merged token is the mean of x1's tokens in that group (τ = -1 averages every group)
    for slot in (0, 5, int(groups.max())):
        members = x1[0][groups == slot]
        assert torch.allclose(merged[slot], members.mean(dim=0), atol=1e-5)


def test_plans_serve_the_given_number_of_steps_per_call_of_a_step():
    step = _step(Reuse(steps=3))
    plans = []
    for progress in (0.0, 0.1, 0.2, 0.3, 0.4):
        step.start_call(progress)  # cond
        cond = step.plan(_x(int(progress * 10)), LAYER0, (16, 16))
        step.start_call(progress)  # uncond, run apart at the same progress
        uncond = step.plan(_x(50 + int(progress * 10)), LAYER0, (16, 16))
        assert uncond is not cond
        plans.append((cond, uncond))
    assert plans[0] == plans[1] == plans[2]  # planned at step 0, served steps 0-2
    assert plans[3] == plans[4] and plans[3][0] is not plans[0][0]  # planned again at step 3
    step.start_call(0.0)  # progress falls: a new sampling run plans afresh
    assert step.plan(_x(0), LAYER0, (16, 16)) is not plans[0][0]


def test_a_kept_plan_is_not_used_for_another_shape_or_batch():
    step = _step(Reuse(steps=4))
    step.start_call(0.0)
    plan = step.plan(_x(0), LAYER0, (16, 16))
    step.start_call(0.1)
    assert step.plan(_x(1, batch=1), LAYER0, (16, 16)) is not plan
    assert step.plan(_x(1, tokens=240), LAYER0, (15, 16)) is not plan
    assert step.plan(_x(1), LAYER0, (16, 16)) is plan


def test_one_plan_a_step_is_the_default_and_every_plan_is_fresh():
    step = _step(Reuse())
    seen = set()
    for progress in (0.0, 0.5, 1.0):
        step.start_call(progress)
        seen.add(id(step.plan(_x(0), LAYER0, (16, 16))))
    assert len(seen) == 3 and step.plans.reused == 0


@pytest.mark.parametrize("threshold,gate,ratio,grid,extra", [(-1.0, "hard", 0.5, (16, 16), 0),
                                                             (0.2, "hard", 0.33, (36, 60), 2),
                                                             (0.2, "sigmoid", 0.3, (45, 47), 1),
                                                             (-1.0, "hard", 0.3, (45, 47), 1)])
def test_a_released_gpu_plan_rebuilds_the_same_merge_and_restore(threshold, gate, ratio, grid, extra):
    h, w = grid
    x = _x(7, tokens=h * w, batch=1)
    plan = plan_merge(x, h, w, MergeSettings(ratio=ratio, threshold=threshold, gate=gate), pattern=11, route="gpu")
    assert plan.extra == extra  # regions with an empty last slot are covered
    merged, restored = plan.merge(x), plan.restore(plan.merge(x))
    plan.release()
    assert torch.equal(plan.merge(x), merged)
    assert torch.equal(plan.restore(merged), restored)


def test_kept_gpu_plans_hold_no_assignment_between_uses(monkeypatch):
    monkeypatch.setenv("MAME_ENGINE_ROUTE", "gpu")
    step = _step(Reuse(steps=2))
    step.start_call(0.0)
    first = step.plan(_x(0), LAYER0, (16, 16))
    step.plan(_x(0), OTHER, (16, 16))  # the next block: the first one's [R, K] matrices go
    assert not first._restore and not first._average
    step.start_call(0.1)
    assert step.plan(_x(1), LAYER0, (16, 16)) is first


def test_a_reused_gpu_plan_costs_a_few_kernels_a_call():
    """Counted under fake CUDA tensors (no GPU here): a fresh plan against a kept one."""
    with fake_cuda():
        x = torch.randn(2, 64 * 64, 320, device="cuda", dtype=torch.float16)
        settings = MergeSettings(ratio=0.5)
        fresh = count(lambda: plan_merge(x, 64, 64, settings, pattern=3, route="gpu"))
        plan = plan_merge(x, 64, 64, settings, pattern=3, route="gpu")
        plan.release()
        reused = count(lambda: plan.restore(plan.merge(x)))
    assert reused.kernels <= 12 < fresh.kernels


@pytest.mark.parametrize("bad", [0, 9, 1.5, True, "2"])
def test_bad_reuse_steps_name_the_field_and_the_range(bad):
    with pytest.raises(MaMeConfigError, match=r"plan_reuse_steps must be a whole number from 1 to 8"):
        Reuse(steps=bad)


def test_apply_mame_checks_reuse_before_touching_the_model():
    from mame_diffusers import apply_mame

    with pytest.raises(MaMeConfigError, match="plan_reuse_steps must be a whole number from 1 to 8, got 9"):
        apply_mame(object(), plan_reuse_steps=9)


LOOP_LAYERS = (("input", 4, 0), ("input", 4, 1))  # one SDXL-like block of two layers


def test_reused_calls_of_a_sampling_loop_launch_less_and_never_sync():
    """bench.gpu_reuse's loop got slower with reuse on an H200 (gpu-reuse-loop.txt). Counted under
    fake CUDA over its 6 calls: no setting makes a host sync, a call that reuses its plans
    launches fewer kernels and moves fewer bytes than one that plans, and between calls the
    cache keeps one plan's [B*G, R, K] assignments (the plan in use) and per-token tensors."""
    from bench.reuse_counts import block_counts

    batch, tokens = 2, 1024
    counts = block_counts(LOOP_LAYERS, tokens, 64, (32, 32))
    assert counts["plan over 2 steps"]["reused"]["calls"] == 3
    assert counts["plan over 3 steps"]["reused"]["calls"] == 4
    for name, kinds in counts.items():
        calls = {kind: v for kind, v in kinds.items() if kind != "kept bytes"}
        assert all(v["host syncs"] == 0 for v in calls.values()), name
        planning = [v for kind, v in calls.items() if kind != "reused"]  # "mixed": shared layers
        if "reused" in calls:
            assert max(calls["reused"]["kernels"]) < min(min(v["kernels"]) for v in planning), name
            assert calls["reused"]["bytes per call"] < min(v["bytes per call"] for v in planning), name
        in_use = 2 * batch * tokens * (tokens // 2) * 2  # average and restore, fp16: one region, K = 512
        assert kinds["kept bytes"] <= in_use + len(LOOP_LAYERS) * batch * tokens * 32, name


def test_a_reused_sampling_loop_reads_nothing_back_on_the_host(monkeypatch):
    """The same loop on real tensors under the op audit's host-sync guards (item, bool, float,
    tolist, torch.equal, tensors built from Python lists)."""
    from bench.op_audit import audited
    from bench.reuse_counts import SETTINGS, _block_step, _layer_loop

    monkeypatch.setenv("MAME_ENGINE_ROUTE", "gpu")
    for name, kw in SETTINGS.items():
        step = _block_step(kw)
        _layer_loop(step, LOOP_LAYERS, 256, 32, (16, 16), "cpu", torch.float32)  # builds the shared tables
        audited(_layer_loop, step, LOOP_LAYERS, 256, 32, (16, 16), "cpu", torch.float32)
        assert step.plans.reused > 0 or name == "new plan each step"


def test_the_gpu_reuse_loop_dry_run_records_what_explains_a_result(tmp_path):
    """bench.gpu_reuse --device cpu --quick: every setting has each round's time, median, min,
    the host's share and the garbage collections; the CUDA-only records are null on a CPU."""
    pytest.importorskip("diffusers")
    import json

    from bench import gpu_reuse

    gpu_reuse.main([str(tmp_path), "--device", "cpu", "--quick"])
    rows = json.loads((tmp_path / "gpu-reuse-loop.json").read_text())["cases"]["tiny-64 forced"]
    assert {"baseline", "mame new plan each step", "mame plan over 2 steps", "mame plan over 3 steps"} <= set(rows)
    for row in rows.values():
        assert len(row["rounds ms"]) == 1 and row["min ms"] <= row["ms per loop"]
        assert 0 < row["host ms (median)"] <= row["ms per loop"] + 1e-6
        assert isinstance(row["gc collections (generations)"], list)
        assert row["peak MB"] is None and row["device kernels"] is None and row["host syncs"] is None
    assert "min" in (tmp_path / "gpu-reuse-loop.txt").read_text()
