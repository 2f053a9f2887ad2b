"""A DiT graph through the real 2025 ComfyUI server: a generated SD3-layout MMDiT file loaded
by ComfyUI's UNETLoader (detected from its weights), conditioned by a generated CLIP-L through
ComfyUI's own CLIPLoader (type sd3; T5-XXL is too large to generate here, and SD3 runs
without it), the MaMe node, KSampler and SaveLatent."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.dit]

UNET = "mame-random-sd3-tiny.safetensors"
CLIP = "mame-random-clip-l.safetensors"


@pytest.fixture(scope="module")
def dit_server(tmp_path_factory):
    from embedded_host.hosts import REPO, host_name

    if host_name() != "2025":
        pytest.skip("DiT models need the 2025 ComfyUI host; run with MAME_HOST=2025")
    from embedded_host.server import ComfyServer, prepare_host
    from mame_batch import ComfyClient

    host = prepare_host()
    for folder, name, family in (("diffusion_models", UNET, "sd3"), ("text_encoders", CLIP, "clip_l")):
        path = host / "models" / folder / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "embedded_host.dit_models", "--host", str(host), family, str(path)],
                           cwd=REPO, check=True)
    with ComfyServer(tmp_path_factory.mktemp("dit-output")) as server:
        yield ComfyClient(server.url, timeout=120), server


def graph(ratio: float, prefix: str) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP, "type": "sd3", "device": "default"}},
        "3": {"class_type": "MaMe", "inputs": {"model": ["1", 0], "ratio": ratio, "threshold": 0.7, "mode": "qkv",
                                                "tile_size": 8, "levels": "auto", "start_percent": 0.0,
                                                "end_percent": 1.0, "seed": 0, "overrides": ""}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a lighthouse at dusk"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 320, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 1, "steps": 2, "cfg": 3.0,
                                                    "sampler_name": "euler", "scheduler": "simple",
                                                    "positive": ["4", 0], "negative": ["5", 0],
                                                    "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
    }


def test_sd3_graph_merges_image_tokens_over_http(dit_server):
    client, server = dit_server
    start = len(server.log_text())
    client.run(graph(0.5, "dit_http_mame"))
    log = server.log_text()[start:]
    assert "MaMe: sd3 (OpenAISignatureMMDITWrapper)" in log
    # 32x40 latent cells -> 16x20 image tokens; every joint block and the x-only attention merge them
    lines = re.findall(r"MaMe: sd3, merging image tokens in[^\r\n]*", log)
    assert lines and "blocks_0 320->" in lines[-1] and "blocks_1 320->" in lines[-1]
    start = len(server.log_text())
    client.run(graph(0.0, "dit_http_off"))
    assert "merging image tokens" not in server.log_text()[start:]
