"""Find nodes in an API-format graph and set their inputs, by id, class_type or title."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BatchInputError


def load_workflow(path: str | Path) -> dict:
    """Read an API-format workflow; UI-format files and bad JSON get a clear error."""
    path = Path(path)
    try:
        graph = json.loads(path.read_text())
    except FileNotFoundError:
        raise BatchInputError(f"workflow file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise BatchInputError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise BatchInputError(
            f"{path} is a UI-format workflow; export it with 'Save (API Format)' in ComfyUI, "
            "or use the files in workflows/"
        )
    if isinstance(graph, dict) and "prompt" in graph and isinstance(graph["prompt"], dict):
        graph = graph["prompt"]
    if not isinstance(graph, dict) or not graph or not all(
        isinstance(v, dict) and "class_type" in v and isinstance(v.get("inputs"), dict) for v in graph.values()
    ):
        raise BatchInputError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})")
    return graph


def find_nodes(graph: dict, target: str) -> list[str]:
    """Node ids that ``target`` names: an id, else every node of that class_type, else by title."""
    if target in graph:
        return [target]
    by_class = [k for k, v in graph.items() if v["class_type"] == target]
    if by_class:
        return by_class
    return [k for k, v in graph.items() if (v.get("_meta") or {}).get("title") == target]


def describe_nodes(graph: dict) -> str:
    return ", ".join(
        f"{k} ({v['class_type']}" + (f", '{v['_meta']['title']}'" if (v.get("_meta") or {}).get("title") else "") + ")"
        for k, v in graph.items()
    )


@dataclass(frozen=True)
class InputRef:
    """``target.input``: a node (id, class_type or title) and one of its inputs."""

    target: str
    input: str

    @classmethod
    def parse(cls, text: str) -> "InputRef":
        target, dot, name = text.strip().rpartition(".")
        if not dot or not target or not name:
            raise BatchInputError(f"'{text}' must be NODE.input, e.g. MaMe.ratio, 6.steps or 'My Sampler.cfg'")
        return cls(target, name)

    def resolve(self, graph: dict) -> list[str]:
        ids = find_nodes(graph, self.target)
        if not ids:
            raise BatchInputError(f"no node '{self.target}' in the workflow; nodes: {describe_nodes(graph)}")
        for node in ids:
            inputs = graph[node]["inputs"]
            if self.input not in inputs:
                raise BatchInputError(
                    f"node {node} ({graph[node]['class_type']}) has no input '{self.input}'; "
                    f"its inputs: {', '.join(sorted(inputs))}"
                )
            if isinstance(inputs[self.input], list):
                raise BatchInputError(f"{self.target}.{self.input} is a link to another node and cannot be set")
        return ids

    def __str__(self) -> str:
        return f"{self.target}.{self.input}"


def apply_inputs(graph: dict, values: dict[InputRef, object]) -> dict:
    """A copy of ``graph`` with the given inputs set (on every node a reference names)."""
    graph = copy.deepcopy(graph)
    for ref, value in values.items():
        for node in ref.resolve(graph):
            graph[node]["inputs"][ref.input] = value
    return graph


def parse_value(text: str):
    """``0.5`` -> 0.5, ``true`` -> True, ``"a,b"`` -> 'a,b', anything else stays text."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def sampler_text_nodes(graph: dict) -> tuple[list[str], list[str]]:
    """The CLIPTextEncode-like nodes feeding the samplers' positive and negative inputs."""
    pos, neg = [], []
    for node in graph.values():
        for name, bucket in (("positive", pos), ("negative", neg)):
            link = node["inputs"].get(name)
            if isinstance(link, list) and link[0] in graph and "text" in graph[link[0]]["inputs"]:
                if link[0] not in bucket:
                    bucket.append(link[0])
    return pos, neg
