"""plan + merge + restore trace as one graph, and a new pattern value does not recompile."""
import torch

from conftest import seeded
from mame_core import MergeSettings, pattern_for, plan_merge


def test_tensor_pattern_equals_int_pattern():
    x = torch.randn(2, 13 * 19, 16, generator=seeded(0))
    settings = MergeSettings(ratio=0.5, tile=4)
    for p in (0, 5, 2**40 + 3):
        a = plan_merge(x, 13, 19, settings, p)
        b = plan_merge(x, 13, 19, settings, torch.tensor(p))
        torch.testing.assert_close(a.restore(a.merge(x)), b.restore(b.merge(x)))


def test_fullgraph_compile_without_recompiling_for_a_new_pattern():
    import torch._dynamo as dynamo

    settings = MergeSettings(ratio=0.5)

    def step(x, pattern):
        plan = plan_merge(x, 16, 24, settings, pattern)
        return plan.restore(torch.tanh(plan.merge(x)))

    dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 16 * 24, 8, generator=seeded(1))
    pattern = torch.tensor(pattern_for(7, "a"))
    with dynamo.config.patch(error_on_recompile=True):
        for key in ("a", "b", "c"):
            pattern.fill_(pattern_for(7, key))
            torch.testing.assert_close(compiled(x, pattern), step(x, pattern))
    dynamo.reset()


def test_fullgraph_compile_on_a_video_grid_that_tiles_unevenly():
    import torch._dynamo as dynamo

    settings = MergeSettings(ratio=0.5, tile_frames=2)

    def step(x, pattern):
        plan = plan_merge(x, 13, 10, settings, pattern, frames=3)
        return plan.restore(torch.tanh(plan.merge(x))), plan.key_log_size

    dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3 * 13 * 10, 8, generator=seeded(2))
    pattern = torch.tensor(1)
    with dynamo.config.patch(error_on_recompile=True):
        for value in (1, -5, 2**40):
            pattern.fill_(value)
            out, log_size = compiled(x, pattern)
            ref, ref_log_size = step(x, pattern)
            torch.testing.assert_close(out, ref)
            torch.testing.assert_close(log_size, ref_log_size)
    dynamo.reset()
