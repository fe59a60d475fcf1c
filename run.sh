#!/usr/bin/env bash
# The two README commands, each doing all of its own set-up on a fresh machine:
#   ./run.sh demo [jumpray demo args]   set up, then run the main job (jumpray demo)
#   ./run.sh test [pytest args]         set up, then lint and run the whole test suite (what CI runs)
# Anything else after `./run.sh` is passed to the jumpray CLI: ./run.sh train --shards ... --out ...
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec .venv/bin/jumpray demo "$@" ;;
  test) exec bash scripts/test.sh "$@" ;;
  *)    exec .venv/bin/jumpray "$cmd" "$@" ;;
esac
