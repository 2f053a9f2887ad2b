#!/usr/bin/env bash
# Sets up the pinned environment if needed, then runs the whole test suite:
# fast unit tests first, then the end-to-end tests against a real ComfyUI server.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
.venv/bin/python -m pytest -m "not e2e" "$@"
status=0
.venv/bin/python -m pytest -m e2e "$@" || status=$?
# pytest exits 5 when a filter selects no test (e.g. -k that names only unit tests).
[ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
