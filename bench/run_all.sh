#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md, in sequence (about 40 minutes on 2 CPU cores).
# Results go to bench/results/; the plot and merge-map figure to docs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
py=.venv/bin/python
mkdir -p bench/results
$py -m bench.micro_merge | tee bench/results/micro_merge.txt
$py -m bench.fidelity --out bench/results/fidelity.json | tee bench/results/fidelity.txt
$py -m bench.speed --model sd15 --rounds 4 | tee bench/results/speed-sd15.txt
$py -m bench.speed --model sd21 --rounds 2 | tee bench/results/speed-sd21.txt
$py -m bench.speed --model sdxl --rounds 2 \
  --only "mame-qkv r0.3,mame-qkv r0.5,mame-qkv r0.7,mame-kv r0.5,tomesd r0.5,tomesd r0.5 max_downsample=2,todo r0.5" \
  | tee bench/results/speed-sdxl.txt
$py -m bench.tables
$py -m bench.report
$py -m bench.merge_maps
