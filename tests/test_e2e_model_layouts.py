"""SDXL and SD2.1-768-v layouts through ComfyUI's real UNet, ModelPatcher and sampler: the UNets
are built in-process from ComfyUI's own classes at narrow width (tests/comfy_models.py, the
session fixtures ``sdxl`` and ``sd21`` of conftest). Weights are seeded random values; nothing is mocked.
"""
import logging

import pytest
import torch
from comfy_models import mame_patch as mame
from comfy_models import sample_at as sample

from embedded_host.inprocess import comfy_host

pytestmark = pytest.mark.e2e


def the_patch(patched):
    return patched.model_options["transformer_options"]["patches"]["attn1_patch"][-1].__self__


def test_sdxl_merges_its_half_resolution_blocks_at_portrait_size(sdxl):
    patched = mame(sdxl)
    out = sample(patched, 832, 1216, batch=3, steps=1)
    assert out.shape == (3, 4, 152, 104) and torch.isfinite(out).all()
    record = the_patch(patched).last_pass
    # SDXL has no attention at full resolution; auto picks d2 (76x52 tokens at 832x1216).
    assert set(record) == {"input_4", "input_5", "output_3", "output_4", "output_5"}
    for r in record.values():
        # ratio 0.5 of the whole grid, border included: exactly half the tokens
        assert r.grid == (76, 52) and r.tokens == 3952 and r.merged_tokens == 3952 / 2
        assert len(r.layers) == 2  # both transformer layers of each block merged
    assert sdxl.model_options.get("transformer_options", {}).get("patches") is None  # input untouched


def test_sdxl_levels_d2_d4_and_ratio_zero_identity(sdxl, sdxl_512_plain):
    both = mame(sdxl, levels="d2,d4")
    sample(both, 512, 512, steps=1)
    record = the_patch(both).last_pass
    assert {"input_7", "input_8", "middle_0", "output_0"} <= set(record)
    assert len(record["middle_0"].layers) == 3

    zero = sample(mame(sdxl, ratio=0.0), 512, 512, steps=1)
    assert torch.equal(sdxl_512_plain, zero)


def test_sd21_768_v_prediction(sd21):
    patched = mame(sd21)
    out = sample(patched, 768, 768, context_dim=1024, steps=1)
    assert torch.isfinite(out).all()
    record = the_patch(patched).last_pass
    assert set(record) == {"input_1", "input_2", "output_9", "output_10", "output_11"}
    assert all(r.tokens == 96 * 96 and r.merged_tokens == 96 * 96 // 2 for r in record.values())


def test_window_turns_merging_off_outside_it(sd21):
    patched = mame(sd21, start_percent=0.0, end_percent=0.3)
    sample(patched, 256, 256, context_dim=1024, steps=4)
    # The last of four steps is past 30% of the schedule, so the final pass merged nothing.
    assert the_patch(patched).last_pass == {}


class NotAUNet(torch.nn.Module):
    """Stands in for a DiT (Flux, SD3): a diffusion model without UNet attention blocks."""

    def forward(self, x):
        return x


def test_unsupported_model_passes_through_with_one_warning(caplog):
    comfy_host()
    import comfy.model_patcher

    holder = torch.nn.Module()
    holder.diffusion_model = NotAUNet()
    model = comfy.model_patcher.ModelPatcher(holder, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        assert mame(model) is model
    warnings = [r for r in caplog.records if "passing it through unchanged" in r.getMessage()]
    assert len(warnings) == 1


def test_merges_are_recorded_only_for_a_map_node(sd21):
    plain = mame(sd21)
    sample(plain, 256, 256, context_dim=1024, steps=2)
    assert not the_patch(plain).recorder.armed and the_patch(plain).recorder.runs == []

    prompt = {"2": {"class_type": "MaMe", "inputs": {}},
              "9": {"class_type": "MaMeMergeMap", "inputs": {"merge_map": ["2", 1]}}}
    recorded = mame(sd21, prompt=prompt, unique_id="2")
    sample(recorded, 256, 256, context_dim=1024, steps=2)
    recorder = the_patch(recorded).recorder
    rec = recorder.pick("auto", 0, -1)
    assert rec.step == 1 and rec.merge_map.h == rec.merge_map.w == 32 and rec.level == 1
    assert recorder.pick("output_11", 0, 0).step == 0
