#!/bin/sh
# Mirrors the official redis image's entrypoint: flags alone mean "redis-server FLAGS", and the server
# runs as the redis user. Protected mode is switched off like the official build does, unless the caller
# sets it explicitly (later flags win in Redis, so a caller's own --protected-mode still applies).
set -e
case "$1" in
  -* | *.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = "redis-server" ]; then
  shift
  conf=""
  case "$1" in
    *.conf) conf="$1"; shift ;;
  esac
  if [ -n "$conf" ]; then
    set -- redis-server "$conf" --protected-mode no "$@"
  else
    set -- redis-server --protected-mode no "$@"
  fi
  if [ "$(id -u)" = "0" ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
