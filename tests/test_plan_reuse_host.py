"""The MaMe node's plan reuse inputs in ComfyUI's real classes (the host in-process, CPU):
``plan_reuse_steps`` makes later steps use earlier plans, ``share_layers`` makes a block's
second transformer layer use its first layer's plan, and both change the sample."""
import pytest
import torch
from comfy_models import SMALL_SD15, mame_patch, sample

pytestmark = pytest.mark.e2e


def the_patch(patched):
    return patched.model_options["transformer_options"]["patches"]["attn1_patch"][-1].__self__


@pytest.fixture(scope="module")
def two_layer_model():
    """The small SD1.5 layout with two transformer layers per block (as SDXL's blocks hold)."""
    import comfy_models

    config = dict(SMALL_SD15, transformer_depth=[2, 2], transformer_depth_output=[2, 2, 2, 2],
                  transformer_depth_middle=2)
    original = comfy_models.SMALL_SD15
    comfy_models.SMALL_SD15 = config
    try:
        return comfy_models.small_sd15()
    finally:
        comfy_models.SMALL_SD15 = original


def test_plans_serve_later_steps_and_move_the_sample(two_layer_model):
    fresh = mame_patch(two_layer_model, threshold=-1.0)
    reusing = mame_patch(two_layer_model, threshold=-1.0, plan_reuse_steps=3)
    a, b = sample(fresh, steps=4), sample(reusing, steps=4)
    assert the_patch(fresh).step.plans.reused == 0
    assert the_patch(reusing).step.plans.reused > 0
    assert not torch.equal(a, b)
    assert torch.equal(b, sample(mame_patch(two_layer_model, threshold=-1.0, plan_reuse_steps=3), steps=4))


def test_a_blocks_second_layer_shares_the_first_layers_plan(two_layer_model):
    own = mame_patch(two_layer_model, threshold=-1.0)
    shared = mame_patch(two_layer_model, threshold=-1.0, share_layers=True)
    a, b = sample(own, steps=1), sample(shared, steps=1)
    step = the_patch(shared).step
    assert step.plans.reused > 0
    assert any(record.layers == frozenset({0, 1}) for record in step.records.values())
    assert not torch.equal(a, b)


def test_the_merge_map_shows_the_plan_a_layer_used(two_layer_model):
    prompt = {"2": {"class_type": "MaMe", "inputs": {}},
              "9": {"class_type": "MaMeMergeMap", "inputs": {"merge_map": ["2", 1], "batch_index": 0}}}
    maps = {}
    for share in (False, True):
        patched = mame_patch(two_layer_model, threshold=-1.0, share_layers=share, prompt=prompt, unique_id="2")
        sample(patched, steps=1)
        recorder = the_patch(patched).recorder
        maps[share] = (recorder.pick("input_1", 0, 0).merge_map, recorder.pick("input_1", 1, 0).merge_map)
    assert maps[True][0] is maps[True][1]  # the second layer applied the first layer's plan
    assert not torch.equal(maps[False][0].group, maps[False][1].group)  # each layer planned its own
