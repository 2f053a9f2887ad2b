"""The op audit extended to the hosts: everything MaMe runs inside the model (the ComfyUI
attn1 patch pair and attention replacement, the diffusers block hooks) runs no forbidden
aten op and no host sync (.item(), .tolist(), float()/int()/bool() of a tensor,
torch.equal, tensors built from Python lists). The once-per-call host parts (ComfyUI's
model wrapper, the diffusers UNet pre-hook) read the step by design and are not audited."""
import functools

import pytest
import torch
from conftest import seeded

from op_audit import OpRecorder, no_host_sync


class Audit:
    def __init__(self):
        self.ops = []
        self.calls = 0

    def wrap(self, fn):
        @functools.wraps(fn)
        def audited_call(*args, **kwargs):
            with no_host_sync(), OpRecorder() as rec:
                out = fn(*args, **kwargs)
            self.ops += rec.ops
            self.forbidden = sorted(set(getattr(self, "forbidden", [])) | set(rec.forbidden))
            self.calls += 1
            return out

        return audited_call


@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_diffusers_block_hooks(mode):
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel

    from bench.random_pipeline import TINY_UNET, seeded_weights_
    from mame_diffusers import apply_mame, mame_state

    unet = seeded_weights_(UNet2DConditionModel(**TINY_UNET)).eval()
    apply_mame(unet, ratio=0.5, mode=mode)
    audit = Audit()
    for ref in mame_state(unet).blocks:
        for hooks in (ref.module._forward_pre_hooks, ref.module._forward_hooks):
            for key, hook in hooks.items():
                hooks[key] = audit.wrap(hook)
    gen = seeded(0)
    with torch.no_grad():
        unet(torch.randn(2, 4, 32, 32, generator=gen), torch.tensor(500),
             encoder_hidden_states=torch.randn(2, 7, 32, generator=gen))
    assert mame_state(unet).last_pass and audit.calls == 2 * len(mame_state(unet).blocks)
    assert audit.forbidden == []
    assert {"bmm", "mm"} & set(audit.ops)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["qkv", "kv"])
def test_comfyui_patch_and_attention_replacement(mode):
    from comfy_models import mame_patch, sample, small_sd15

    patched = mame_patch(small_sd15(), mode=mode)
    audit = Audit()
    options = patched.model_options["transformer_options"]
    for kind in ("attn1_patch", "attn1_output_patch"):
        options["patches"][kind] = [audit.wrap(p) for p in options["patches"][kind]]
    replace = options["patches_replace"]["attn1"]
    for key in replace:
        replace[key] = audit.wrap(replace[key])
    sample(patched, steps=1)
    mame = patched.model_options["transformer_options"]["patches"]["attn1_patch"][0].__wrapped__.__self__
    assert mame.last_pass and audit.calls > 0
    assert audit.forbidden == []
    assert {"bmm", "mm"} & set(audit.ops)
