"""The DiT family registry (nodes/families.py) and the sampling clock (nodes/kit.py): the docs
table is the registry's, every stage is a schedule stage, every class is one ComfyUI v0.3.75
defines, and the start/end window switches where ComfyUI's percent_to_sigma says."""
import importlib.util
import os
import re
import sys

import pytest

from mame_core.schedule import DIT_STAGES, parse_rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"mame_nodes_{name}", os.path.join(ROOT, "nodes", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


families = _load("families")
kit = _load("kit")


def test_docs_table_is_the_registry():
    with open(os.path.join(ROOT, "docs", "dit.md"), encoding="utf-8") as f:
        assert families.docs_table() in f.read()


def test_every_stage_is_a_schedule_stage_and_parses():
    for family in families.FAMILIES:
        assert set(family.stages) <= set(DIT_STAGES), family.name
        for stage in family.stages:
            assert parse_rules(f"{stage}_0-3 = 0.4, {stage} = off")
        assert family.merges == (family.layout is not None) == bool(family.stages), family.name
    assert set(families.dit_stages()) == set(DIT_STAGES)


def test_layouts_and_block_labels_are_consistent():
    for family in families.FAMILIES:
        if not family.merges:
            continue
        assert family.layout in families.LAYOUT_WORDS, family.name
        assert (family.pad_attr is not None) <= (family.layout == families.IMAGE_THEN_PAD), family.name
        if family.counted or family.block_attr is not None:  # MaMe labels one module list a stage
            assert len(family.stages) == 1 + bool(family.single_attr) and family.block_attr, family.name
    nextdit = families.BY_CLASS["NextDiT"]
    assert nextdit.merges and nextdit.layout == families.IMAGE_THEN_PAD and nextdit.stages == ("blocks",)
    assert nextdit.counted == 1 and nextdit.counted_after == ("context_refiner", "noise_refiner")
    assert nextdit.pad_attr == "pad_tokens_multiple"
    hunyuan = families.BY_CLASS["HunyuanVideo"]
    assert hunyuan.merges and hunyuan.layout == families.IMAGE_FIRST and hunyuan.stages == ("double", "single")
    assert [f.name for f in families.FAMILIES if f.key_mask] == ["hunyuan_video"]  # the one family with a key mask


def test_class_names_are_unique_and_defined_by_the_2025_host():
    names = [c for f in families.FAMILIES for c in f.classes]
    assert len(names) == len(set(names))
    ldm = os.path.join(ROOT, ".host", "comfyui-2025", "comfy", "ldm")
    if not os.path.isdir(ldm):
        pytest.skip("the 2025 host tree is not laid out (embedded_host/hosts.py)")
    source = ""
    for folder, _, files in os.walk(ldm):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    source += f.read()
    for name in names:
        if name.startswith("comfy."):  # module-qualified (two host classes are called MMDiT)
            module, _, cls = name.rpartition(".")
            with open(os.path.join(ROOT, ".host", "comfyui-2025", *module.split(".")) + ".py", encoding="utf-8") as f:
                assert re.search(rf"^class {cls}\b", f.read(), re.M), name
            continue
        assert re.search(rf"^class {name}\b", source, re.M), name


class LinearSigmas:
    """percent_to_sigma of a flow model with shift 1 (ComfyUI's ModelSamplingDiscreteFlow: 1 - percent)."""

    def percent_to_sigma(self, percent):
        return 1.0 - percent


@pytest.mark.parametrize("start,end", [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.3, 1.0)])
def test_clock_window_is_the_sigma_window(start, end):
    clock = kit.SamplingClock(LinearSigmas(), start, end)
    for i in range(101):
        sigma = 1.0 - i / 100
        progress = clock.progress(sigma)
        assert (start <= progress <= end) == (1.0 - end <= sigma <= 1.0 - start), (sigma, progress)
        assert abs(progress - i / 100) < 1e-9 or not start <= i / 100 <= end or progress in (start, end)


def test_clock_without_sampling_is_always_at_the_start():
    clock = kit.SamplingClock(None)
    assert clock.progress(14.6) == 0.0 and clock.in_window(14.6)
