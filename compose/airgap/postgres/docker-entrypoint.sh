#!/bin/bash
# Follows the official postgres image's docker-entrypoint.sh (the parts the stack relies on):
# first start initialises PGDATA with POSTGRES_USER/POSTGRES_PASSWORD, creates POSTGRES_DB, runs
# /docker-entrypoint-initdb.d once; every start then execs postgres as the postgres user, listening on all
# interfaces. Flags alone mean "postgres FLAGS".
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*"; }

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA POSTGRES_USER POSTGRES_DB

if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
  mkdir -p /var/run/postgresql
  chown postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# shellcheck source=/dev/null
source_init() { . "$1"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != 'trust' ]; then
    cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (or set POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)
MSG
    exit 1
  fi
  log "initialising database cluster in $PGDATA for user $POSTGRES_USER"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of flags, like in the official image
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  auth="${POSTGRES_HOST_AUTH_METHOD:-}"
  if [ -z "$auth" ]; then
    auth='scram-sha-256'
  fi
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  psql_cmd=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    log "creating database $POSTGRES_DB"
    "${psql_cmd[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;' >/dev/null
  fi
  shopt -s nullglob
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; if [ -x "$f" ]; then "$f"; else source_init "$f"; fi ;;
      *.sql) log "running $f"; "${psql_cmd[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql_cmd[@]}" --dbname "$POSTGRES_DB" ;;
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  log 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
