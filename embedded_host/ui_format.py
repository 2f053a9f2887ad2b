"""Convert between ComfyUI's API-format graphs and its UI-format (frontend) workflows.

The UI format stores widget values by position, so the conversion needs each node's
input order, taken from a server's ``/object_info``. Nodes are laid out in columns by depth,
each node as large as ComfyUI's front end draws it: ``python -m embedded_host.ui_format``
regenerates every file in ``example_workflows/`` from ``workflows/`` by opening a draft of
each in the real front end (2025 host, headless Chromium), reading the sizes it gives the
nodes, and laying the graph out from them. A test converts the files back and compares, and
the browser test checks that no node is drawn over another.
"""
from __future__ import annotations

import json
import os
import sys

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a "control after generate" widget after these
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
MARGIN, GAP_X, GAP_Y = 40, 60, 40
MIN_WIDTH = 300
SCREENSHOT_OF, SCREENSHOT = "sd15_txt2img_mame.json", "docs/mame-workflow-in-comfyui.png"
MIN_TEXT_HEIGHT = 150  # room to read a prompt in a multiline text box


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


def _estimated_size(info: dict, node: dict) -> list[float]:
    """A rough size for a draft, before the front end has measured the node."""
    widgets = [spec for name, spec in _inputs(info) if _is_widget(spec) and not isinstance(node["inputs"].get(name), list)]
    slots = max(len(info["output"]), len(node["inputs"]) - len(widgets))
    return [MIN_WIDTH, 30 + 22 * slots + 26 * len(widgets)]


def api_to_ui(api: dict, object_info: dict, sizes: dict | None = None, title_height: float = TITLE_HEIGHT) -> dict:
    """The UI-format workflow of ``api``. ``sizes`` ({node id: [w, h]}) are the sizes the front end
    gives the nodes; columns are as wide as their widest node, and nodes are stacked with their
    title bars clear of the node above."""
    depths = _depths(api)
    ordered = sorted(api.items(), key=lambda kv: (depths[kv[0]], int(kv[0])))
    node_sizes = {}
    for node_id, node in ordered:
        measured = (sizes or {}).get(str(node_id)) or _estimated_size(object_info[node["class_type"]], node)
        node_sizes[node_id] = [float(int(measured[0] + 0.999)), float(int(measured[1] + 0.999))]
        node_sizes[node_id][0] = max(node_sizes[node_id][0], MIN_WIDTH)
        if any(len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")
               for _, spec in _inputs(object_info[node["class_type"]])):
            node_sizes[node_id][1] = max(node_sizes[node_id][1], MIN_TEXT_HEIGHT)
    column_x, x = {}, MARGIN
    for col in sorted(set(depths.values())):
        column_x[col] = x
        x += max(node_sizes[k][0] for k in api if depths[k] == col) + GAP_X
    next_y: dict[int, float] = {}
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
        y = next_y.get(col, MARGIN + title_height)
        next_y[col] = y + node_sizes[node_id][1] + title_height + GAP_Y
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [column_x[col], y],
            "size": node_sizes[node_id], "flags": {}, "order": order, "mode": 0, "inputs": ui_inputs,
            "outputs": [], "title": node.get("_meta", {}).get("title", info.get("display_name")),
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        })
    for ui_node in nodes:
        info = object_info[ui_node["type"]]
        ui_node["outputs"] = [
            {"name": oname, "type": otype, "links": out_links.get((str(ui_node["id"]), i), []), "slot_index": i}
            for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"], strict=True))
        ]
    return {
        "last_node_id": max(int(k) for k in api), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
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
    """Regenerate example_workflows/ (every file of workflows/, or the names given) on the 2025
    host's front end: draft, let the front end size the nodes, lay out from those sizes, check."""
    os.environ.setdefault("MAME_HOST", "2025")  # the host whose front end the users have
    from mame_batch import ComfyClient

    from .frontend import FrontEnd, overlaps
    from .server import REPO, ComfyServer

    names = argv if argv else sorted(p.name for p in (REPO / "workflows").glob("*.json"))
    scratch = REPO / ".host" / "ui-format"
    (scratch / "user").mkdir(parents=True, exist_ok=True)
    args = ["--temp-directory", str(scratch / "temp"), "--user-directory", str(scratch / "user"),
            "--database-url", "sqlite:///:memory:"]
    with ComfyServer(scratch / "output", extra_args=args) as server, FrontEnd(server.url) as page:
        info = ComfyClient(server.url).object_info()
        for name in names:
            api = json.loads((REPO / "workflows" / name).read_text())
            draft = api_to_ui(api, info, sizes={k: [1, 1] for k in api})
            seen = page.load(draft)
            sizes = {str(n["id"]): n["size"] for n in seen["nodes"]}
            ui = api_to_ui(api, info, sizes, seen["title_height"])
            loaded = page.load(ui)
            clash = overlaps(loaded["nodes"], loaded["title_height"])
            if clash:
                raise RuntimeError(f"{name}: nodes {clash} overlap in the front end after layout")
            target = REPO / "example_workflows" / name
            target.parent.mkdir(exist_ok=True)
            target.write_text(json.dumps(ui, indent=2) + "\n")
            print(f"wrote {target.relative_to(REPO)}")
            if name == SCREENSHOT_OF:
                page.screenshot(REPO / SCREENSHOT)
                print(f"wrote {SCREENSHOT}")


if __name__ == "__main__":
    main(sys.argv[1:])
