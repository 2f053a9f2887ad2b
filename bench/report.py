"""Draw docs/benchmark-speed-vs-error.png from bench/results: one point per method and ratio,
UNet speed-up on SD1.5 at 512 px (x) against the layer's attention-output error on real
photographs (y)."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path("bench/results")
# speed-benchmark setting -> fidelity-benchmark method with the same scheme
SCHEMES = {"mame-qkv": "mame-qkv", "mame-kv": "mame-kv", "tomesd": "tome", "comfy-tome-q": "tome-q", "todo": "todo"}


def points(speed: dict, fidelity: dict) -> list[tuple[str, float, float, float]]:
    errors = fidelity["error_64_sharp"]
    out = []
    for row in speed["rows"]:
        if row["setting"] == "baseline" or " " not in row["setting"]:
            continue
        name, rest = row["setting"].split(" ", 1)
        if not rest.startswith("r") or " " in rest:
            continue
        ratio = rest[1:]
        method = SCHEMES.get(name)
        by_ratio = errors.get(method, {})
        if ratio in by_ratio:
            out.append((name, float(ratio), row["speedup"], by_ratio[ratio]))
    return out


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = json.loads((RESULTS / "speed-sd15-cpu-bfloat16.json").read_text())
    fidelity = json.loads((RESULTS / "fidelity.json").read_text())
    pts = points(speed, fidelity)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = {"mame-qkv": "tab:red", "mame-kv": "tab:orange", "tomesd": "tab:blue", "comfy-tome-q": "tab:cyan",
               "todo": "tab:green"}
    for name in colours:
        mine = sorted((p for p in pts if p[0] == name), key=lambda p: p[1])
        if mine:
            ax.plot([p[2] for p in mine], [p[3] for p in mine], "o-", color=colours[name], label=name)
            for p in mine:
                ax.annotate(f"r{p[1]:g}", (p[2], p[3]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("UNet forward speed-up, SD1.5 at 512 px, bf16, 2 CPU cores")
    ax.set_ylabel("attention output error vs full (real photos)")
    ax.set_title("Speed against fidelity: lower right is better")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path("docs/benchmark-speed-vs-error.png")
    fig.savefig(out)
    print(f"wrote {out} ({len(pts)} points)")


if __name__ == "__main__":
    main()
