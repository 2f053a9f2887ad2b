"""The batch manifest: one JSON line per finished task, appended as tasks end."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


class Manifest:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill; the task simply runs again on resume
        return out

    def done_keys(self) -> set[str]:
        return {r["key"] for r in self.records() if r.get("status") == "ok"}

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def task_record(task, prompt_id, status: str, wall_time: float | None, **extra) -> dict:
    """The manifest line of one finished task (outputs filled in by the caller once written)."""
    return {
        "key": task.key,
        "job_index": task.job.index,
        "job": {**task.job.fields, **{str(k): v for k, v in task.job.inputs.items()}},
        "setting": task.setting,
        "setting_label": task.setting_label,
        "prompt_id": prompt_id,
        "status": status,
        "wall_time": round(wall_time, 3) if status == "ok" else None,
        "finished_at": time.time(),
        "outputs": [],
        **extra,
    }


def unused_path(path: Path) -> Path:
    """``path`` if free, else ``name-1.ext``, ``name-2.ext``...: outputs are never overwritten."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
