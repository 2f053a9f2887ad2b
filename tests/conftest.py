import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# scripts/run_tests.sh runs the two hosts' e2e passes side by side and gives each half the cores.
torch.set_num_threads(int(os.environ.get("MAME_TEST_THREADS", "2")))


def seeded(seed: int) -> torch.Generator:
    """Tests draw every random tensor from their own generator, never the global RNG."""
    return torch.Generator().manual_seed(seed)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI server with this extension installed, and a client for it."""
    from embedded_host.server import ComfyServer, ensure_checkpoint
    from mame_batch import ComfyClient

    ensure_checkpoint("tiny")
    out = tmp_path_factory.mktemp("comfy-output")
    with ComfyServer(out, extra_args=["--use-pytorch-cross-attention"]) as server:
        yield ComfyClient(server.url, timeout=60), server


def pytest_configure(config):
    config.addinivalue_line("markers", "dit: DiT/video tests; they need the 2025 host (MAME_HOST=2025)")
    config.addinivalue_line(
        "markers", "one_host(host, why): an e2e test whose outcome does not depend on the ComfyUI release; "
        "scripts/run_tests.sh runs the e2e tests once per host, and this one runs only in the MAME_HOST=host pass")


def pytest_collection_modifyitems(config, items):
    """Skip one_host tests in the other host's pass (never when MAME_HOST_DIR names another ComfyUI)."""
    if "MAME_HOST_DIR" in os.environ:
        return
    from embedded_host.hosts import host_name

    current = host_name()
    for item in items:
        marker = item.get_closest_marker("one_host")
        if marker is None:
            continue
        host, why = marker.args
        if host != current:
            item.add_marker(pytest.mark.skip(
                reason=f"host-independent ({why}): runs once, in the MAME_HOST={host} pass of scripts/run_tests.sh"))


@pytest.fixture(scope="session")
def dit_host():
    """This extension loaded in-process into the 2025 ComfyUI host (the DiT families live there)."""
    from embedded_host.hosts import host_name

    if host_name() != "2025" and "MAME_HOST_DIR" not in os.environ:
        pytest.skip("DiT and video models need the 2025 ComfyUI host; run with MAME_HOST=2025")
    from embedded_host.inprocess import extension

    module = extension()
    try:
        import comfy.ldm.flux.model  # noqa: F401
    except ImportError:
        pytest.skip("this ComfyUI host has no DiT model classes")
    return module


# The SDXL and SD2.1 layout UNets (tests/comfy_models.py), built once for the modules that sample them.
@pytest.fixture(scope="session")
def sdxl():
    from comfy_models import layout_model

    return layout_model("sdxl")


@pytest.fixture(scope="session")
def sd21():
    from comfy_models import layout_model

    return layout_model("sd21")


@pytest.fixture(scope="session")
def sdxl_512_plain(sdxl):
    """The SDXL layout sampled unpatched at 512x512, one step: what an unmerging patch must give."""
    from comfy_models import sample_at

    return sample_at(sdxl, 512, 512, steps=1)
