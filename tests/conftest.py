import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(2)


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
