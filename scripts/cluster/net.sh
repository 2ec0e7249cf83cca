#!/usr/bin/env bash
# Host networking of the local cluster: set up before the cluster starts, removed by `down`.
#
# Usage: scripts/cluster/net.sh up|down|status
#
# What `up` does, and why:
#   - CLUSTER_NODE_IP (/32) on lo: the node's InternalIP, where kubelet listens and the `kubernetes` Service points.
#     A dedicated address, so the cluster never depends on (or exposes itself on) this machine's real interfaces.
#   - blackhole routes for the whole pod and Service CIDRs: this machine routes 10.x and 172.x out to the real
#     network, so a packet to an unassigned cluster address must be dropped here. The node's own pod subnet
#     (the bridge's /24) and Service addresses that kube-proxy rewrites (DNAT happens before routing) still work.
#   - the pod bridge sbk0 with CLUSTER_NODE_POD_CIDR (the CNI bridge plugin adopts it), and a policy-routing rule:
#     whatever arrives from the bridge is routed by table 245, which knows the pod subnet and nothing else
#     (default: blackhole). So a pod reaches pods, Services (DNAT happens before routing) and this machine's own
#     addresses (the local table comes first), and no packet of a pod is ever forwarded off the machine, whatever
#     iptables rules kube-proxy, the NetworkPolicy controller or Docker insert.
#   - iptables chain SOMABRAIN-CLUSTER-OUT (raw table, from OUTPUT: before conntrack and before the controller's
#     own filter chains, which accept RELATED packets first): ICMP port-unreachable towards pods is dropped. The
#     NetworkPolicy controller (kube-router) REJECTs a denied connection with exactly that ICMP; dropping it makes
#     a denial look as it does under kindnet, Calico or Cilium: the connection times out. A closed port still
#     answers with a TCP reset, so "refused" keeps meaning "nothing listens" and never "a policy said no".
#   - iptables chain SOMABRAIN-CLUSTER-FWD, appended to FORWARD (so after the NetworkPolicy controller's chain,
#     which kube-router keeps first): pod-to-pod traffic routed through the bridge is accepted. Without it, the
#     DROP policy that Docker sets on FORWARD would make pods depend on the policy controller to talk at all.
#   - iptables chain SOMABRAIN-CLUSTER-IN (from INPUT): the control plane's ports answer only on lo and the pod
#     bridge, never on the machine's real interfaces.
#   - sysctls: ip_forward (the bridge routes for its pods) and bridge-nf-call-iptables (bridged pod-to-pod traffic
#     passes iptables, where kube-proxy and the NetworkPolicy controller act).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=versions.env
source "$ROOT/scripts/cluster/versions.env"
BRIDGE=sbk0
TABLE=245
IN=SOMABRAIN-CLUSTER-IN
FWD=SOMABRAIN-CLUSTER-FWD
OUT=SOMABRAIN-CLUSTER-OUT
CONTROL_PORTS=2379,2380,5000,6443,10248,10249,10250,10256,10257,10259,20244

say() { printf '[cluster-net] %s\n' "$*" >&2; }

# chain_up CHAIN PARENT [TABLE] [last]: an empty CHAIN, jumped to first (or, with `last`, last) from PARENT.
chain_up() {
  local chain="$1" parent="$2" t="${3:-filter}" where=(-I "$2" 1)
  [ "${4:-}" = last ] && where=(-A "$2")
  iptables -w -t "$t" -N "$chain" 2>/dev/null || iptables -w -t "$t" -F "$chain"
  iptables -w -t "$t" -C "$parent" -j "$chain" 2>/dev/null || iptables -w -t "$t" "${where[@]}" -j "$chain"
}

chain_down() {
  local chain="$1" parent="$2" t="${3:-filter}"
  while iptables -w -t "$t" -D "$parent" -j "$chain" 2>/dev/null; do :; done
  iptables -w -t "$t" -F "$chain" 2>/dev/null || true
  iptables -w -t "$t" -X "$chain" 2>/dev/null || true
}

up() {
  ip addr show dev lo | grep -q " $CLUSTER_NODE_IP/32" || ip addr add "$CLUSTER_NODE_IP/32" dev lo
  ip route replace blackhole "$CLUSTER_POD_CIDR"
  ip route replace blackhole "$CLUSTER_SERVICE_CIDR"
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q " ${CLUSTER_NODE_POD_CIDR%.*/*}.1/" \
    || ip addr add "${CLUSTER_NODE_POD_CIDR%.*/*}.1/${CLUSTER_NODE_POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$CLUSTER_NODE_POD_CIDR" dev "$BRIDGE" table "$TABLE"
  ip route replace blackhole default table "$TABLE"
  ip rule show | grep -q "iif $BRIDGE lookup $TABLE" || ip rule add iif "$BRIDGE" lookup "$TABLE" priority 245
  chain_up "$OUT" OUTPUT raw
  iptables -w -t raw -A "$OUT" -o "$BRIDGE" -p icmp --icmp-type port-unreachable -j DROP
  chain_up "$FWD" FORWARD filter last
  iptables -w -A "$FWD" -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  chain_up "$IN" INPUT
  iptables -w -A "$IN" -i lo -j RETURN
  iptables -w -A "$IN" -i "$BRIDGE" -j RETURN
  iptables -w -A "$IN" -p tcp -m multiport --dports "$CONTROL_PORTS" -j DROP
  say "node address $CLUSTER_NODE_IP on lo; bridge $BRIDGE ($CLUSTER_NODE_POD_CIDR); blackhole $CLUSTER_POD_CIDR and $CLUSTER_SERVICE_CIDR; pods cannot leave the machine"
}

down() {
  while ip rule del iif "$BRIDGE" lookup "$TABLE" 2>/dev/null; do :; done
  ip route flush table "$TABLE" 2>/dev/null || true
  chain_down "$IN" INPUT
  chain_down "$OUT" OUTPUT raw
  chain_down "$FWD" FORWARD
  ip route del blackhole "$CLUSTER_POD_CIDR" 2>/dev/null || true
  ip route del blackhole "$CLUSTER_SERVICE_CIDR" 2>/dev/null || true
  ip addr del "$CLUSTER_NODE_IP/32" dev lo 2>/dev/null || true
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  say "host networking of the cluster removed"
}

status() {
  ip -br addr show dev lo | grep -q "$CLUSTER_NODE_IP" && echo "node address $CLUSTER_NODE_IP on lo" || echo "no node address"
  ip route show type blackhole
  ip rule show | grep "lookup $TABLE" || echo "no pod routing rule"
  ip route show table "$TABLE" 2>/dev/null
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; [ -n "${1:-}" ] && [ "$1" != --help ] && [ "$1" != -h ] && exit 2; exit 0 ;;
esac
