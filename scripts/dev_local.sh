#!/usr/bin/env bash
# `make dev`: run SomaMemory (:9595) and the API (:9696, reloading on every saved change to brain/) on this
# machine, against a private redis-server and PostgreSQL 15 under .run/dev/ (data kept between runs).
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; echo "Environment: API_PORT (9696), MEMORY_PORT (9595), REDIS_PORT (16379), PG_PORT (25432)"; exit 0 ;;
  "") ;;
  *) echo "dev_local.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

API_PORT=${API_PORT:-9696} MEMORY_PORT=${MEMORY_PORT:-9595} REDIS_PORT=${REDIS_PORT:-16379} PG_PORT=${PG_PORT:-25432}
PG_BIN=/usr/lib/postgresql/15/bin
DIR=$PWD/.run/dev
mkdir -p "$DIR"
pids=()
cleanup() {
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
}
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
trap cleanup EXIT
trap "exit 130" INT TERM

echo "==> redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --daemonize no >"$DIR/redis.log" 2>&1 &
pids+=($!)

if [ ! -d "$DIR/pg" ]; then
  echo "==> initdb $DIR/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$DIR"
  as_pg "$PG_BIN/initdb" -D "$DIR/pg" -U postgres --auth=trust >/dev/null
fi
echo "==> postgres on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/pg/postgres.log" -w \
  -o "-p $PG_PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null

export SOMABRAIN_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export SOMABRAIN_POSTGRES_DSN="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
export SOMABRAIN_MEMORY_HTTP_ENDPOINT="http://127.0.0.1:$MEMORY_PORT"
export SOMABRAIN_STRICT_REAL=1 SOMABRAIN_REQUIRE_MEMORY=1 SOMABRAIN_DISABLE_AUTH=1

.venv/bin/somabrain memory --bind "127.0.0.1:$MEMORY_PORT" &
pids+=($!)
.venv/bin/somabrain api --reload --bind "127.0.0.1:$API_PORT" &
pids+=($!)
echo "==> API http://127.0.0.1:$API_PORT/health   SomaMemory http://127.0.0.1:$MEMORY_PORT/health   (Ctrl-C stops)"
wait -n "${pids[@]}"
