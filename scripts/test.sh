#!/usr/bin/env bash
# The test command: set-up (idempotent) then pytest. Extra arguments go to pytest.
# Exits non-zero if any test fails or if no test ran (pytest exit 5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
set +e
"$venv/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: no tests ran; treating as failure" >&2
  exit 1
fi
exit "$rc"
