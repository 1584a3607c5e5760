#!/usr/bin/env bash
# Creates .venv and installs varscale into it; a no-op when nothing changed.
# Sourced by scripts/run.sh and scripts/test.sh, so a fresh clone needs no other step.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VARSCALE_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi

# torch first, so the project's range never pulls a multi-GB CUDA build onto a CPU box.
# GPU users: install the CUDA build of torch into .venv before running this (or set
# VARSCALE_TORCH, e.g. VARSCALE_TORCH="torch==2.13.0" with your CUDA index configured).
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  spec="${VARSCALE_TORCH:-torch==2.13.0}"
  echo "[setup] installing $spec"
  "$venv/bin/python" -m pip install -q "$spec"
fi

# `pip install varscale` alone is the analysis half; the training extra brings DeepSpeed, tqdm
# and submitit (torch is installed above), dev the tests and Jupyter. The stamp is the hash of
# pyproject.toml and of the extras installed, so a change to either installs again.
extras="train,dev"
stamp="$venv/.varscale-stamp"
want="$( (cat "$root/pyproject.toml"; echo "$extras") | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing varscale[$extras] (editable)"
  DS_BUILD_OPS=0 "$venv/bin/python" -m pip install -q -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
