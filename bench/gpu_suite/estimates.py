"""The cost model's estimates (``bench/results/gpu-cost.json``, written by bench.gpu_cost),
looked up by shape and method, for the measured / estimated ratios."""
from __future__ import annotations

import json
from pathlib import Path

COST_FILE = Path(__file__).resolve().parents[1] / "results" / "gpu-cost.json"
GPU_KEYS = (("h200", "h200"), ("h100", "h100"), ("4090", "rtx4090"))


def gpu_key(name: str) -> str | None:
    low = name.lower()
    return next((key for part, key in GPU_KEYS if part in low), None)


class Estimates:
    def __init__(self, path: Path = COST_FILE, gpu_name: str = ""):
        self.path, self.key, self.records, self.problem = path, gpu_key(gpu_name), {}, None
        try:
            data = json.loads(path.read_text())
            self.records = {(r["shape"], r["method"]): r for r in data["records"]}
        except FileNotFoundError:
            self.problem = f"{path.name} absent"
        except Exception as exc:  # noqa: BLE001
            self.problem = f"{path.name} unreadable ({type(exc).__name__}: {exc})"
        if self.key is None:
            self.problem = self.problem or f"no estimate for device {gpu_name!r}"

    def compare(self, shape: str, method: str, mode: str, measured_ms: float) -> dict:
        """``{"estimate_ms", "measured_over_estimate"}`` or ``{"estimate": "no estimate (why)"}``."""
        if self.problem:
            return {"estimate": f"no estimate ({self.problem})"}
        record = self.records.get((shape, method))
        kind = "compiled" if mode == "compiled" else "eager"  # a CUDA graph replays the eager kernels
        try:
            estimate = float(record["estimate_ms"][self.key][kind])
        except (TypeError, KeyError, ValueError):
            return {"estimate": f"no estimate ({shape}/{method}/{self.key}/{kind} not in {self.path.name})"}
        return {"estimate_ms": estimate, "measured_over_estimate": measured_ms / estimate if estimate else None,
                "kernels": record.get("kernels"), "bytes": record.get("bytes"), "flops": record.get("flops")}
