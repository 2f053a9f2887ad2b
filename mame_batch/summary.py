"""Per-setting timing summary with the speed ratio against the setting where MaMe is off."""
from __future__ import annotations

import statistics


def _is_off(setting: dict) -> bool:
    return any(key.endswith(".ratio") and value in (0, 0.0) for key, value in setting.items())


def summarize(records: list[dict], baseline: str | None = None) -> list[dict]:
    """Rows of {setting, ok, failed, mean_s, median_s, speedup} in first-seen order."""
    groups: dict[str, dict] = {}
    for r in records:
        g = groups.setdefault(r["setting_label"], {"setting": r["setting_label"], "raw": r.get("setting", {}),
                                                   "times": [], "ok": 0, "failed": 0})
        if r["status"] == "ok":
            g["ok"] += 1
            if r.get("wall_time") is not None:
                g["times"].append(r["wall_time"])
        else:
            g["failed"] += 1
    rows = []
    for g in groups.values():
        rows.append({
            "setting": g["setting"], "ok": g["ok"], "failed": g["failed"],
            "mean_s": statistics.fmean(g["times"]) if g["times"] else None,
            "median_s": statistics.median(g["times"]) if g["times"] else None,
            "is_off": _is_off(g["raw"]),
        })
    base = next((r for r in rows if r["setting"] == baseline), None) if baseline else None
    base = base or next((r for r in rows if r["is_off"] and r["mean_s"]), None)
    for r in rows:
        r["speedup"] = base["mean_s"] / r["mean_s"] if base and r["mean_s"] else None
        r["baseline"] = r is base
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'setting':<40} {'ok':>4} {'failed':>6} {'mean s':>8} {'median s':>9} {'speed-up':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        mean = f"{r['mean_s']:.2f}" if r["mean_s"] is not None else "-"
        median = f"{r['median_s']:.2f}" if r["median_s"] is not None else "-"
        speed = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "-"
        mark = " (baseline)" if r["baseline"] else ""
        lines.append(f"{r['setting'][:40]:<40} {r['ok']:>4} {r['failed']:>6} {mean:>8} {median:>9} {speed:>9}{mark}")
    return "\n".join(lines)
