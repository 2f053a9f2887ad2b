"""The example workflows in ComfyUI's real front end, on the registry archive.

A fresh 2025-host ComfyUI (v0.3.75 with its pinned comfyui-frontend-package) gets only the
archive `comfy node pack` builds, unpacked into its custom_nodes/, as a registry install does.
Its page runs in headless Chromium: each file in example_workflows/ is opened through the page's
own loading path, checked for missing nodes, MaMe tooltips and overlapping nodes, turned by the
page into the API prompt it would queue (which must be the matching file in workflows/), and
queued from the page until it produces an image. The Flux and Wan workflows are loaded, drawn
and converted but not queued: they need real-size text encoders and VAEs (T5-XXL, umT5-XXL, the
Flux and Wan VAEs) that are not generated here; test_dit_e2e.py runs MaMe on tiny generated Flux
and Wan models instead."""
import json
import time
import urllib.request
from pathlib import Path

import pytest

from embedded_host.frontend import FrontEnd, browser_available, overlaps
from graphs import TEST_CHECKPOINT, load, nodes_and_inputs
from packed_host import build_archive, fresh_comfyui, server_for

pytestmark = [
    pytest.mark.e2e,
    # in the pass without the DiT tests, to even out the two passes that run_tests.sh runs side by side
    pytest.mark.one_host("2024", "it always lays out a fresh 2025-host ComfyUI from the archive, whatever MAME_HOST says"),
    pytest.mark.skipif(not browser_available(), reason="needs selenium, chromium and chromium-driver (setup_env.sh)"),
]

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"
NAMES = sorted(p.name for p in EXAMPLES.glob("*.json"))
# Workflows whose models have no generated stand-in that their loaders accept: loaded, not queued.
NOT_QUEUED = {
    "flux_txt2img_mame.json": "DualCLIPLoader needs CLIP-L and T5-XXL, VAELoader the Flux VAE",
    "wan_t2v_mame.json": "CLIPLoader needs umT5-XXL, VAELoader the Wan 2.1 VAE",
}


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    work = tmp_path_factory.mktemp("frontend")
    (work / "user").mkdir()
    comfyui = fresh_comfyui(build_archive(work), work / "ComfyUI")
    server = server_for(comfyui, work / "output", [
        "--use-pytorch-cross-attention", "--temp-directory", str(work / "temp"),
        "--user-directory", str(work / "user"), "--database-url", "sqlite:///:memory:"])
    with server, FrontEnd(server.url) as front:
        yield front, server


def test_only_known_workflows_go_unqueued():
    assert set(NOT_QUEUED) <= set(NAMES)


def test_the_server_runs_the_unpacked_archive(page):
    _, server = page
    installed = server.host / "custom_nodes" / "comfyui-mame"
    assert installed.is_dir() and not installed.is_symlink()
    assert not (installed / "tests").exists() and not (installed / "embedded_host").exists()
    info = get(server.url + "/object_info/MaMe")["MaMe"]
    assert info["python_module"] == "custom_nodes.comfyui-mame"


def quick_settings(nodes, seed):
    """The test checkpoint and a small, short render, set in the page's widgets as a user would;
    a seed of its own, so ComfyUI's cache cannot answer for another workflow's MaMe node."""
    values = {}
    for n in nodes:
        if n["type"] == "MaMe":
            values[n["id"]] = {"seed": seed}
        if n["type"] == "CheckpointLoaderSimple":
            values[n["id"]] = {"ckpt_name": TEST_CHECKPOINT}
        elif n["type"] == "EmptyLatentImage":
            values[n["id"]] = {"width": 128, "height": 128, "batch_size": 1}
        elif n["type"] == "KSampler":
            values[n["id"]] = {"steps": 1, "seed": seed}
    return values


@pytest.mark.parametrize("name", NAMES)
def test_example_workflow_in_the_front_end(page, name):
    front, server = page
    workflow = json.loads((EXAMPLES / name).read_text())
    loaded = front.load(workflow)
    nodes = loaded["nodes"]

    assert sorted(n["id"] for n in nodes) == sorted(n["id"] for n in workflow["nodes"])
    missing = [n["type"] for n in nodes if not n["registered"]]
    assert not missing, f"the front end does not know {missing}"
    assert not [d for d in loaded["dialogs"] if "missing" in d.lower()], loaded["dialogs"]

    ours = [n for n in nodes if "comfyui-mame" in (n["python_module"] or "")]
    assert any(n["type"] == "MaMe" for n in ours)
    for n in ours:
        untipped = [k for k, tip in n["tooltips"].items() if not (isinstance(tip, str) and tip.strip())]
        assert not untipped, f"{n['type']} inputs without a tooltip: {untipped}"

    clash = overlaps(nodes, loaded["title_height"])
    assert not clash, f"nodes drawn over each other: {clash}"

    assert nodes_and_inputs(front.prompt()) == nodes_and_inputs(load(name)), "the page queues what workflows/ holds"
    if name in NOT_QUEUED:
        return  # see NOT_QUEUED: not queued for want of generated text encoders and VAE

    before = set(get(server.url + "/history"))
    front.set_widgets(quick_settings(nodes, 1000 + NAMES.index(name)))
    front.queue()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = {k: v for k, v in get(server.url + "/history").items() if k not in before}
        if new and all((v.get("status") or {}).get("completed") or (v.get("status") or {}).get("status_str") == "error"
                       for v in new.values()):
            break
        time.sleep(0.5)
    assert len(new) == 1, "the page queued the graph once"
    record = next(iter(new.values()))
    assert record["status"]["status_str"] == "success", record["status"]
    images = [img for out in record["outputs"].values() for img in out.get("images", [])]
    assert images, record["outputs"]
    if name == "sd15_txt2img_mame.json":
        front.load(workflow)
        front.screenshot(Path(server.output_dir) / "loaded-workflow.png")
