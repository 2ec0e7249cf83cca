#!/usr/bin/env bash
# Create the TLS certificate for the ingress host somabrain.internal and the kubernetes.io/tls Secret.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/setup_ingress_tls.sh [--context C] [--out-dir DIR] [--days N] [--force] [--no-kubectl] [--help]

Writes a self-signed certificate for the ingress host (ECDSA P-256, SAN DNS:somabrain.internal and
DNS:localhost, IP:127.0.0.1):
  infra/tls/somabrain.internal.crt   certificate
  infra/tls/somabrain.internal.key   private key (mode 600)
infra/tls/ is gitignored. An existing, still valid (> 30 days) certificate with the right SAN is kept,
so running it again changes nothing.

Then, when kubectl can reach the cluster, it creates or updates the Secret somabrain-tls
(type kubernetes.io/tls) in namespace somabrain-prod of context C (--context), or of the current context
when that is a known local one (somabrain-local, kind-*, docker-desktop, minikube): a self-signed
certificate has no business on any other cluster unless you name it. Otherwise it prints the command.

Options:
  --context C     the kube context to write the Secret in (default: the current one, if local)
  --out-dir DIR   where to write the files (default: <repo>/infra/tls)
  --days N        validity in days (default: 397, the browser maximum for leaf certificates)
  --force         create a new key and certificate even if valid ones exist
  --no-kubectl    never call kubectl; print the command instead
  --help          show this help

Environment: TLS_HOST (default somabrain.internal), TLS_NAMESPACE (default somabrain-prod),
TLS_SECRET (default somabrain-tls).
USAGE
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="$root/infra/tls"
days=397
force=0
use_kubectl=1
context=""
host="${TLS_HOST:-somabrain.internal}"
namespace="${TLS_NAMESPACE:-somabrain-prod}"
secret="${TLS_SECRET:-somabrain-tls}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h) usage; exit 0 ;;
    --out-dir) [[ $# -ge 2 ]] || { echo "setup_ingress_tls.sh: --out-dir needs a directory" >&2; exit 2; }; out_dir="$2"; shift ;;
    --days) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || { echo "setup_ingress_tls.sh: --days needs a positive number" >&2; exit 2; }; days="$2"; shift ;;
    --context) [[ $# -ge 2 && -n "$2" ]] || { echo "setup_ingress_tls.sh: --context needs a context name" >&2; exit 2; }; context="$2"; shift ;;
    --context=*) context="${1#--context=}"; [[ -n "$context" ]] || { echo "setup_ingress_tls.sh: --context needs a context name" >&2; exit 2; } ;;
    --force) force=1 ;;
    --no-kubectl) use_kubectl=0 ;;
    *) echo "setup_ingress_tls.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v openssl >/dev/null || { echo "setup_ingress_tls.sh: openssl is required (apt-get install openssl)" >&2; exit 2; }

crt="$out_dir/$host.crt"
key="$out_dir/$host.key"
mkdir -p "$out_dir"
chmod 700 "$out_dir"

still_good() {
  [[ -s "$crt" && -s "$key" ]] || return 1
  openssl x509 -in "$crt" -noout -checkend $((30 * 24 * 3600)) >/dev/null 2>&1 || return 1
  openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | grep -q "DNS:$host" || return 1
  # The key must belong to the certificate.
  [[ "$(openssl x509 -in "$crt" -noout -pubkey)" == "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]]
}

if [[ "$force" == 0 ]] && still_good; then
  echo "setup_ingress_tls: keeping valid certificate $crt"
else
  tmp_key="$(mktemp "$out_dir/.key.XXXXXX")"
  tmp_crt="$(mktemp "$out_dir/.crt.XXXXXX")"
  trap 'rm -f "$tmp_key" "$tmp_crt"' EXIT
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tmp_key" -out "$tmp_crt" -days "$days" -sha256 \
    -subj "/CN=$host/O=SomaBrain dev" \
    -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
  chmod 600 "$tmp_key"
  chmod 644 "$tmp_crt"
  mv "$tmp_key" "$key"
  mv "$tmp_crt" "$crt"
  trap - EXIT
  echo "setup_ingress_tls: wrote $crt and $key (valid $days days)"
fi

apply_cmd=(kubectl create secret tls "$secret" -n "$namespace" --cert="$crt" --key="$key" --dry-run=client -o yaml)
if [[ "$use_kubectl" == 1 ]] && command -v kubectl >/dev/null; then
  if [[ -z "$context" ]]; then
    current="$(kubectl config current-context 2>/dev/null || true)"
    case "$current" in
      somabrain-local|kind-*|docker-desktop|minikube) context="$current" ;;
      "") ;;
      *) echo "setup_ingress_tls.sh: the current kube context '$current' is not a known local one; pass" \
              "--context $current to write the self-signed Secret there (or --no-kubectl)" >&2; exit 2 ;;
    esac
  fi
fi
kube=(kubectl --context "$context")
if [[ "$use_kubectl" == 1 && -n "$context" ]] && command -v kubectl >/dev/null \
    && "${kube[@]}" cluster-info --request-timeout=5s >/dev/null 2>&1; then
  "${kube[@]}" get namespace "$namespace" >/dev/null 2>&1 || "${kube[@]}" create namespace "$namespace"
  "${apply_cmd[@]}" | "${kube[@]}" apply -f -
  echo "setup_ingress_tls: secret $namespace/$secret is up to date in context $context"
else
  echo "setup_ingress_tls: no reachable cluster${context:+ in context $context}; create the secret later with:"
  echo "  ${apply_cmd[*]} | kubectl --context ${context:-C} apply -f -"
fi
