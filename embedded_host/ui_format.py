"""Convert between ComfyUI's API-format graphs and its UI-format (frontend) workflows.

The UI format stores widget values by position, so the conversion needs each node's
input order, taken from a server's ``/object_info``. ``example_workflows/`` is generated
from ``workflows/`` with this (``python -m embedded_host.ui_format``), and a test converts
it back and compares.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a "control after generate" widget after these


def _inputs(info: dict) -> list[tuple[str, list]]:
    spec = info["input"]
    return list(spec.get("required", {}).items()) + list(spec.get("optional", {}).items())


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            depth[node_id] = 0
            sources = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(s) for s in sources), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def api_to_ui(api: dict, object_info: dict) -> dict:
    depths = _depths(api)
    ordered = sorted(api.items(), key=lambda kv: (depths[kv[0]], int(kv[0])))
    rows: dict[int, int] = {}
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for order, (node_id, node) in enumerate(ordered):
        info = object_info[node["class_type"]]
        ui_inputs, widgets = [], []
        for name, spec in _inputs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list):
                source_type = object_info[api[value[0]]["class_type"]]["output"][value[1]]
                link = [len(links) + 1, int(value[0]), value[1], int(node_id), len(ui_inputs), source_type]
                links.append(link)
                out_links.setdefault((value[0], value[1]), []).append(link[0])
                ui_inputs.append({"name": name, "type": source_type, "link": link[0]})
            elif _is_widget(spec) and name in node["inputs"]:
                widgets.append(value)
                if name in SEED_NAMES and spec[0] == "INT":
                    widgets.append("fixed")
        col = depths[node_id]
        row = rows[col] = rows.get(col, -1) + 1
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 380 * col, 40 + 300 * row],
            "size": [340, 260], "flags": {}, "order": order, "mode": 0, "inputs": ui_inputs,
            "outputs": [], "title": node.get("_meta", {}).get("title", info.get("display_name")),
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        })
    for ui_node in nodes:
        info = object_info[ui_node["type"]]
        ui_node["outputs"] = [
            {"name": oname, "type": otype, "links": out_links.get((str(ui_node["id"]), i), []), "slot_index": i}
            for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))
        ]
    return {
        "last_node_id": max(int(k) for k in api), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {l[0]: l for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        by_name = {i["name"]: i for i in node.get("inputs", [])}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec in _inputs(info):
            if name in by_name and by_name[name].get("link") is not None:
                link = links[by_name[name]["link"]]
                inputs[name] = [str(link[1]), link[2]]
            elif _is_widget(spec) and values:
                inputs[name] = values.pop(0)
                if name in SEED_NAMES and spec[0] == "INT" and values and values[0] in ("fixed", "increment", "decrement", "randomize"):
                    values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title")}}
    return api


def main(argv: list[str] | None = None) -> None:
    """Regenerate example_workflows/ from workflows/ against the embedded host's object_info."""
    from mame_batch import ComfyClient

    from .server import REPO, ComfyServer

    names = argv if argv else sorted(p.name for p in (REPO / "workflows").glob("*.json"))
    with ComfyServer(REPO / ".host" / "ui-format-output") as server:
        info = ComfyClient(server.url).object_info()
    for name in names:
        api = json.loads((REPO / "workflows" / name).read_text())
        target = REPO / "example_workflows" / name
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(api_to_ui(api, info), indent=2) + "\n")
        print(f"wrote {target.relative_to(REPO)}")


if __name__ == "__main__":
    main(sys.argv[1:])
