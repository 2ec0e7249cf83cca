#!/usr/bin/env bash
# Roll a new SomaBrain image out to Kubernetes, check readiness, roll back on failure: `somabrain rollout`.
#   scripts/rollout.sh IMAGE [--namespace somabrain-prod] [--timeout S] [--kube-context C] [--only somabrain]
# Exit codes: 0 rolled out and ready, 1 failed and rolled back, 2 the rollback failed too, 3 bad arguments/no cluster.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
somabrain="${here}/.venv/bin/somabrain"
[[ -x "$somabrain" ]] || somabrain="$(command -v somabrain || true)"
if [[ -z "$somabrain" ]]; then
  echo "rollout.sh: no somabrain command: python3 -m venv .venv && .venv/bin/pip install -e ." >&2
  exit 3
fi
exec "$somabrain" rollout "$@"
