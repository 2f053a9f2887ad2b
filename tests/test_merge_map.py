"""describe_merges / draw_merge_map: the labels are the plan's own groups, computed on the host."""
import torch
from conftest import seeded
from torch.utils._python_dispatch import TorchDispatchMode

from mame_core import MergeSettings, describe_merges, draw_merge_map, plan_merge


def test_labels_are_the_plans_groups_on_a_non_divisible_grid():
    x = torch.randn(13 * 19, 16, generator=seeded(0))
    settings = MergeSettings(ratio=0.5, tile=8)
    m = describe_merges(x, 13, 19, settings, 77)
    plan = plan_merge(x.unsqueeze(0), 13, 19, settings, 77)
    # tokens share a label exactly when merge then restore gives them one output
    restored = plan.restore(plan.merge(x.unsqueeze(0)))[0]
    group = m.group.flatten()
    _, first = torch.unique(restored, dim=0, return_inverse=True)
    same_label = group.unsqueeze(0) == group.unsqueeze(1)
    assert torch.equal(same_label, first.unsqueeze(0) == first.unsqueeze(1))
    kept = ~m.merged.flatten()
    assert torch.equal(torch.bincount(group[kept], minlength=plan.merged_tokens), torch.ones(plan.merged_tokens).long())
    assert (m.is_destination.flatten()[kept].sum() + 0) <= kept.sum()
    s = m.stats()
    assert s["groups"] == plan.merged_tokens
    assert abs(s["effective_ratio"] - (1 - plan.merged_tokens / (13 * 19))) < 1e-12
    assert s["share_merged"] == (13 * 19 - plan.merged_tokens) / (13 * 19)  # τ = -1 averages all
    assert s["border_tokens"] == 0


def test_threshold_labels():
    x = torch.randn(16 * 16, 64, generator=seeded(1))
    m = describe_merges(x, 16, 16, MergeSettings(ratio=0.5, threshold=0.9))
    s = m.stats()
    assert s["share_merged"] == 0.0 and s["share_below_threshold"] == 0.5  # random tokens: all below 0.9
    assert not (m.merged & m.is_destination).any()


class FakeMetaToCpu(TorchDispatchMode):
    """Stands in for a GPU: copying the meta input to the CPU yields real values, and every
    other op must then run on CPU tensors only (a device mix would fail or stay on meta)."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.copied = False
        self.devices = set()  # devices seen after the input was copied to the host

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else None
        if func.overloadpacket.__name__ == "_to_copy" and isinstance(first, torch.Tensor) and first.is_meta:
            self.copied = True
            return self.values.clone()
        if not self.copied:
            return func(*args, **kwargs)
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor):
                self.devices.add(a.device.type)
        return func(*args, **kwargs)


def test_runs_on_the_host_whatever_device_the_input_is_on():
    values = torch.randn(12 * 12, 8, generator=seeded(2))
    on_device = torch.empty(12 * 12, 8, device="meta")
    mode = FakeMetaToCpu(values)
    with mode:
        m = describe_merges(on_device, 12, 12, MergeSettings(ratio=0.5), torch.tensor(5))
    assert mode.copied and mode.devices == {"cpu"}, mode.devices
    assert m.group.device.type == "cpu"
    assert torch.equal(m.group, describe_merges(values, 12, 12, MergeSettings(ratio=0.5), 5).group)


def test_drawing_keeps_the_image_size_and_marks_groups():
    grid = torch.zeros(16, 16, 8)
    grid[:, :4, 0] = 1.0
    grid[:, 4:, 1] = 1.0
    m = describe_merges(grid.reshape(256, 8), 16, 16, MergeSettings(ratio=0.5, tile=8))
    image = torch.full((128, 128, 3), 0.5)
    drawn = draw_merge_map(image, m)
    assert drawn.shape == image.shape
    assert not torch.equal(drawn, image)
    assert float(drawn.min()) >= 0.0 and float(drawn.max()) <= 1.0
