#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
#
#   scripts/docker_engine.sh ensure   install docker.io/docker-compose/debootstrap if missing, start dockerd
#                                     in the background if no engine answers (pid + log under .run/)
#   scripts/docker_engine.sh start    same as ensure, but never installs
#   scripts/docker_engine.sh stop     stop dockerd, but only if this script started it (pid file present)
#   scripts/docker_engine.sh status   say whether an engine answers and who started it
#
# On laptops Docker is normally already running: then `ensure` does nothing and `stop` leaves it alone.
# Environment: DOCKER_START_TIMEOUT (seconds, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
PID_FILE="$RUN_DIR/dockerd.pid"
LOG_FILE="$RUN_DIR/dockerd.log"
START_TIMEOUT="${DOCKER_START_TIMEOUT:-60}"

say() { printf '[docker-engine] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  # The header comment is the help text.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

ensure_installed() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

our_pid() {
  # Prints the pid of the dockerd this script started, if it is still alive.
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
    return 0
  fi
  return 1
}

start_engine() {
  if engine_answers; then
    say "engine already answers ($(docker info --format '{{.ServerVersion}}' 2>/dev/null))"
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || die "no dockerd binary; run: $0 ensure"
  [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and starting dockerd needs root"
  if pid="$(our_pid)"; then
    say "dockerd (pid $pid) is starting already; waiting for it"
  else
    mkdir -p "$RUN_DIR"
    say "starting dockerd in the background (log: ${LOG_FILE#"$ROOT"/})"
    # setsid: dockerd must outlive the make/shell that started it.
    setsid dockerd >>"$LOG_FILE" 2>&1 < /dev/null &
    echo $! >"$PID_FILE"
  fi
  local waited=0
  until engine_answers; do
    if ! our_pid >/dev/null; then
      say "dockerd exited during start-up; last log lines:"
      tail -n 20 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      say "dockerd did not answer within ${START_TIMEOUT}s; last log lines:"
      tail -n 20 "$LOG_FILE" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "engine ready after ${waited}s (pid $(cat "$PID_FILE"))"
}

stop_engine() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PID_FILE"
    say "no dockerd started by this project is running; leaving any other engine alone"
    return 0
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 30 ]; then
      say "dockerd still running after 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
  say "dockerd stopped"
}

status_engine() {
  if engine_answers; then
    if pid="$(our_pid)"; then
      echo "engine answers; dockerd pid $pid was started by this project (stop with: $0 stop)"
    else
      echo "engine answers; it was not started by this project"
    fi
  else
    echo "no Docker engine answers"
    return 1
  fi
}

case "${1:-}" in
  ensure) ensure_installed; start_engine ;;
  start) start_engine ;;
  stop) stop_engine ;;
  status) status_engine ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) say "unknown command '$1'"; usage >&2; exit 2 ;;
esac
