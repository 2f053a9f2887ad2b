#!/usr/bin/env bash
# Fills the ignored .whl/ folder with the pure-Python wheels the GPU machine lacks (docs/gpu.md):
# diffusers and tomesd at this project's pins, and those of their requirements that the GPU
# machine's image does not hold (checked against /work/.library/device/KINDS.md's package list:
# it has torch, numpy, huggingface-hub, safetensors, filelock, regex, requests, pillow, httpx,
# zipp, but no importlib_metadata). One version of each: two stop the install there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
mkdir -p .whl
wheels=(diffusers==0.42.1 tomesd==0.1.3 importlib_metadata==8.7.0)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${wheels[@]}"
# keep only the pinned versions: a stale wheel of another version would stop the install
for f in .whl/*.whl; do
    name=$(basename "$f" | cut -d- -f1-2 | tr 'A-Z_' 'a-z-' | sed 's/-\([0-9]\)/==\1/')
    keep=0
    for w in "${wheels[@]}"; do [ "$(echo "$w" | tr 'A-Z_' 'a-z-')" = "$name" ] && keep=1; done
    [ "$keep" = 1 ] || { echo "removing $f (not pinned here)"; rm -f "$f"; }
done
ls -l .whl
du -sh .whl
for f in .whl/*.whl; do
    echo "== $(basename "$f") requires:"
    unzip -p "$f" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done
