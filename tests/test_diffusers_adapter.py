"""apply_mame / remove_mame on tiny diffusers UNets of the SD1.5, SD2.1 and SDXL layouts
(built from configs with seeded random weights; no hub access)."""
import logging

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from conftest import seeded  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor  # noqa: E402

from bench.random_pipeline import TINY_UNET, random_pipeline, seeded_weights_  # noqa: E402
from mame_diffusers import apply_mame, mame_state, remove_mame  # noqa: E402

SD15 = TINY_UNET  # the SD1.5 block layout, narrow
SD21 = dict(SD15, use_linear_projection=True, attention_head_dim=(2, 4, 8, 8), cross_attention_dim=48)
SDXL = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 3), cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=8 * 6 + 32,
)


def make_unet(config):
    return seeded_weights_(UNet2DConditionModel(**config)).eval()


def inputs(config, batch=2, size=32, t=500):
    gen = seeded(1)
    kwargs = dict(
        sample=torch.randn(batch, 4, size, size, generator=gen),
        timestep=torch.tensor(t),
        encoder_hidden_states=torch.randn(batch, 7, config["cross_attention_dim"], generator=gen),
    )
    if config.get("addition_embed_type") == "text_time":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 32, generator=gen),
                                       "time_ids": torch.randn(batch, 6, generator=gen)}
    return kwargs


def run(unet, kwargs):
    with torch.no_grad():
        return unet(**kwargs).sample


@pytest.fixture(scope="module")
def sd15():
    return make_unet(SD15)


def test_ratio_zero_is_identity_and_remove_restores_exactly(sd15):
    kw = inputs(SD15)
    before = run(sd15, kw)
    apply_mame(sd15, ratio=0.0)
    assert torch.equal(run(sd15, kw), before)
    apply_mame(sd15, ratio=0.5)
    merged = run(sd15, kw)
    assert not torch.equal(merged, before)
    remove_mame(sd15)
    assert mame_state(sd15) is None
    assert torch.equal(run(sd15, kw), before)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in sd15.modules())


def test_tokens_are_reduced_at_full_resolution(sd15):
    apply_mame(sd15, ratio=0.5)
    try:
        run(sd15, inputs(SD15, size=32))
        record = mame_state(sd15).last_pass
    finally:
        remove_mame(sd15)
    assert set(record) == {"input_1.0", "input_2.0", "output_9.0", "output_10.0", "output_11.0"}
    assert all(v == (1024, 512) for v in record.values())


def test_schedule_text_and_levels(sd15):
    apply_mame(sd15, ratio=0.5, levels="d1,d2", schedule=None)
    run(sd15, inputs(SD15))
    assert {"input_4.0", "output_6.0"} <= set(mame_state(sd15).last_pass)
    apply_mame(sd15, schedule="d1 = off, middle = 0.5")  # calling again re-configures
    run(sd15, inputs(SD15))
    assert set(mame_state(sd15).last_pass) == {"middle_0.0"}
    remove_mame(sd15)


def test_window_follows_timestep_progress(sd15):
    apply_mame(sd15, ratio=0.5, start_percent=0.0, end_percent=0.3)
    run(sd15, inputs(SD15, t=950))
    early = dict(mame_state(sd15).last_pass)
    run(sd15, inputs(SD15, t=100))
    late = dict(mame_state(sd15).last_pass)
    remove_mame(sd15)
    assert early and not late


@pytest.mark.parametrize("processor", [AttnProcessor, AttnProcessor2_0, lambda: SlicedAttnProcessor(slice_size=1)])
def test_works_under_each_attention_processor(sd15, processor):
    kw = inputs(SD15, batch=3)
    sd15.set_attn_processor(AttnProcessor2_0())
    apply_mame(sd15, ratio=0.5)
    reference = run(sd15, kw)
    sd15.set_attn_processor(processor())
    out = run(sd15, kw)
    assert mame_state(sd15).last_pass
    remove_mame(sd15)
    sd15.set_attn_processor(AttnProcessor2_0())
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_xformers_when_installed(sd15):
    pytest.importorskip("xformers")
    sd15.enable_xformers_memory_efficient_attention()
    apply_mame(sd15, ratio=0.5)
    run(sd15, inputs(SD15))
    assert mame_state(sd15).last_pass
    remove_mame(sd15)


def test_sd21_layout_kv_mode():
    unet = make_unet(SD21)
    apply_mame(unet, ratio=0.5, mode="kv")
    out = run(unet, inputs(SD21, batch=3))
    assert out.shape == (3, 4, 32, 32) and torch.isfinite(out).all()
    assert mame_state(unet).last_pass["input_1.0"] == (1024, 512)


def test_sdxl_layout_with_added_conditioning():
    unet = make_unet(SDXL)
    before = run(unet, inputs(SDXL, batch=3))
    apply_mame(pipe_or_unet=unet, ratio=0.5)
    out = run(unet, inputs(SDXL, batch=3))
    record = mame_state(unet).last_pass
    # no attention at full resolution; auto merges the d2 blocks, both layers of each
    assert set(record) == {"input_4.0", "input_4.1", "input_5.0", "input_5.1",
                           "output_3.0", "output_3.1", "output_4.0", "output_4.1", "output_5.0", "output_5.1"}
    assert all(v == (256, 128) for v in record.values())
    assert out.shape == before.shape and not torch.equal(out, before)


def test_unsupported_model_is_left_unchanged(caplog):
    model = torch.nn.Linear(4, 4)
    with caplog.at_level(logging.WARNING):
        assert apply_mame(model) is model
    assert "no UNet self-attention blocks" in caplog.text and mame_state(model) is None


def test_full_pipeline_from_tiny_components():
    pipe = random_pipeline("tiny")  # UNet, VAE, CLIP text encoder and tokenizer, all generated
    assert apply_mame(pipe, ratio=0.5, seed=3) is pipe
    out = pipe("a red barn", num_inference_steps=2, height=64, width=64, num_images_per_prompt=3,
               guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (3, 64, 64, 3)
    record = mame_state(pipe).last_pass
    assert record["input_1.0"] == (1024, 512)  # this tiny VAE downsamples 2x: a 32x32 latent at 64 px
    again = pipe("a red barn", num_inference_steps=2, height=64, width=64, num_images_per_prompt=3,
                 guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert (out == again).all()  # seeded: the same run gives the same images


@pytest.mark.parametrize("extra", [{"levels": "d1"}, {"start_percent": 0.2}, {"end_percent": 0.8}])
def test_a_schedule_object_with_levels_or_window_arguments_is_refused(sd15, extra):
    from mame_core import MaMeConfigError, Schedule

    with pytest.raises(MaMeConfigError, match=f"{next(iter(extra))} cannot be combined with schedule=Schedule"):
        apply_mame(sd15, schedule=Schedule(ratio=0.4), **extra)
    assert mame_state(sd15) is None


def test_a_schedule_object_carries_its_own_levels_and_window(sd15):
    from mame_core import Schedule, parse_levels

    apply_mame(sd15, schedule=Schedule(ratio=0.4, levels=parse_levels("d2"), start_percent=0.0, end_percent=0.3))
    run(sd15, inputs(SD15, t=950))
    early = dict(mame_state(sd15).last_pass)
    run(sd15, inputs(SD15, t=100))
    late = dict(mame_state(sd15).last_pass)
    remove_mame(sd15)
    assert set(early) == {"input_4.0", "input_5.0", "output_6.0", "output_7.0", "output_8.0"} and not late
