#!/usr/bin/env bash
# The main job on its embedded default: sets up the pinned environment if needed, then
# runs MaMe/MaRe on one SD1.5-sized self-attention layer and prints the timings.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
.venv/bin/python -m bench.micro_merge "$@"
