#!/usr/bin/env bash
# Build the local cluster's toolchain from the Go module proxy, pinned by scripts/cluster/versions.env.
#
# Usage: scripts/cluster/toolchain.sh build [NAME...]   build what is missing (all by default)
#        scripts/cluster/toolchain.sh status            what is built, what is missing, and where
#        scripts/cluster/toolchain.sh bindir            print the directory of links to the pinned binaries
#        scripts/cluster/toolchain.sh dir NAME          print the directory of one built component
#        scripts/cluster/toolchain.sh prune             delete cached builds of versions no longer pinned
#
# Components: kubernetes pause etcd kube-router coredns registry traefik local-path gateway-api tilt
#
# Every component is built once per version into $SOMABRAIN_CLUSTER_CACHE/<name>-<version>/ (default
# ~/.cache/somabrain/cluster), outside the checkout; a directory counts only once its .complete stamp exists, so an
# interrupted build is redone. The Go module and build caches (GOMODCACHE, GOCACHE) are Go's own, also outside the
# checkout. Cold, on 2 cores, the whole set took about 22 minutes (measured 2026-12-01); warm, this script only
# checks stamps.
#
# Modules whose go.mod has replace directives are refused by `go install`; those (kubernetes, etcd, traefik, tilt)
# are built as the main module from a writable copy of the downloaded module, under src/ (kept for the next build's
# sake; `prune` removes it). kubernetes and etcd also need their go.mod pointed at the published versions of sibling
# modules that the module zip leaves out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/scripts/cluster/versions.env"
CACHE="${SOMABRAIN_CLUSTER_CACHE:-$HOME/.cache/somabrain/cluster}"
BINDIR="$CACHE/current/bin"
ALL=(kubernetes pause etcd kube-router coredns registry traefik local-path gateway-api tilt)
export GOFLAGS="-buildvcs=false" GOWORK=off GOTOOLCHAIN=local

# What a dropped connection to the Go module proxy looks like in a build log.
TRANSIENT='connection reset by peer|i/o timeout|TLS handshake timeout|unexpected EOF|stream error|502 Bad Gateway|503 Service Unavailable|504 Gateway Timeout'

say() { printf '[toolchain] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

version_of() {
  case "$1" in
    kubernetes | pause) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kube-router) echo "$KUBE_ROUTER_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    traefik) echo "$TRAEFIK_VERSION" ;;
    registry) echo "$DISTRIBUTION_VERSION" ;;
    tilt) echo "$TILT_VERSION" ;;
    gateway-api) echo "$GATEWAY_API_VERSION" ;;
    local-path) echo "$LOCAL_PATH_VERSION" ;;
    *) die "unknown component '$1' (known: ${ALL[*]})" ;;
  esac
}
dir_of() { echo "$CACHE/$1-$(version_of "$1")"; }
is_built() { [ -f "$(dir_of "$1")/.complete" ]; }

# The directory of a downloaded module, fetched through the Go module proxy if needed.
module_dir() {
  local json
  json="$(go mod download -json "$1" 2>&1)" || die "go mod download $1 failed: $json"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))' "$json" \
    || die "the Go module proxy did not serve $1"
}

# A writable copy of a module, to build as the main module.
writable_copy() {
  local src="$1" dst="$2"
  rm -rf "$dst"
  cp -r "$src" "$dst"
  chmod -R u+w "$dst"
}

build_kubernetes() {
  local out="$1" v="$KUBERNETES_VERSION" src minor
  src="$CACHE/src/kubernetes-$v"
  writable_copy "$(module_dir "k8s.io/kubernetes@$v")" "$src"
  # The module points its staging modules at ./staging, which the module zip leaves out: use the published
  # k8s.io/* v0.X.Y releases of the same commit instead.
  sed -i -E "s#^(\s*k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+#\1 => \1 ${v/v1/v0}#" "$src/go.mod"
  rm -f "$src/go.work" "$src/go.work.sum"
  minor="$(echo "$v" | cut -d. -f2)"
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "$ld" -o "$out/" \
    ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubelet ./cmd/kube-proxy ./cmd/kubectl)
}

build_pause() {
  # The pod sandbox's pause process, from the C source that k8s.io/kubernetes ships (build/pause/linux/pause.c).
  local out="$1" src
  src="$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")/build/pause/linux/pause.c"
  command -v gcc >/dev/null || die "gcc is needed to build pause (apt-get install gcc libc6-dev)"
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION-somabrain" -o "$out/pause" "$src"
  strip "$out/pause"
}

build_etcd() {
  # server/v3 has the etcd main package; its go.mod replaces sibling modules with ../ paths: use their releases.
  local out="$1" v="$ETCD_VERSION" src m
  src="$CACHE/src/etcd-$v"
  writable_copy "$(module_dir "go.etcd.io/etcd/server/v3@$v")" "$src"
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    (cd "$src" && go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@$v")
  done
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
}

go_install() {
  # go install MODULE/PKG@VERSION into $1 (modules without replace directives).
  local out="$1" pkg="$2"
  shift 2
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w $*" "$pkg"
}

build_kube_router() {
  go_install "$1" "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" \
    "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
}

build_coredns() {
  go_install "$1" "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_registry() {
  go_install "$1" "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION" \
    "-X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION"
}

build_local_path() {
  go_install "$1" "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION" \
    "-X main.VERSION=$LOCAL_PATH_VERSION"
}

build_traefik() {
  local out="$1" v="$TRAEFIK_VERSION" src
  src="$CACHE/src/traefik-$v"
  writable_copy "$(module_dir "github.com/traefik/traefik/v3@$v")" "$src"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$out/traefik" \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$v -X github.com/traefik/traefik/v3/pkg/version.BuildDate=$(date -u +%F)" \
    ./cmd/traefik)
}

build_tilt() {
  # Without the web UI build (not in the module) a plain build counts as a dev build and runs yarn at start-up,
  # which fails offline: set version and date (a release build), and give pkg/assets/build an index page.
  local out="$1" v="$TILT_VERSION" src
  src="$CACHE/src/tilt-$v"
  writable_copy "$(module_dir "github.com/tilt-dev/tilt@$v")" "$src"
  # Tilt's go.sum records a hash for github.com/docker/buildx v0.32.1 that is not the one the module proxy serves
  # and the checksum database (sum.golang.org) vouches for: the tag was moved upstream. Drop that line, so Go
  # checks the download against the checksum database instead.
  sed -i '/^github.com\/docker\/buildx v0.32.1 h1:/d' "$src/go.sum"
  mkdir -p "$src/pkg/assets/build"
  cat >"$src/pkg/assets/build/index.html" <<'HTML'
<!doctype html><title>Tilt</title><p>This Tilt was built without its web UI. Use <code>tilt get</code>,
<code>tilt logs</code> and <code>tilt up --stream</code>.</p>
HTML
  # CGO: Tilt parses Tiltfiles with tree-sitter (C).
  (cd "$src" && CGO_ENABLED=1 GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -o "$out/tilt" \
    -ldflags "-s -w -X main.version=${v#v} -X main.date=$(date -u +%F)" ./cmd/tilt)
}

build_gateway_api() {
  # Not a binary: the standard-channel CRDs, as one file, from the module.
  local out="$1" src
  src="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")/config/crd/standard"
  [ -d "$src" ] || die "no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
  for f in "$src"/*.yaml; do
    cat "$f"
    printf '\n---\n'
  done >"$out/gateway-api-standard.yaml"
}

build_one() {
  local name="$1" dir tmp t0 log
  dir="$(dir_of "$name")"
  if is_built "$name"; then
    return 0
  fi
  command -v go >/dev/null || die "go (1.26 or newer) is needed to build $name; none is on PATH"
  mkdir -p "$CACHE/src" "$CACHE/logs"
  tmp="$dir.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log="$CACHE/logs/$name-$(version_of "$name").log"
  say "building $name $(version_of "$name") (log: $log)"
  t0=$(date +%s)
  local attempt=1
  until "build_${name//-/_}" "$tmp" >"$log" 2>&1; do
    # A connection to the module proxy or the checksum database that breaks mid-download fails the whole build
    # (seen: "read: connection reset by peer" on sum.golang.org); what was downloaded stays in GOMODCACHE, so a
    # retry resumes. Any other failure is the build's own and is not retried.
    if [ "$attempt" -ge 3 ] || ! grep -qE "$TRANSIENT" "$log"; then
      tail -n 25 "$log" >&2
      die "building $name failed; full log: $log"
    fi
    say "the Go module proxy dropped a connection while building $name; retrying ($attempt of 2) in 10 s"
    attempt=$((attempt + 1))
    sleep 10
    rm -rf "$tmp"
    mkdir -p "$tmp"
  done
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "built $(date -u +%FT%TZ) in $(($(date +%s) - t0))s" >"$dir/.complete"
  say "built $name $(version_of "$name") in $(($(date +%s) - t0))s"
}

link_current() {
  # $BINDIR: one link per executable of the pinned versions; scripts and the Makefile put it first on PATH.
  local name f
  mkdir -p "$BINDIR"
  find "$BINDIR" -maxdepth 1 -type l -delete
  for name in "${ALL[@]}"; do
    is_built "$name" || continue
    for f in "$(dir_of "$name")"/*; do
      [ -f "$f" ] && [ -x "$f" ] && ln -sf "$f" "$BINDIR/$(basename "$f")"
    done
  done
  return 0
}

cmd_build() {
  local names=("$@") name t0
  [ "${#names[@]}" -gt 0 ] || names=("${ALL[@]}")
  for name in "${names[@]}"; do version_of "$name" >/dev/null; done
  t0=$(date +%s)
  for name in "${names[@]}"; do
    build_one "$name"
    link_current
  done
  say "toolchain ready in $(($(date +%s) - t0))s (binaries linked in $BINDIR)"
}

cmd_status() {
  local name missing=0
  for name in "${ALL[@]}"; do
    if is_built "$name"; then
      printf '  %-12s %-9s %s (%s)\n' "$name" "$(version_of "$name")" "$(dir_of "$name")" "$(cat "$(dir_of "$name")/.complete")"
    else
      printf '  %-12s %-9s MISSING (scripts/cluster/toolchain.sh build %s)\n' "$name" "$(version_of "$name")" "$name"
      missing=1
    fi
  done
  return "$missing"
}

cmd_prune() {
  local d keep name
  for d in "$CACHE"/*-v*; do
    [ -d "$d" ] || continue
    keep=0
    for name in "${ALL[@]}"; do [ "$d" = "$(dir_of "$name")" ] && keep=1; done
    [ "$d" = "$CACHE/src" ] && keep=1
    if [ "$keep" = 0 ]; then
      say "removing $d"
      rm -rf "$d"
    fi
  done
  rm -rf "$CACHE/src"
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  status) cmd_status ;;
  bindir) echo "$BINDIR" ;;
  dir) [ -n "${2:-}" ] || die "dir needs a component name"; is_built "$2" || die "$2 is not built"; dir_of "$2" ;;
  prune) cmd_prune ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) say "unknown command '$1'"; usage >&2; exit 2 ;;
esac
