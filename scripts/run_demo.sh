#!/usr/bin/env bash
# The main job on its embedded default: sets up the pinned environment if needed (Python
# packages only: no browser, no system packages; see the README's 'What set-up costs'), starts
# the embedded ComfyUI host on CPU with a generated random-weight SD1.5 checkpoint, renders
# the same workflow with and without MaMe through mame-batch, and prints the speed ratio.
# Extra arguments go to the demo, e.g. --url http://127.0.0.1:8188 --checkpoint model.safetensors
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
.venv/bin/python -m embedded_host.demo "$@"
