"""NetworkPolicy: the connectivity truth table, expected vs observed, for every source -> destination:port of
the seed's service table (inventory.SEED), plus a DNS column; and static checks of the manifests' policies.

- Live: the table of conformance/netpol/connectivity.py, built by the builder the plugin bound to this
  environment's target (dev: the compose networks of --compose-file; prod: the cluster's own NetworkPolicies),
  one check per flow and one for the whole table.
- On any WRONG flow the terminal summary prints the expected, observed and comparison matrices (cyclonus style).
- Static mode (no environment needed): the evaluator over the manifests of --k8s-dir, or over the policies of
  --netpol-policy FILE. The guide's own policy, verbatim, is always reported as blocking DNS and ingress.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.expectations import DNS_COLUMN, GUIDE_POLICY_FIXTURE
from conformance.inventory import API, INGRESS_CONTROLLER, MONITORING, NAMESPACE, SCRAPED, Service
from conformance.live.plugin import CONNECTIVITY_KEY, REPO, SUMMARY_KEY, Check, Settings
from conformance.loaders import InputError, load_manifests
from conformance.netpol import Pod, PolicySet, Port
from conformance.netpol.connectivity import (
    IN_CLUSTER,
    NETPOL_PEERS,
    PROD_INTENDED_FLOWS,
    ConnectivityError,
    port_of,
)
from conformance.netpol.truthtable import TruthTable

pytestmark = pytest.mark.netpol
FLOWS = [(s, d) for s in NETPOL_PEERS for d in NETPOL_PEERS if s != d]


# --- live: expected and observed ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def connectivity(settings: Settings, pytestconfig: pytest.Config) -> TruthTable:
    """The environment's truth table, built by the builder the plugin bound to its target (connectivity.py)."""
    try:
        table = pytestconfig.stash[CONNECTIVITY_KEY](settings)
    except ConnectivityError as exc:
        pytest.fail(str(exc))
    if table.wrong:
        pytestconfig.stash[SUMMARY_KEY]["NetworkPolicy truth table"] = table.render()
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
    verdict = policies.evaluate(INGRESS_CONTROLLER, api, port_of(api, API.port))
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
    scrape = policies.evaluate(MONITORING, pod, port_of(pod, metrics_port))
    data = policies.evaluate(MONITORING, pod, port_of(pod, data_port))
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
    verdict = policies.evaluate(_pod(pods, src.key), _pod(pods, dst.key), port_of(_pod(pods, dst.key), dst.port))
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
    ingress = policies.evaluate(INGRESS_CONTROLLER, api, port_of(api, API.port))
    check.expected = {"dns_blocked": True, "ingress_blocked": True}
    check.observed = {"dns_blocked": not any(dns.values()), "ingress_blocked": not ingress.allowed,
                      "dns_reason": policies.evaluate(api, _kube_dns(), Port(53, "UDP")).reason,
                      "ingress_reason": ingress.reason}
    assert not any(dns.values()), f"the evaluator does not see that the guide's policy blocks DNS: {dns}"
    assert not ingress.allowed, f"the evaluator does not see that the guide's policy blocks ingress: {ingress.reason}"
