"""The MaMe node's host-side behaviour in ComfyUI's real classes (2024-03 host in-process):
an exception inside the patch is reported once with its cause and shown by the Merge Map
node; a failing map analysis never switches merging off; the recorder analyses the batch
item the map draws (issue 15, bugs 1 and 3)."""
import logging

import pytest
import torch
from comfy_models import mame_patch, sample, small_sd15

from embedded_host.inprocess import extension

pytestmark = pytest.mark.e2e
MAP_PROMPT = {"2": {"class_type": "MaMe", "inputs": {}},
              "9": {"class_type": "MaMeMergeMap", "inputs": {"merge_map": ["2", 1], "batch_index": 1}}}


@pytest.fixture(scope="module")
def model():
    return small_sd15()


def the_patch(patched):
    return patched.model_options["transformer_options"]["patches"]["attn1_patch"][-1].__self__


def test_an_error_in_the_patch_is_reported_once_with_its_cause(model, caplog, monkeypatch):
    patched = mame_patch(model, prompt=MAP_PROMPT, unique_id="2")
    mame = the_patch(patched)

    def broken(*args, **kwargs):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(mame.step, "plan", broken)
    with caplog.at_level(logging.WARNING, logger="comfyui-mame"):
        out = sample(patched, steps=2)
    plain = sample(model, steps=2)
    assert torch.equal(out, plain)  # merging off, sampling unharmed
    warnings = [r.getMessage() for r in caplog.records if "switched off" in r.getMessage()]
    assert warnings == ["MaMe: merging switched off for this model after an error in its attention patch: "
                        "RuntimeError: Expected all tensors to be on the same device"]
    node = extension().NODE_CLASS_MAPPINGS["MaMeMergeMap"]()
    with pytest.raises(ValueError, match="MaMe recorded nothing: RuntimeError: Expected all tensors"):
        node.draw(torch.zeros(1, 64, 64, 3), mame.recorder, "auto", 0, -1, 0, 0.5)


def test_a_failing_map_analysis_keeps_merging_on(model, monkeypatch):
    import sys

    recorder_module = sys.modules[type(the_patch(mame_patch(model)).recorder).__module__]

    def broken(*args, **kwargs):
        raise RuntimeError("no CUDA here")

    monkeypatch.setattr(recorder_module, "describe_merges", broken)
    patched = mame_patch(model, prompt=MAP_PROMPT, unique_id="2")
    merged = sample(patched, steps=1)
    assert the_patch(patched).error is None and the_patch(patched).last_pass  # still merging
    assert not torch.equal(merged, sample(model, steps=1))
    with pytest.raises(ValueError, match="recording failed: RuntimeError: no CUDA here"):
        the_patch(patched).recorder.pick("auto", 0, -1)


@pytest.mark.parametrize("chunks,batch,index,row", [
    ([1, 0], 4, 1, 3),  # uncond chunk first: image 1's cond row is the 4th
    ([0, 1], 4, 1, 1),
    ([0], 2, 1, 1),  # cond alone in this call
    ([1], 2, 1, None),  # uncond alone: not the image the map draws, so not recorded
    ([0, 1], 4, 7, 1),  # an index past the batch draws the last image
])
def test_recorder_picks_the_conditional_row_of_the_drawn_image(chunks, batch, index, row):
    recorder_type = type(the_patch(mame_patch(small_sd15())).recorder)
    recorder = recorder_type(armed=True, batch_index=index)
    recorder.set_rows(chunks, batch)
    assert recorder.row == row


def test_recorded_map_is_the_drawn_images_conditional_tokens(model, monkeypatch):
    import sys

    from mame_core import describe_merges

    seen = []
    recorder_module = sys.modules[type(the_patch(mame_patch(model)).recorder).__module__]

    def spy(tokens, *args, **kwargs):
        seen.append(tokens)
        return describe_merges(tokens, *args, **kwargs)

    monkeypatch.setattr(recorder_module, "describe_merges", spy)
    rows = []
    patched = mame_patch(model, prompt=MAP_PROMPT, unique_id="2")
    mame = the_patch(patched)
    chunks = []
    record, set_rows = mame.recorder.record, mame.recorder.set_rows
    monkeypatch.setattr(mame.recorder, "record", lambda n, *a: (rows.append(n[mame.recorder.row]), record(n, *a)))
    monkeypatch.setattr(mame.recorder, "set_rows", lambda c, b: (chunks.append((list(c), b)), set_rows(c, b)))
    sample(patched, steps=1, batch=2)
    assert seen and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in seen)  # analysed on the host
    (kinds, batch), = set(map(lambda c: (tuple(c[0]), c[1]), chunks))
    assert mame.recorder.row == kinds.index(0) * (batch // len(kinds)) + 1  # image 1, positive prompt
    torch.testing.assert_close(seen[0], rows[0].float())
