#!/usr/bin/env bash
# The local cluster's certificates and kubeconfigs, made with openssl into DIR (default: the cluster state dir).
#
# Usage: scripts/cluster/pki.sh DIR
#
# A CA (ECDSA P-256, 10 years, this machine only), the apiserver's serving certificate, one client certificate per
# component (the identities Kubernetes' built-in RBAC roles expect: system:kube-controller-manager,
# system:kube-scheduler, system:node:NODE in system:nodes, system:kube-proxy), the apiserver's client for kubelets,
# an admin in system:masters, the service-account key pair, and a kubeconfig for each client. Files that exist are
# kept, so the cluster's identity survives `down`/`up`; `scripts/cluster/cluster.sh down --purge` removes them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/scripts/cluster/versions.env"
DIR="${1:?usage: pki.sh DIR}"
mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"

ca() {
  [ -s ca.crt ] && return 0
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout ca.key -out ca.crt \
    -days 3650 -sha256 -subj "/CN=somabrain-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# cert NAME SUBJECT EXTENDED_USAGE [SAN]
cert() {
  local name="$1" subject="$2" usage="$3" san="${4:-}"
  [ -s "$name.crt" ] && return 0
  local ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$name.key" -out "$name.csr" \
    -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 3650 -sha256 \
    -extfile "$ext" 2>/dev/null
  rm -f "$name.csr" "$ext"
  chmod 600 "$name.key"
}

# kubeconfig NAME (a client certificate NAME.crt) -> NAME.kubeconfig, server on 127.0.0.1
kubeconfig() {
  local name="$1"
  cat >"$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: $CLUSTER_CONTEXT
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority-data: $(base64 -w0 ca.crt)
users:
  - name: $name
    user:
      client-certificate-data: $(base64 -w0 "$name.crt")
      client-key-data: $(base64 -w0 "$name.key")
contexts:
  - name: $CLUSTER_CONTEXT
    context: {cluster: $CLUSTER_CONTEXT, user: $name}
current-context: $CLUSTER_CONTEXT
EOF
  chmod 600 "$name.kubeconfig"
}

ca
service_ip="${CLUSTER_SERVICE_CIDR%.*/*}.1"
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$CLUSTER_NODE_IP,IP:$service_ip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=somabrain-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE_NAME" clientAuth
cert kubelet-serving "/O=system:nodes/CN=system:node:$CLUSTER_NODE_NAME" serverAuth "DNS:$CLUSTER_NODE_NAME,IP:$CLUSTER_NODE_IP"
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kube-router "/CN=system:kube-router" clientAuth
if [ ! -s sa.key ]; then
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 sa.key
fi
for name in admin controller-manager scheduler kubelet kube-proxy kube-router; do
  [ -s "$name.kubeconfig" ] || kubeconfig "$name"
done
