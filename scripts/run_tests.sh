#!/usr/bin/env bash
# Sets up the pinned environment if needed (with Chromium for the front-end test), then runs the whole test suite:
# fast unit tests first, then the end-to-end tests against a real ComfyUI server, once on
# each embedded host (MAME_HOST=2024, the 2024-03 ComfyUI; MAME_HOST=2025, v0.3.75 with the
# DiT and video families; DiT tests skip on the 2024 host).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh --with-browser
.venv/bin/python -m pytest -m "not e2e" "$@"
for host in 2024 2025; do
    status=0
    echo "== end-to-end tests on the $host ComfyUI host =="
    MAME_HOST="$host" .venv/bin/python -m pytest -m e2e "$@" || status=$?
    # pytest exits 5 when a filter selects no test (e.g. -k that names only unit tests).
    [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
done
