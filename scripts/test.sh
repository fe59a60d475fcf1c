#!/usr/bin/env bash
# Lint, format check and the whole test suite except GPU tests (they need CUDA; see tests/gpu).
# Fails loudly: any lint error or failed test exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check" && .venv/bin/ruff check .
echo "== ruff format --check" && .venv/bin/ruff format --check .
echo "== pytest (unit, integration and slow tiers; gpu tests run only where CUDA exists)"
marker="not gpu"
if .venv/bin/python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then marker=""; fi
# Two processes (JUMPRAY_TEST_PROCS=1 for one): the Ray tests one after the other in one, the unit
# and plain-loop tests in the other (groups: tests/conftest.py; README, 'Tests').
procs="${JUMPRAY_TEST_PROCS:-2}"
xdist=()
if [ "$procs" -gt 1 ]; then xdist=(-n "$procs"); fi
exec .venv/bin/python -m pytest -m "$marker" -p no:cacheprovider "${xdist[@]}" "$@"
