#!/usr/bin/env bash
# Sets up the pinned environment if needed (with Chromium for the front-end test), then runs the whole test suite:
# fast unit tests first, then the end-to-end tests against a real ComfyUI server, once on
# each embedded host (MAME_HOST=2024, the 2024-03 ComfyUI; MAME_HOST=2025, v0.3.75 with the
# DiT and video families; DiT tests skip on the 2024 host, and tests marked one_host run in one pass only).
#
# The two end-to-end passes run side by side, each with half the cores (OMP_NUM_THREADS and
# MAME_TEST_THREADS, which tests/conftest.py and the ComfyUI servers follow): much of a pass is
# single-threaded (server and CLI start-ups, dynamo tracing, model building, HTTP polling), and the
# other pass fills those gaps. Each pass's output is shown when it ends. MAME_E2E_SERIAL=1 runs
# them one after the other with live output, as before.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh --with-browser
.venv/bin/python -m pytest -m "not e2e" "$@"

e2e() {  # host, then pytest's arguments
    local host="$1"
    shift
    MAME_HOST="$host" .venv/bin/python -m pytest -m e2e "$@"
}
# pytest exits 5 when a filter selects no test (e.g. -k that names only unit tests).
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }

if [ "${MAME_E2E_SERIAL:-0}" = 1 ]; then
    for host in 2024 2025; do
        echo "== end-to-end tests on the $host ComfyUI host =="
        status=0
        e2e "$host" "$@" || status=$?
        passed "$status" || exit "$status"
    done
    exit 0
fi

# Both passes reach the same host trees and checkpoints (the front-end test lays out the 2025 host's tree
# whatever MAME_HOST says), so lay them out first, one at a time (nothing happens where they exist).
for host in 2024 2025; do
    MAME_HOST="$host" .venv/bin/python -c "from embedded_host.server import ensure_checkpoint; ensure_checkpoint('tiny')"
done
cores="$(nproc 2>/dev/null || echo 2)"
threads=$((cores / 2 > 0 ? cores / 2 : 1))
logs="$(mktemp -d)"
pids=()
# Each pass runs in a process group of its own (setsid), so that stopping this script stops its servers too.
stop() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; rm -rf "$logs"; }
trap stop EXIT
trap 'exit 130' INT TERM
echo "== end-to-end tests on the 2024 and 2025 ComfyUI hosts, side by side ($threads thread(s) each; set" \
     "MAME_E2E_SERIAL=1 to run them one after the other); each pass's output follows when it ends =="
for host in 2024 2025; do
    OMP_NUM_THREADS="$threads" MAME_TEST_THREADS="$threads" MAME_HOST="$host" \
        setsid .venv/bin/python -m pytest -m e2e "$@" >"$logs/$host.log" 2>&1 &
    pids+=("$!")
done
failed=0
for i in 0 1; do
    host=$((2024 + i))
    status=0
    wait "${pids[$i]}" || status=$?
    echo "== end-to-end tests on the $host ComfyUI host =="
    cat "$logs/$host.log"
    passed "$status" || failed="$status"
done
pids=()
exit "$failed"
