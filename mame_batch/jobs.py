"""Jobs files (JSONL or CSV), sweeps, and their expansion into concrete tasks.

A job sets the usual fields (``prompt``, ``negative``, ``seed``, ``width``, ``height``,
``steps``) and any node input as ``NODE.input`` (node id, class_type or title). A sweep
(``--set MaMe.ratio=0,0.5``) multiplies every job by each combination of its values.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BatchInputError
from .graph_edit import InputRef, apply_inputs, parse_value, sampler_text_nodes

FIELDS = ("prompt", "negative", "seed", "width", "height", "steps")
INT_FIELDS = ("seed", "width", "height", "steps")


@dataclass
class Job:
    index: int
    fields: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # InputRef -> value
    where: str = ""


def _job_from_mapping(index: int, data: dict, where: str) -> Job:
    if not isinstance(data, dict):
        raise BatchInputError(f"{where}: a job must be an object of fields, got {type(data).__name__}")
    job = Job(index=index, where=where)
    extra = data.pop("set", None) or {}
    if not isinstance(extra, dict):
        raise BatchInputError(f"{where}: 'set' must be an object of NODE.input: value")
    for key, value in list(data.items()) + list(extra.items()):
        if value is None or value == "":
            continue
        if key in FIELDS:
            if key in INT_FIELDS:
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise BatchInputError(f"{where}: {key} must be a whole number, got {value!r}") from None
            job.fields[key] = str(value) if key in ("prompt", "negative") else value
        elif "." in key:
            job.inputs[InputRef.parse(key)] = value
        else:
            raise BatchInputError(f"{where}: unknown field '{key}'; use {', '.join(FIELDS)} or NODE.input (e.g. MaMe.ratio)")
    return job


def load_jobs(path: str | Path) -> list[Job]:
    """Read a ``.jsonl`` (one object a line) or ``.csv`` (header row) jobs file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BatchInputError(f"jobs file not found: {path}") from None
    jobs: list[Job] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for row_no, row in enumerate(reader, start=2):
            row = {k.strip(): (parse_value(v) if k.strip() not in ("prompt", "negative") and v else v)
                   for k, v in row.items() if k}
            jobs.append(_job_from_mapping(len(jobs), row, f"{path}:{row_no}"))
    else:
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise BatchInputError(f"{path}:{line_no}: not valid JSON ({err.msg} at column {err.colno})") from None
            jobs.append(_job_from_mapping(len(jobs), data, f"{path}:{line_no}"))
    if not jobs:
        raise BatchInputError(f"{path} holds no jobs")
    return jobs


def parse_sweep(specs: list[str]) -> list[tuple[InputRef, list]]:
    """``["MaMe.ratio=0,0.5", "KSampler.cfg=7"]`` to ``[(ref, [0, 0.5]), (ref, [7])]``."""
    sweep = []
    seen = set()
    for spec in specs:
        left, eq, right = spec.partition("=")
        if not eq or not right.strip():
            raise BatchInputError(f"--set '{spec}' must be NODE.input=value[,value...], e.g. MaMe.ratio=0,0.5")
        ref = InputRef.parse(left)
        if ref in seen:
            raise BatchInputError(f"--set names {ref} twice; give all its values in one --set")
        seen.add(ref)
        sweep.append((ref, [parse_value(v) for v in right.split(",")]))
    return sweep


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-")[:40] or "x"


@dataclass
class Task:
    key: str
    job: Job
    setting: dict  # str(InputRef) -> value, from the sweep
    graph: dict

    @property
    def setting_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.setting.items()) or "(workflow as is)"


def field_inputs(graph: dict, job: Job) -> dict:
    """The node inputs a job's plain fields set in this graph."""
    values: dict = {}

    def targets(name, predicate):
        ids = [k for k, v in graph.items() if predicate(v)]
        if not ids:
            raise BatchInputError(f"{job.where}: the workflow has no node for '{name}'")
        return ids

    positive, negative = sampler_text_nodes(graph)
    for name, value in job.fields.items():
        if name == "prompt":
            nodes, key = positive, "text"
        elif name == "negative":
            nodes, key = negative, "text"
        elif name == "seed":
            nodes = targets("seed", lambda v: "positive" in v["inputs"] and ("seed" in v["inputs"] or "noise_seed" in v["inputs"]))
            for node in nodes:
                values[InputRef(node, "seed" if "seed" in graph[node]["inputs"] else "noise_seed")] = value
            continue
        elif name in ("width", "height"):
            nodes, key = targets(name, lambda v: {"width", "height", "batch_size"} <= set(v["inputs"])), name
        else:  # steps
            nodes, key = targets(name, lambda v: "steps" in v["inputs"] and not isinstance(v["inputs"]["steps"], list)), name
        if not nodes:
            raise BatchInputError(f"{job.where}: the workflow has no node for '{name}'")
        for node in nodes:
            values[InputRef(node, key)] = value
    return values


def expand(graph: dict, jobs: list[Job], sweep: list[tuple[InputRef, list]]) -> list[Task]:
    """Every job under every sweep combination, jobs outermost so settings interleave.

    Odd jobs run the combinations in reverse: within a job the first task also pays for
    what ComfyUI then caches (text encoding), so alternating keeps timings fair.
    Every override is applied here, so a bad target fails before anything is queued."""
    refs = [ref for ref, _ in sweep]
    combos = list(itertools.product(*[values for _, values in sweep])) or [()]
    tasks = []
    for job in jobs:
        base = {**field_inputs(graph, job), **job.inputs}
        for combo in combos if job.index % 2 == 0 else combos[::-1]:
            setting = dict(zip(refs, combo, strict=True))
            try:
                built = apply_inputs(graph, {**base, **setting})
            except BatchInputError as err:
                raise BatchInputError(f"{job.where}: {err}") from None
            seed = job.fields.get("seed")
            key = f"job{job.index:04d}" + (f"_seed{seed}" if seed is not None else "")
            key += "".join(f"_{_slug(ref.target)}.{_slug(ref.input)}-{_slug(v)}" for ref, v in setting.items())
            tasks.append(Task(key, job, {str(r): v for r, v in setting.items()}, built))
    return tasks
