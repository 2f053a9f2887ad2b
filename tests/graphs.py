"""Load the project's API-format workflows and derive test variants from them."""
from __future__ import annotations

import copy
import json
import os

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")


def load(name: str) -> dict:
    with open(os.path.join(WORKFLOWS, name)) as f:
        return json.load(f)


def nodes_and_inputs(graph: dict) -> dict:
    """An API graph less its titles: what two graphs must share to run the same."""
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}


def node_id(graph: dict, class_type: str) -> str:
    ids = [k for k, v in graph.items() if v["class_type"] == class_type]
    assert len(ids) == 1, f"expected one {class_type} in the graph, found {ids}"
    return ids[0]


TEST_CHECKPOINT = "mame-random-sd15-tiny.safetensors"


def small(graph: dict, width=256, height=256, steps=2, batch=1, prefix=None) -> dict:
    """A quick variant on the generated test checkpoint."""
    g = copy.deepcopy(graph)
    g[node_id(g, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = TEST_CHECKPOINT
    g[node_id(g, "EmptyLatentImage")]["inputs"].update(width=width, height=height, batch_size=batch)
    for _k, v in g.items():
        if v["class_type"] == "KSampler":
            v["inputs"]["steps"] = steps
        if v["class_type"] == "SaveImage" and prefix:
            v["inputs"]["filename_prefix"] = prefix
    return g


def without_mame(graph: dict) -> dict:
    """The same graph with the MaMe node taken out and its consumers wired to its model input."""
    g = copy.deepcopy(graph)
    mame = node_id(g, "MaMe")
    source = g.pop(mame)["inputs"]["model"]
    for v in g.values():
        for name, value in v["inputs"].items():
            if isinstance(value, list) and value[:1] == [mame]:
                v["inputs"][name] = source
    return g


def set_inputs(graph: dict, class_type: str, **inputs) -> dict:
    g = copy.deepcopy(graph)
    g[node_id(g, class_type)]["inputs"].update(inputs)
    return g
