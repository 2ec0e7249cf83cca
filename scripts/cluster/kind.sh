#!/usr/bin/env bash
# `make cluster` for users who have kind (and tilt) installed: the kind cluster of k8s/kind/cluster.yaml (context
# kind-somabrain) with a local registry container on 127.0.0.1:5000, advertised through the KEP-1755 ConfigMap,
# and Traefik serving the `nginx` IngressClass on 127.0.0.1:9999, as in the cluster we build from Go modules.
# cluster.sh calls it; run it directly only to debug.
#
# Usage: scripts/cluster/kind.sh up|down
#
# Not run on the team's machines (no kind node image can be pulled there); the cluster that is tested is the one
# built by cluster.sh. Images come from the public registries here: kindest/node, registry:2 and traefik.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/scripts/cluster/versions.env"
STATE="${SOMABRAIN_CLUSTER_STATE:-/var/lib/somabrain-cluster}"
NAME=somabrain
CONTEXT=kind-somabrain
REGISTRY_CONTAINER=somabrain-registry

say() { printf '[cluster/kind] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
kc() { kubectl --context "$CONTEXT" "$@"; }

up() {
  command -v kind >/dev/null || die "kind is not on PATH"
  mkdir -p "$STATE"
  echo kind >"$STATE/provider"
  if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_CONTAINER" 2>/dev/null)" != true ]; then
    docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
    say "starting the registry container $REGISTRY_CONTAINER on 127.0.0.1:5000"
    docker run -d --restart=always -p 127.0.0.1:5000:5000 --name "$REGISTRY_CONTAINER" registry:2 >/dev/null
  fi
  if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
    say "creating the kind cluster $NAME (k8s/kind/cluster.yaml)"
    kind create cluster --config "$ROOT/k8s/kind/cluster.yaml" --wait 180s
  fi
  # Nodes reach the registry container by name on the kind network; 127.0.0.1:5000 is its name for pods' images.
  docker network connect kind "$REGISTRY_CONTAINER" 2>/dev/null || true
  local node
  for node in $(kind get nodes --name "$NAME"); do
    docker exec "$node" mkdir -p /etc/containerd/certs.d/127.0.0.1:5000
    printf '[host."http://%s:5000"]\n' "$REGISTRY_CONTAINER" | docker exec -i "$node" cp /dev/stdin /etc/containerd/certs.d/127.0.0.1:5000/hosts.toml
  done
  # From the built cluster's system objects, the ones kind lacks: the KEP-1755 ConfigMap, the `nginx` IngressClass
  # and Traefik (public image). kind brings its own CoreDNS, NetworkPolicy enforcement and `standard` StorageClass.
  # In a kind node, hostPort traffic arrives on the node's own address, so Traefik's hostPort binds no hostIP.
  sed -e "s#@@TRAEFIK_IMAGE@@#docker.io/library/traefik:$TRAEFIK_VERSION#" -e "s#@@[A-Z_]*@@#unused#g" \
    "$ROOT/k8s/local-cluster/system.yaml" | "$ROOT/.venv/bin/python" -c '
import sys, yaml
def wanted(d):
    meta = d["metadata"]
    return (meta.get("namespace") in ("ingress-nginx", "kube-public") or d["kind"] == "IngressClass"
            or meta["name"] in ("ingress-nginx", "somabrain-local:traefik"))
keep = [d for d in yaml.safe_load_all(sys.stdin) if d and wanted(d)]
for d in keep:
    if d["kind"] == "Deployment":
        for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]:
            p.pop("hostIP", None)
print(yaml.safe_dump_all(keep))' | kc apply -f -
  "$ROOT/scripts/cluster/toolchain.sh" build gateway-api
  kc apply --server-side -f "$("$ROOT/scripts/cluster/toolchain.sh" dir gateway-api)/gateway-api-standard.yaml"
  kc -n ingress-nginx rollout status deployment/traefik --timeout=180s
  say "cluster $CONTEXT ready"
}

down() {
  kind delete cluster --name "$NAME" || true
  docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
  rm -f "$STATE/provider"
  say "kind cluster $NAME and registry $REGISTRY_CONTAINER removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
