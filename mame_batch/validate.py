"""Check every value of every task against the server's ``/object_info`` before anything runs.

ComfyUI itself only checks a prompt when it is queued, so a bad ``--set`` value would surface
after the warm-up and after every task before it. Here each non-link input of each task graph
is checked against the input's declared type (INT, FLOAT, BOOLEAN, STRING), its min/max and a
combo's choices, and MaMe's schedule text (the ``overrides`` of MaMe and MaMe Block Schedule)
with the engine's own parser. All problems are reported at once, each with the node, the input,
the value and what is allowed.

The client stays free of torch: the schedule parser (``mame_core/schedule.py`` and
``mame_core/settings.py``, both pure Python) is loaded without running ``mame_core/__init__``,
which imports torch.
"""
from __future__ import annotations

import importlib
import math
import sys
import types
import urllib.error
from pathlib import Path

from .errors import BatchInputError

SCHEDULE_INPUTS = {("MaMe", "overrides"), ("MaMeBlockSchedule", "overrides")}
WINDOW_NODES = {"MaMe"}  # start_percent must not be after end_percent
MAX_CHOICES_SHOWN = 25
_PRIVATE_PACKAGE = "mame_batch._mame_core_pure"


def _schedule_module():
    """``mame_core.schedule`` without torch, or None when the engine's source is not beside us."""
    if "mame_core.schedule" in sys.modules:
        return sys.modules["mame_core.schedule"]
    source = Path(__file__).resolve().parent.parent / "mame_core"
    if not (source / "schedule.py").exists():
        return None
    if _PRIVATE_PACKAGE not in sys.modules:
        package = types.ModuleType(_PRIVATE_PACKAGE)
        package.__path__ = [str(source)]  # submodules load from mame_core/, its __init__ does not run
        sys.modules[_PRIVATE_PACKAGE] = package
    try:
        return importlib.import_module(f"{_PRIVATE_PACKAGE}.schedule")
    except ImportError:
        return None


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _number_text(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _spec(info: dict, name: str):
    inputs = info.get("input") or {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(name)
        if spec is not None:
            return spec
    return None


def _kind_and_options(spec) -> tuple[object, dict]:
    if not isinstance(spec, (list, tuple)) or not spec:
        return None, {}
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "COMBO":  # the newer form: ["COMBO", {"options": [...]}]
        kind = list(options.get("options") or [])
    return kind, options


def _range_text(options: dict, kind: str) -> str:
    low, high = options.get("min"), options.get("max")
    what = "a whole number" if kind == "INT" else "a number"
    if low is not None and high is not None:
        return f"{what} from {_number_text(low)} to {_number_text(high)}"
    if low is not None:
        return f"{what} of at least {_number_text(low)}"
    if high is not None:
        return f"{what} of at most {_number_text(high)}"
    return what


def check_value(kind, options: dict, value) -> str | None:
    """None when ``value`` fits the input, else what is wrong and what is allowed."""
    if isinstance(kind, list):
        if value in kind:
            return None
        shown = ", ".join(repr(c) for c in kind[:MAX_CHOICES_SHOWN])
        more = f" ... ({len(kind)} in all)" if len(kind) > MAX_CHOICES_SHOWN else ""
        return f"not one of the choices; allowed: {shown or '(the server offers none)'}{more}"
    if kind in ("INT", "FLOAT"):
        allowed = _range_text(options, kind)
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return f"not a number; allowed: {allowed}"
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return f"not a number; allowed: {allowed}"
        if not math.isfinite(number):
            return f"not a finite number; allowed: {allowed}"
        if kind == "INT" and number != int(number):
            return f"not a whole number; allowed: {allowed}"
        low, high = options.get("min"), options.get("max")
        if low is not None and number < low:
            return f"below the minimum {_number_text(low)}; allowed: {allowed}"
        if high is not None and number > high:
            return f"above the maximum {_number_text(high)}; allowed: {allowed}"
        return None
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else "not true or false; allowed: true, false"
    if kind == "STRING":
        return None if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "not text; allowed: text"
    return None  # a type this client does not know (a custom node's): the server decides


def _check_schedule(text) -> str | None:
    module = _schedule_module()
    if module is None or not isinstance(text, str):
        return None
    try:
        module.parse_rules(text)
    except module.MaMeScheduleError as err:
        return (f"bad schedule text: {err}; allowed: 'key = ratio' entries separated by lines, commas or "
                "semicolons, keys as in the README's 'Schedule text' table, ratios in [0, 1) or 'off'")
    return None


def _check_window(inputs: dict) -> str | None:
    start, end = inputs.get("start_percent"), inputs.get("end_percent")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)) and start > end:
        return f"start_percent {start} is after end_percent {end}; allowed: start_percent <= end_percent"
    return None


def graph_problems(graph: dict, object_info: dict) -> list[str]:
    """Every problem in one API graph, as ``node N (Class) input 'x' = value: why; allowed: ...``."""
    problems = []
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        info = object_info.get(class_type)
        if not info:
            problems.append(f"node {node_id} ({class_type}): the server has no such node type "
                            "(is its extension installed there?)")
            continue
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            if _is_link(value):
                continue
            kind, options = _kind_and_options(_spec(info, name))
            why = check_value(kind, options, value)
            if why is None and (class_type, name) in SCHEDULE_INPUTS:
                why = _check_schedule(value)
            if why:
                problems.append(f"node {node_id} ({class_type}) input '{name}' = {value!r}: {why}")
        if class_type in WINDOW_NODES and (why := _check_window(inputs)):
            problems.append(f"node {node_id} ({class_type}): {why}")
    return problems


def fetch_object_info(client, class_types) -> dict | None:
    """``/object_info/<class>`` for each class the graphs use (an unknown class answers {});
    None when the server has no ``/object_info`` route at all (a proxy or a stand-in server)."""
    info = {}
    for class_type in sorted(set(class_types)):
        try:
            answer = client.object_info(class_type) or {}
        except urllib.error.HTTPError as err:
            if err.code in (403, 404, 405):
                return None
            raise
        if isinstance(answer, dict) and answer.get(class_type):
            info[class_type] = answer[class_type]
    return info


def check_tasks(tasks, client, note=None, max_shown: int = 20) -> None:
    """Raise :class:`BatchInputError` naming every bad value of ``tasks`` (nothing is queued)."""
    if not tasks:
        return
    object_info = fetch_object_info(client, (n.get("class_type") for t in tasks for n in t.graph.values()))
    if object_info is None:
        if note:
            note(f"{client.url} does not answer /object_info: values are checked only when each task is queued")
        return
    seen: dict[str, list[str]] = {}
    for task in tasks:
        where = task.job.where or f"job {task.job.index}"
        for problem in graph_problems(task.graph, object_info):
            seen.setdefault(problem, []).append(where if not task.setting else f"{where}, {task.setting_label}")
    if not seen:
        return
    lines = []
    for problem, places in list(seen.items())[:max_shown]:
        unique = list(dict.fromkeys(places))
        lines.append(f"  {problem} (in {unique[0]}" + (f" and {len(unique) - 1} more)" if len(unique) > 1 else ")"))
    more = f"\n  ... and {len(seen) - max_shown} more" if len(seen) > max_shown else ""
    raise BatchInputError(f"{len(seen)} bad value(s) for the server at {client.url}; nothing was queued:\n"
                          + "\n".join(lines) + more)


def check_tasks_on_any(tasks, clients, note=None) -> None:
    """:func:`check_tasks` against the first of ``clients`` that answers (a multi-server batch
    copes with servers that are down; their absence must not stop the check or the batch)."""
    from .client import ComfyError

    for client in clients:
        try:
            return check_tasks(tasks, client, note)
        except (ComfyError, OSError) as err:
            if note:
                note(f"could not check values against {client.url}: {err}")
    if note:
        note("no server answered /object_info: values are checked only when each task is queued")
