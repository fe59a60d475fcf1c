#!/usr/bin/env bash
# Idempotent set-up, sourced by run.sh: a virtual environment with the pinned packages, and
# Fashion-MNIST from Debian's dataset-fashion-mnist when running as root and the data is missing.
# Re-runs are fast: the install is skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
PY="${JUMPRAY_PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
  echo "jumpray needs Python 3.11 or 3.12; $PY is $("$PY" --version 2>&1). Set JUMPRAY_PYTHON." >&2
  exit 1
fi
stamp_want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
stamp_have="$(cat .venv/.jumpray-stamp 2>/dev/null || true)"
if [ ! -x .venv/bin/python ] || [ "$stamp_want" != "$stamp_have" ]; then
  echo "[setup] creating .venv and installing pinned packages (first time: a few minutes)..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
  # torch 2.14.1 from the index (its CUDA build runs on CPU too); see docs/architecture.md ('Environment') for why not 2.13+cpu.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[all]"
  echo "$stamp_want" > .venv/.jumpray-stamp
  echo "[setup] environment ready" >&2
fi
FMNIST_DEBIAN=/usr/share/datasets/fashion-mnist
FMNIST_CACHE="${JUMPRAY_DATA_DIR:-$HOME/.cache/jumpray}/fashion-mnist"
if [ ! -f "$FMNIST_DEBIAN/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST_CACHE/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's dataset-fashion-mnist..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2 \
      || echo "[setup] could not install dataset-fashion-mnist; jumpray will try to download it" >&2
  else
    echo "[setup] Fashion-MNIST not found; jumpray will download it to $FMNIST_CACHE on first use" >&2
  fi
fi
# Quiet, predictable Ray on small machines (docs/architecture.md, 'Ray notes: quiet environment').
export RAY_USAGE_STATS_ENABLED=0 RAY_DATA_DISABLE_PROGRESS_BARS="${RAY_DATA_DISABLE_PROGRESS_BARS:-1}" \
  RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0 RAY_DEDUP_LOGS=1 RAY_AIR_NEW_OUTPUT=0
