#!/usr/bin/env bash
# The main job: set-up (idempotent), then the embedded default study end to end
# (tokenizer, token cache, grid of VAR cells, fits, figures). Re-running skips what is done.
# Another study: scripts/run.sh runs/<study>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
exec "$venv/bin/varscale" run "${1:-runs/default}" "${@:2}"
