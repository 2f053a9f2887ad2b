"""Print the markdown tables of bench/results/speed-*.json (for docs/benchmarks.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def speed_table(path: Path) -> str:
    r = json.loads(path.read_text())
    head = (f"**{r['label']} at {r['size']} px**, {r['dtype']} on {r['device']} ({r['threads']} threads), "
            f"batch {r['batch']}, {r['rounds']} rounds after a warm-up. Self-attention at the finest attention "
            f"level (d{r['finest_attention_level']}, {r['affected_attn1_layers']} layers) is "
            f"{r['affected_attn1_share']:.0%} of a forward.\n\n")
    lines = ["| setting | median s | min s | speed-up | Amdahl bound | share of bound | peak RSS GB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        bound = f"{row['amdahl_bound']:.2f}x" if "amdahl_bound" in row else "-"
        share = f"{row['share_of_bound']:.0%}" if row.get("share_of_bound") is not None else "-"
        lines.append(f"| {row['setting']} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['speedup']:.2f}x | "
                     f"{bound} | {share} | {row['peak_mem_gb']:.1f} |")
    return head + "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(str(p) for p in Path("bench/results").glob("speed-*.json")):
        print(speed_table(Path(name)) + "\n")
