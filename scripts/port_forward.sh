#!/usr/bin/env bash
# The guide's multi-service port-forward for integration testing, with a clean shutdown on Ctrl-C.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/port_forward.sh [--namespace NS] [--context CTX] [--help]

Forwards, until Ctrl-C (or until one forward dies):
  svc/somabrain  9696:9696     svc/somamemory 9595:9595     svc/sb-redis 6379:6379
  svc/postgres   55432:5432    svc/sb-opa     8181:8181
Local ports bind to 127.0.0.1 only. On exit every kubectl started here is stopped.

Options: --namespace NS (default somabrain-prod), --context CTX (kubeconfig context), --help.
USAGE
}

namespace=somabrain-prod
context_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --namespace) [[ $# -ge 2 ]] || { echo "port_forward.sh: --namespace needs a value" >&2; exit 2; }; namespace="$2"; shift ;;
    --context) [[ $# -ge 2 ]] || { echo "port_forward.sh: --context needs a value" >&2; exit 2; }; context_args=(--context "$2"); shift ;;
    *) echo "port_forward.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v kubectl >/dev/null || { echo "port_forward.sh: kubectl is required" >&2; exit 2; }

FORWARDS=(
  "svc/somabrain 9696:9696"
  "svc/somamemory 9595:9595"
  "svc/sb-redis 6379:6379"
  "svc/postgres 55432:5432"
  "svc/sb-opa 8181:8181"
)

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "port_forward: stopped"
}
trap cleanup INT TERM EXIT

for entry in "${FORWARDS[@]}"; do
  read -r target ports <<<"$entry"
  kubectl "${context_args[@]}" port-forward -n "$namespace" --address 127.0.0.1 "$target" "$ports" &
  pids+=("$!")
  echo "port_forward: $target -> 127.0.0.1:${ports%%:*}"
done
echo "port_forward: Ctrl-C to stop"
# Return as soon as any forward exits (e.g. the pod restarted), so the user notices; cleanup stops the rest.
status=0
wait -n "${pids[@]}" || status=$?
echo "port_forward: a port-forward exited (status $status); stopping the others" >&2
exit "$status"
