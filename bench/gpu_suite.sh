#!/usr/bin/env bash
# The GPU suite (docs/gpu.md): bash bench/gpu_suite.sh [OUTDIR] [--device cpu --quick]
# OUTDIR: the argument, else $OUT when set, else bench/results/. Writes gpu-*.json, gpu-*.txt
# and gpu-suite.log there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-bench/results}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
mkdir -p "$out"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$py" -m bench.gpu_suite "$out" "$@" 2>&1 | tee "$out/gpu-suite.log"
exit "${PIPESTATUS[0]}"
