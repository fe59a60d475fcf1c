#!/usr/bin/env bash
# Lint, format check and the whole test suite except GPU tests (they need CUDA; see tests/gpu).
# Fails loudly: any lint error or failed test exits non-zero.
#
# The suite runs in JUMPRAY_TEST_WORKERS pytest processes (default 2; 0 = one process), whole
# files to a process (`--dist loadfile`: a module's fixtures - its shards, its MLflow server, its
# cluster - are built once). Why two on a 2-core box: the integration tests spend much of their
# wall time waiting on process starts (Ray, Train workers, MLflow and S3 servers, a 2-node
# cluster); a smoke `jumpray clean` keeps 0.75 of the 2 cores busy. Each process has its own
# session Ray (tests/conftest.py), and two Ray instances on one machine are supported
# (tests/integration/test_second_ray.py). Pass `-n 0` (or set JUMPRAY_TEST_WORKERS=0) to debug.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check" && .venv/bin/ruff check .
echo "== ruff format --check" && .venv/bin/ruff format --check .
echo "== pytest (unit, integration and slow tiers; gpu tests run only where CUDA exists)"
marker="not gpu"
if .venv/bin/python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then marker=""; fi
workers="${JUMPRAY_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadfile); fi
exec .venv/bin/python -m pytest -m "$marker" -p no:cacheprovider "${parallel[@]}" "$@"
