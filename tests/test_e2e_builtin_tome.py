"""Evidence for the README's claim about ComfyUI's built-in ToMe node (`TomePatchModel`).

It merges tokens only in blocks at full latent resolution. SDXL has no self-attention there,
so on SDXL it changes nothing, while on SD2.x it does. Both halves run ComfyUI's own node on
its real UNet classes (the layouts of test_e2e_model_layouts: tests/comfy_models.py), so the test
fails if either half of the claim stops being true.
"""
import pytest
import torch
from comfy_models import sample_at as sample

from embedded_host.inprocess import comfy_host

pytestmark = pytest.mark.e2e


def builtin_tome(model, ratio=0.5):
    comfy_host()
    from comfy_extras.nodes_tomesd import TomePatchModel

    if hasattr(TomePatchModel, "execute"):  # the V3 node API (2025 ComfyUI)
        return TomePatchModel.execute(model, ratio)[0]
    return TomePatchModel().patch(model, ratio)[0]


def test_builtin_tome_changes_nothing_on_sdxl(sdxl, sdxl_512_plain):
    tome = sample(builtin_tome(sdxl), 512, 512, steps=1)
    assert torch.equal(sdxl_512_plain, tome)


def test_builtin_tome_changes_sd21(sd21):
    plain = sample(sd21, 256, 256, context_dim=1024, steps=1)
    tome = sample(builtin_tome(sd21), 256, 256, context_dim=1024, steps=1)
    assert not torch.equal(plain, tome)
