#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md and docs/dit.md, in sequence (about an hour on a
# quiet 2-core CPU; more if the machine is busy). Results go to bench/results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
py=.venv/bin/python
mkdir -p bench/results
$py -m bench.fidelity --out bench/results/fidelity.json --text bench/results/fidelity.txt
$py -m bench.fidelity_before_after > bench/results/fidelity-before-after.txt
$py -m bench.fidelity_bounds --text bench/results/fidelity-bounds.txt
$py -m bench.real_attention --out bench/results/real-attention.json --text bench/results/real-attention.txt
$py -m bench.kernel_costs > bench/results/kernel_costs.txt
{ $py -m bench.micro_merge --rounds 9; echo; $py -m bench.micro_merge --tokens 16384 --rounds 3; } \
  | tee bench/results/micro_merge.txt
only="mame-qkv r0.5,mame-kv r0.5,tomesd r0.5,todo r0.5"
$py -m bench.speed --model sd15 --ratios 0.5 --rounds 3 --only "$only" --out bench/results/speed-sd15.json \
  | tee bench/results/speed-sd15.txt
$py -m bench.speed --model sd21 --ratios 0.5 --rounds 2 --only "$only" --out bench/results/speed-sd21.json \
  | tee bench/results/speed-sd21.txt
$py -m bench.speed --model sdxl --ratios 0.5 --rounds 2 --only "mame-qkv r0.5,tomesd r0.5,tomesd r0.5 max_downsample=2,todo r0.5" \
  --out bench/results/speed-sdxl.json | tee bench/results/speed-sdxl.txt
$py -m bench.speed --model sdxl --size 1216x832 --ratios 0.5 --rounds 2 \
  --only "mame-qkv r0.5,tomesd r0.5,tomesd r0.5 max_downsample=2" \
  --out bench/results/speed-sdxl-1216x832.json | tee bench/results/speed-sdxl-1216x832.txt
$py -m bench.compile_speed --model sd15 --rounds 3 | tee bench/results/compile-speed-sd15.txt
for case in sd35m-1024 flux-1024 wan13b-480p33; do
  $py -m bench.dit_blocks --case "$case" --rounds 3 > "bench/results/dit-$case.json"
done
$py -m bench.dit_blocks --case flux-2048 --rounds 1 > bench/results/dit-flux-2048.json
MAME_HOST=2025 $py -m bench.dit_easycache > bench/results/dit_easycache.json
$py -m bench.gpu_cost --out bench/results/gpu-cost.json --text bench/results/gpu-cost.txt
# beside the GPU suite's stored timings (bench/gpu_suite.sh runs on a GPU machine: docs/gpu.md)
$py -m bench.gpu_compare > bench/results/gpu-vs-estimate.txt
