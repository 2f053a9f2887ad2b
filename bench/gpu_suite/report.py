"""Budgets, records and the result files of one suite stage.

Every record is printed with a timestamp as it is made, and the stage's JSON and text files
are rewritten after each one, so a run killed at its time limit still leaves its results."""
from __future__ import annotations

import json
import platform
import time
import traceback
from pathlib import Path

import torch


def stamp() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())


def log(message: str) -> None:
    print(f"[{stamp()}] {message}", flush=True)


class Budget:
    """Seconds a stage may spend, capped by the whole suite's deadline (``time.time()``)."""

    def __init__(self, seconds: float, deadline: float | None = None):
        self.end = time.time() + seconds
        if deadline is not None:
            self.end = min(self.end, deadline)

    def left(self) -> float:
        return self.end - time.time()

    def allows(self, needed: float = 0.0) -> bool:
        return self.left() > needed


def environment(device: str) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda)
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            env["driver"] = f"unknown ({type(exc).__name__})"
    else:
        env["cpu_threads"] = torch.get_num_threads()
    for name in ("diffusers", "tomesd"):
        try:
            from importlib.metadata import version

            __import__(name)
            env[name] = version(name)
        except Exception as exc:  # noqa: BLE001
            env[name] = f"missing ({type(exc).__name__}: {exc})"
    return env


class Stage:
    """The records of one stage and its two files, ``gpu-<name>.json`` and ``gpu-<name>.txt``."""

    def __init__(self, name: str, outdir: Path, env: dict, budget: Budget, settings: dict | None = None):
        self.name, self.budget = name, budget
        self.json_path = outdir / f"gpu-{name}.json"
        self.text_path = outdir / f"gpu-{name}.txt"
        self.data = {"stage": name, "env": env, "settings": settings or {}, "records": [], "status": "running"}
        self.lines: list[str] = []
        self.started = time.time()
        self.flush()

    def add(self, record: dict, line: str | None = None) -> dict:
        self.data["records"].append(record)
        self.say(line or " ".join(f"{k}={v}" for k, v in record.items()))
        return record

    def say(self, line: str) -> None:
        log(f"{self.name}: {line}")
        self.lines.append(line)
        self.flush()

    def skip(self, what: dict, reason: str) -> dict:
        return self.add({**what, "status": "skipped", "reason": reason},
                        f"{_label(what)}: skipped ({reason})")

    def fail(self, what: dict, exc: BaseException) -> dict:
        detail = f"{type(exc).__name__}: {exc}".strip()[:500]
        tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
        return self.add({**what, "status": "error", "reason": detail, "traceback": "".join(tail)[-1500:]},
                        f"{_label(what)}: ERROR {detail}")

    def finish(self, status: str = "done") -> None:
        self.data["status"] = status
        self.data["seconds"] = round(time.time() - self.started, 1)
        self.say(f"stage {self.name} {status} in {self.data['seconds']} s")

    def flush(self) -> None:
        self.json_path.write_text(json.dumps(self.data, indent=1, default=str))
        header = [f"# gpu suite, stage {self.name}: {self.data['env'].get('gpu', self.data['env']['device'])}, "
                  f"torch {self.data['env']['torch']}, {self.data['env']['date']}"]
        self.text_path.write_text("\n".join(header + self.lines) + "\n")


def _label(what: dict) -> str:
    return " ".join(str(v) for k, v in what.items() if k in ("check", "shape", "case", "method", "mode", "route",
                                                                "dtype"))
