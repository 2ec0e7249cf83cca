"""Expected and observed connectivity per environment: the truth table of every source -> destination:port of the
seed's service table (inventory.SEED), plus a DNS column.

- dev: expected from the compose networks (two services may talk when they share a network); observed by TCP
  connects from inside each container, by name and by each address of the destination container, so that name
  isolation is not mistaken for network isolation.
- prod: expected from the NetworkPolicy evaluator (conformance.netpol) over the cluster's own policies and pod
  labels; observed from inside each in-cluster workload.

Probes: 1 s timeout, 2 attempts; each source's probes go out in one exec, all sources at once. The live suite
(conformance/live/test_netpol.py) binds the builder of its environment to its target when it makes the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conformance.expectations import DNS_COLUMN
from conformance.inventory import SEED, flows
from conformance.loaders import InputError, load_project
from conformance.netpol.evaluator import PolicySet
from conformance.netpol.model import Pod, Port
from conformance.netpol.truthtable import TruthTable
from conformance.netpol.verdicts import cluster_verdict, dev_verdict
from targets.base import Probe, ProbeError, ResolveResult, Target
from targets.compose import ComposeTarget
from targets.kube import KubeTarget

NETPOL_PEERS = SEED  # the sources probed live, and the destinations (with their ports) of the truth table
IN_CLUSTER = [s for s in NETPOL_PEERS if s.in_cluster]
# The flows the production NetworkPolicies must allow between in-cluster workloads; every other one is denied.
PROD_INTENDED_FLOWS = frozenset((src.key, dst.key) for src, dst in flows("prod"))
TIMEOUT, ATTEMPTS = 1.0, 2


class ConnectivityError(Exception):
    """The expected side cannot be built (the compose file cannot be read); the message says why."""


def columns() -> list[tuple[str, str]]:
    return [(d.key, str(d.port)) for d in NETPOL_PEERS] + [(DNS_COLUMN, "53")]


def observe(target: Target, plans: Mapping[str, Sequence[Probe]]) -> dict[str, list[Any] | ProbeError]:
    """Run each source's probes in one exec, all sources at once."""
    def run(source: str) -> list[Any] | ProbeError:
        try:
            return list(target.run_probes(source, plans[source]))
        except ProbeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
        return dict(zip(plans, pool.map(run, plans), strict=True))


def dev_table(target: ComposeTarget, compose_file: Path) -> TruthTable:
    """dev: expected from the compose file's networks (two services may talk when they share one), observed from
    inside each running container, by name and by each address of the destination."""
    try:
        project = load_project([compose_file])
    except InputError as exc:
        raise ConnectivityError(f"cannot read the compose file that defines the expected connectivity: {exc}") from exc
    table = TruthTable(f"dev (compose project {target.project}, expected from {compose_file.name})",
                       [s.key for s in NETPOL_PEERS], columns())
    running = set(target.workload_names())
    addresses = {s.key: list(target.networks(s.key).values()) if s.key in running else [] for s in NETPOL_PEERS}
    plans: dict[str, list[Probe]] = {}
    for src in NETPOL_PEERS:
        declared = project.services.get(src.compose)
        for dst in NETPOL_PEERS:
            if dst is src:
                continue
            other = project.services.get(dst.compose)
            shared = sorted(set(declared.networks if declared else ()) & set(other.networks if other else ()))
            reason = (f"{src.compose} and {dst.compose} share network(s) {', '.join(shared)}" if shared else
                      f"{src.compose} {sorted(declared.networks) if declared else '(absent)'} and {dst.compose} "
                      f"{sorted(other.networks) if other else '(absent)'} share no network")
            table.set(src.key, dst.key, expected=bool(shared), reason=reason)
        table.set(src.key, DNS_COLUMN, expected=True, reason="every container resolves through Docker's DNS")
        if src.key in running:
            plans[src.key] = [Probe.resolve(src.compose)] + [
                Probe.tcp(host, dst.port, TIMEOUT, ATTEMPTS)
                for dst in NETPOL_PEERS if dst is not src for host in [dst.compose, *addresses[dst.key]]]
    observed = observe(target, plans)
    for src in NETPOL_PEERS:
        results = observed.get(src.key)
        if results is None or isinstance(results, ProbeError):
            why = str(results) if results is not None else f"{src.compose} is not running"
            for column in [peer.key for peer in NETPOL_PEERS if peer is not src] + [DNS_COLUMN]:
                table.set(src.key, column, detail=f"not probed: {why}")
            continue
        dns, rest = results[0], results[1:]
        assert isinstance(dns, ResolveResult)
        table.set(src.key, DNS_COLUMN, observed=dns.ok, detail=f"resolve {dns.name}: "
                  + (", ".join(dns.addresses) if dns.ok else dns.error))
        for dst in NETPOL_PEERS:
            if dst is src:
                continue
            count = 1 + len(addresses[dst.key])
            mine, rest = rest[:count], rest[count:]
            allowed, detail = dev_verdict(mine, dst.compose)
            table.set(src.key, dst.key, observed=allowed, detail=detail)
    return table


def live_pods(target: KubeTarget) -> dict[str, Pod]:
    ns_labels = target.namespace_labels(target.namespace)
    pods: dict[str, Pod] = {}
    for service in IN_CLUSTER:
        items = target.pods(service.key)
        if not items:
            continue
        spec = items[0]
        ports = tuple(Port(int(p["containerPort"]), p.get("protocol", "TCP"), p.get("name"))
                      for c in spec["spec"]["containers"] for p in c.get("ports") or [])
        pods[service.key] = Pod(service.key, target.namespace, spec["metadata"].get("labels") or {}, ns_labels, ports)
    return pods


def port_of(pod: Pod, number: int) -> Port:
    return next((p for p in pod.ports if p.number == number), Port(number))


def prod_table(target: KubeTarget) -> TruthTable:
    """prod: expected from the NetworkPolicy evaluator over the cluster's own policies and pod labels, observed
    from inside each in-cluster workload's pod."""
    policies = PolicySet.from_manifests(target.network_policies(), target.namespace)
    pods = live_pods(target)
    table = TruthTable(f"prod (namespace {target.namespace}, expected from the cluster's NetworkPolicies)",
                       [s.key for s in NETPOL_PEERS], columns())
    plans: dict[str, list[Probe]] = {}
    for src in IN_CLUSTER:
        if src.key not in pods:
            continue
        for dst in IN_CLUSTER:
            if dst is src or dst.key not in pods:
                continue
            verdict = policies.evaluate(pods[src.key], pods[dst.key], port_of(pods[dst.key], dst.port))
            table.set(src.key, dst.key, expected=verdict.allowed, reason=verdict.reason)
        dns = policies.dns_allowed(pods[src.key])
        table.set(src.key, DNS_COLUMN, expected=all(dns.values()),
                  reason=f"cluster DNS per protocol: {dns}")
        plans[src.key] = [Probe.resolve("kubernetes.default.svc.cluster.local")] + [
            Probe.tcp(dst.host("prod", target.namespace) or "", dst.port, TIMEOUT, ATTEMPTS)
            for dst in IN_CLUSTER if dst is not src and dst.key in pods]
    observed = observe(target, plans)
    for src_key, results in observed.items():
        dsts = [d for d in IN_CLUSTER if d.key != src_key and d.key in pods]
        if isinstance(results, ProbeError):
            for dst_key in [*(d.key for d in dsts), DNS_COLUMN]:
                table.set(src_key, dst_key, detail=f"not probed: {results}")
            continue
        dns_result = results[0]
        assert isinstance(dns_result, ResolveResult)
        table.set(src_key, DNS_COLUMN, observed=dns_result.ok,
                  detail=f"resolve {dns_result.name}: {dns_result.error or ', '.join(dns_result.addresses)}")
        for dst, result in zip(dsts, results[1:], strict=True):
            seen, detail = cluster_verdict(result)
            table.set(src_key, dst.key, observed=seen, detail=detail)
    return table
