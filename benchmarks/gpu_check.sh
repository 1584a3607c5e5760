#!/usr/bin/env bash
# One command for what a CPU cannot show (<= 8 minutes on one GPU); see benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR] [--official /path/to/VAR] [--only SECTION ...]
# Writes DIR/gpu_check.json and DIR/gpu_check.md (default DIR: ./gpu_check). The official VAR
# code is never part of this repository: give a checkout with --official or VAR_OFFICIAL.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="python3"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
