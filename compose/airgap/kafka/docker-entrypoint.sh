#!/bin/bash
# Starts Tansu with the listener configuration of the official apache/kafka image's environment.
#
# Kafka can have several listeners (e.g. PLAINTEXT://kafka:9092 for containers and
# PLAINTEXT_HOST://localhost:29092 for the host); Tansu has exactly one listen address and one advertised
# address. The stand-in serves the in-network listener: the one named by KAFKA_INTER_BROKER_LISTENER_NAME
# (default PLAINTEXT), else the first non-controller listener in KAFKA_ADVERTISED_LISTENERS. So containers
# reach it as kafka:9092 for everything; from the host, the published port answers bootstrap and metadata
# requests, but produce/fetch then go to the advertised in-network name (kafka:9092), which the host can
# only use if that name resolves there. TANSU_LISTENER_URL / TANSU_ADVERTISED_LISTENER_URL override the
# choice (e.g. tcp://127.0.0.1:9092 for a host-only setup).
#
# Storage is memory://tansu/ (nothing survives a restart), unless TANSU_STORAGE_ENGINE says otherwise.
set -Eeuo pipefail

log() { printf '[kafka-standin] %s\n' "$*" >&2; }

if [ "${1:-broker}" != "broker" ]; then
  exec "$@"
fi
[ "$#" -gt 0 ] && shift

# find_listener LIST NAME -> prints "host:port" of NAME://host:port in the comma-separated LIST
find_listener() {
  local entry
  IFS=',' read -ra entries <<<"$1"
  for entry in "${entries[@]}"; do
    entry="${entry// /}"
    if [ "${entry%%://*}" = "$2" ]; then
      echo "${entry#*://}"
      return 0
    fi
  done
  return 1
}

first_listener_name() {
  local entry name
  IFS=',' read -ra entries <<<"$1"
  for entry in "${entries[@]}"; do
    entry="${entry// /}"
    name="${entry%%://*}"
    case ",${KAFKA_CONTROLLER_LISTENER_NAMES:-CONTROLLER}," in
      *",$name,"*) continue ;;
    esac
    [ -n "$name" ] && { echo "$name"; return 0; }
  done
  return 1
}

name="${KAFKA_INTER_BROKER_LISTENER_NAME:-PLAINTEXT}"
advertised=""
if [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ]; then
  advertised="$(find_listener "$KAFKA_ADVERTISED_LISTENERS" "$name" || true)"
  if [ -z "$advertised" ] && other="$(first_listener_name "$KAFKA_ADVERTISED_LISTENERS")"; then
    name="$other"
    advertised="$(find_listener "$KAFKA_ADVERTISED_LISTENERS" "$name")"
  fi
fi
listen="$(find_listener "${KAFKA_LISTENERS:-}" "$name" || true)"

port="${listen##*:}"
[ -n "$port" ] || port="${advertised##*:}"
[ -n "$port" ] || port=9092
[ -n "$advertised" ] || advertised="$(hostname):$port"

listener_url="${TANSU_LISTENER_URL:-tcp://0.0.0.0:$port}"
advertised_url="${TANSU_ADVERTISED_LISTENER_URL:-tcp://$advertised}"
storage="${TANSU_STORAGE_ENGINE:-memory://tansu/}"
cluster="${CLUSTER_ID:-${KAFKA_CLUSTER_ID:-tansu_cluster}}"

log "tansu $(tansu --version | awk '{print $2}') listener=$listener_url advertised=$advertised_url storage=$storage"
exec tansu broker --cluster-id "$cluster" --listener-url "$listener_url" \
  --advertised-listener-url "$advertised_url" --storage-engine "$storage" "$@"
