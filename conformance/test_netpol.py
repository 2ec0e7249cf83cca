"""NetworkPolicy: the connectivity truth table, expected vs observed, for every source -> destination:port of
the seed's service table (inventory.SEED), plus a DNS column; and static checks of the manifests' policies.

- Expected: dev = the compose networks (two services may talk when they share a network; the file is
  --compose-file); prod = the NetworkPolicy evaluator (conformance.netpol) over the cluster's own policies and
  pod labels.
- Observed: TCP connects from inside each source workload (by name, and in dev also by each address of the
  destination container, so name isolation is not mistaken for network isolation), 1 s timeout, 2 attempts.
- On any WRONG flow the terminal summary prints the expected, observed and comparison matrices (cyclonus style).
- Static mode (no environment needed): the evaluator over the manifests of --k8s-dir, or over the policies of
  --netpol-policy FILE. The guide's own policy, verbatim, is always reported as blocking DNS and ingress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.conftest import REPO, SUMMARY_KEY, Check, Settings
from conformance.expectations import DNS_COLUMN, GUIDE_POLICY_FIXTURE
from conformance.inventory import API, INGRESS_CONTROLLER, MONITORING, NAMESPACE, SCRAPED, SEED, Service, flows
from conformance.loaders import InputError, load_manifests, load_project
from conformance.netpol import Pod, PolicySet, Port
from conformance.netpol.verdicts import cluster_verdict, dev_verdict
from conformance.truthtable import TruthTable
from targets.base import Probe, ProbeError, ResolveResult, Target
from targets.compose import ComposeTarget
from targets.kube import KubeTarget

pytestmark = pytest.mark.netpol
NETPOL_PEERS = SEED  # the sources probed live, and the destinations (with their ports) of the truth table
FLOWS = [(s, d) for s in NETPOL_PEERS for d in NETPOL_PEERS if s != d]
IN_CLUSTER = [s for s in NETPOL_PEERS if s.in_cluster]
# The flows the production NetworkPolicies must allow between in-cluster workloads; every other one is denied.
PROD_INTENDED_FLOWS = frozenset((src.key, dst.key) for src, dst in flows("prod"))
TIMEOUT, ATTEMPTS = 1.0, 2


def _columns() -> list[tuple[str, str]]:
    return [(d.key, str(d.port)) for d in NETPOL_PEERS] + [(DNS_COLUMN, "53")]


# --- live: expected and observed ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def connectivity(target: Target, settings: Settings, pytestconfig: pytest.Config) -> TruthTable:
    if isinstance(target, ComposeTarget):
        table = _dev_table(target, settings)
    elif isinstance(target, KubeTarget):
        table = _prod_table(target)
    else:  # pragma: no cover - a new environment must say how it builds the table
        raise NotImplementedError(type(target).__name__)
    if table.wrong:
        pytestconfig.stash[SUMMARY_KEY]["NetworkPolicy truth table"] = table.render()
    return table


def _observe(target: Target, plans: Mapping[str, Sequence[Probe]]) -> dict[str, list[Any] | ProbeError]:
    """Run each source's probes in one exec, all sources at once."""
    def run(source: str) -> list[Any] | ProbeError:
        try:
            return list(target.run_probes(source, plans[source]))
        except ProbeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
        return dict(zip(plans, pool.map(run, plans), strict=True))


def _dev_table(target: ComposeTarget, settings: Settings) -> TruthTable:
    try:
        project = load_project([settings.compose_file])
    except InputError as exc:
        pytest.fail(f"cannot read the compose file that defines the expected connectivity: {exc}")
    table = TruthTable(f"dev (compose project {target.project}, expected from {settings.compose_file.name})",
                       [s.key for s in NETPOL_PEERS], _columns())
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
    observed = _observe(target, plans)
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


def _live_pods(target: KubeTarget) -> dict[str, Pod]:
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


def _port_of(pod: Pod, number: int) -> Port:
    return next((p for p in pod.ports if p.number == number), Port(number))


def _prod_table(target: KubeTarget) -> TruthTable:
    policies = PolicySet.from_manifests(target.network_policies(), target.namespace)
    pods = _live_pods(target)
    table = TruthTable(f"prod (namespace {target.namespace}, expected from the cluster's NetworkPolicies)",
                       [s.key for s in NETPOL_PEERS], _columns())
    plans: dict[str, list[Probe]] = {}
    for src in IN_CLUSTER:
        if src.key not in pods:
            continue
        for dst in IN_CLUSTER:
            if dst is src or dst.key not in pods:
                continue
            verdict = policies.evaluate(pods[src.key], pods[dst.key], _port_of(pods[dst.key], dst.port))
            table.set(src.key, dst.key, expected=verdict.allowed, reason=verdict.reason)
        dns = policies.dns_allowed(pods[src.key])
        table.set(src.key, DNS_COLUMN, expected=all(dns.values()),
                  reason=f"cluster DNS per protocol: {dns}")
        plans[src.key] = [Probe.resolve("kubernetes.default.svc.cluster.local")] + [
            Probe.tcp(dst.host("prod", target.namespace) or "", dst.port, TIMEOUT, ATTEMPTS)
            for dst in IN_CLUSTER if dst is not src and dst.key in pods]
    observed = _observe(target, plans)
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


def _flow_id(pair: tuple[Service, Service]) -> str:
    return f"{pair[0].key}->{pair[1].key}"


@pytest.mark.parametrize("pair", FLOWS, ids=_flow_id)
def test_flow(pair: tuple[Service, Service], connectivity: TruthTable, env: str,
              check: Check) -> None:
    src, dst = pair
    flow = connectivity.get(src.key, dst.key)
    if flow is None or flow.expected is None:
        pytest.skip(f"{src.key} -> {dst.key} does not exist in {env} (one of them is outside the cluster)")
    check.expected = {"allowed": flow.expected, "because": flow.reason}
    check.observed = {"allowed": flow.observed, "detail": flow.detail}
    if flow.observed is None:
        pytest.fail(f"{src.key} -> {dst.key}:{dst.port} could not be probed: {flow.detail}")
    assert flow.observed == flow.expected, (
        f"WRONG {src.key} -> {dst.key}:{dst.port}: expected {'allow' if flow.expected else 'deny'} "
        f"({flow.reason}), observed {'allow' if flow.observed else 'deny'} ({flow.detail})")


@pytest.mark.parametrize("source", NETPOL_PEERS, ids=lambda s: s.key)
def test_dns_egress(source: Service, connectivity: TruthTable, env: str, check: Check) -> None:
    flow = connectivity.get(source.key, DNS_COLUMN)
    if flow is None or flow.expected is None:
        pytest.skip(f"{source.key} is outside the cluster in {env}")
    check.expected = {"resolves": flow.expected, "because": flow.reason}
    check.observed = {"resolves": flow.observed, "detail": flow.detail}
    if flow.observed is None:
        pytest.fail(f"{source.key} could not be probed: {flow.detail}")
    assert flow.observed == flow.expected, f"WRONG {source.key} -> DNS: expected {flow.expected}, {flow.detail}"


def test_truth_table(connectivity: TruthTable, check: Check) -> None:
    """The whole table at once: fails with the three matrices when any flow is WRONG."""
    check.expected = {"wrong": 0}
    check.observed = {"wrong": [f"{f.src}->{f.dst}:{f.port}" for f in connectivity.wrong],
                      "right": sum(1 for f in connectivity.flows.values() if f.verdict == "RIGHT"),
                      "table": connectivity.render()}
    assert not connectivity.wrong, "\n" + connectivity.render()


# --- static: the evaluator over manifests ---------------------------------------------------------------
def _manifest_pods(k8s_dir: Path) -> tuple[dict[str, Pod], list[dict[str, Any]]]:
    try:
        manifests = load_manifests(k8s_dir)
    except InputError as exc:
        pytest.fail(f"cannot read the manifests for the static NetworkPolicy checks: {exc}")
    pods: dict[str, Pod] = {}
    for service in IN_CLUSTER:
        workload = manifests.workloads.get(service.workload or "")
        if workload is None:
            continue
        ports = tuple(Port(p.number, p.protocol, p.name) for c in workload.containers for p in c.ports)
        pods[service.key] = Pod(service.key, workload.namespace, workload.labels, None, ports)
    return pods, manifests.of_kind("NetworkPolicy")


def _policies_from(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as exc:
        pytest.fail(f"--netpol-policy {path}: cannot read: {exc}")
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "NetworkPolicy"]


@pytest.fixture(scope="session")
def static_model(settings: Settings) -> tuple[PolicySet, dict[str, Pod], str]:
    pods, policies = _manifest_pods(settings.k8s_dir)
    source = str(settings.k8s_dir)
    if settings.netpol_policy is not None:
        policies, source = _policies_from(settings.netpol_policy), str(settings.netpol_policy)
    return PolicySet.from_manifests(policies, NAMESPACE), pods, source


def _pod(pods: Mapping[str, Pod], key: str) -> Pod:
    if key not in pods:
        pytest.fail(f"the manifests have no workload for {key!r}")
    return pods[key]


@pytest.mark.parametrize("source", IN_CLUSTER, ids=lambda s: s.key)
def test_static_dns_egress(source: Service, static_model: Any, check: Check) -> None:
    policies, pods, where = static_model
    pod = _pod(pods, source.key)
    verdicts = {p.protocol: policies.evaluate(pod, _kube_dns(), p) for p in (Port(53, "UDP"), Port(53, "TCP"))}
    check.expected = {"UDP": True, "TCP": True}
    check.observed = {proto: v.allowed for proto, v in verdicts.items()}
    blocked = [f"53/{proto}: {v.reason}" for proto, v in verdicts.items() if not v.allowed]
    assert not blocked, f"{where} blocks DNS for {source.key}: " + "; ".join(blocked)


def _kube_dns() -> Pod:
    from conformance.netpol import KUBE_DNS

    return KUBE_DNS


def test_static_ingress_admitted(static_model: Any, check: Check) -> None:
    policies, pods, where = static_model
    api = _pod(pods, API.key)
    verdict = policies.evaluate(INGRESS_CONTROLLER, api, _port_of(api, API.port))
    check.expected = {"allowed": True}
    check.observed = {"allowed": verdict.allowed, "reason": verdict.reason}
    assert verdict.allowed, f"{where} blocks the ingress controller ({INGRESS_CONTROLLER}) -> somabrain:{API.port}: " \
                            f"{verdict.reason}"


@pytest.mark.parametrize("service", SCRAPED, ids=lambda s: s.key)
def test_static_monitoring_admitted(service: Service, static_model: Any, check: Check) -> None:
    """Prometheus (namespace monitoring) reaches the app's metrics port, and not the port that serves its data."""
    policies, pods, where = static_model
    scraped, data_port, metrics_port = service.key, service.port, service.metrics_port
    assert metrics_port is not None  # SCRAPED: the services that have one
    pod = _pod(pods, scraped)
    scrape = policies.evaluate(MONITORING, pod, _port_of(pod, metrics_port))
    data = policies.evaluate(MONITORING, pod, _port_of(pod, data_port))
    check.expected = {"metrics_port": {"port": metrics_port, "allowed": True},
                      "data_port": {"port": data_port, "allowed": False}}
    check.observed = {"metrics_port": {"port": metrics_port, "allowed": scrape.allowed, "reason": scrape.reason},
                      "data_port": {"port": data_port, "allowed": data.allowed, "reason": data.reason}}
    assert scrape.allowed, f"{where} blocks Prometheus ({MONITORING}) -> {scraped}:{metrics_port}: {scrape.reason}"
    assert not data.allowed, (f"{where} lets Prometheus ({MONITORING}) reach {scraped}:{data_port}, where its data "
                              f"is served, not only its metrics port {metrics_port}: {data.reason}")


STATIC_FLOWS = [(s, d) for s in IN_CLUSTER for d in IN_CLUSTER if s != d]


@pytest.mark.parametrize("pair", STATIC_FLOWS, ids=_flow_id)
def test_static_flow(pair: tuple[Service, Service], static_model: Any, check: Check) -> None:
    policies, pods, where = static_model
    src, dst = pair
    wanted = (src.key, dst.key) in PROD_INTENDED_FLOWS
    verdict = policies.evaluate(_pod(pods, src.key), _pod(pods, dst.key), _port_of(_pod(pods, dst.key), dst.port))
    check.expected = {"allowed": wanted}
    check.observed = {"allowed": verdict.allowed, "reason": verdict.reason}
    assert verdict.allowed == wanted, (f"{where}: {src.key} -> {dst.key}:{dst.port} is "
                                       f"{'allowed' if verdict.allowed else 'denied'} ({verdict.reason}); the "
                                       f"intended production flows {'include' if wanted else 'exclude'} it")


def test_guide_policy_is_reported(settings: Settings, check: Check) -> None:
    """The guide's own policy, verbatim, must be reported as blocking DNS and the ingress controller."""
    pods, _ = _manifest_pods(settings.k8s_dir)
    policies = PolicySet.from_manifests(_policies_from(REPO / GUIDE_POLICY_FIXTURE), NAMESPACE)
    api = _pod(pods, API.key)
    dns = policies.dns_allowed(api)
    ingress = policies.evaluate(INGRESS_CONTROLLER, api, _port_of(api, API.port))
    check.expected = {"dns_blocked": True, "ingress_blocked": True}
    check.observed = {"dns_blocked": not any(dns.values()), "ingress_blocked": not ingress.allowed,
                      "dns_reason": policies.evaluate(api, _kube_dns(), Port(53, "UDP")).reason,
                      "ingress_reason": ingress.reason}
    assert not any(dns.values()), f"the evaluator does not see that the guide's policy blocks DNS: {dns}"
    assert not ingress.allowed, f"the evaluator does not see that the guide's policy blocks ingress: {ingress.reason}"
