"""Readiness: /health has the seed's exact keys and values, every readiness requirement of the seed holds,
/readyz agrees, the API declares the strict-real settings, and each workload declares a readiness probe
(k8s readinessProbe; compose healthcheck) with every replica Ready (pods Ready; containers healthy).

/health and /readyz are read from inside the API workload (127.0.0.1:9696), so the check is the same in both
environments and needs no port-forward.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.expectations import AUTH_DISABLED, HEALTH_EXACT, READINESS, STRICT_ENV, ReadinessRequirement, lookup
from conformance.inventory import API, SCRAPED, SEED, Service
from conformance.live.plugin import Check
from targets.base import HttpResult, Probe, Target, WorkloadSpec

pytestmark = pytest.mark.readiness
LOCAL = f"http://127.0.0.1:{API.port}"


@pytest.fixture(scope="session")
def health_answers(target: Target) -> tuple[HttpResult, HttpResult]:
    health, readyz = target.run_probes(API.key, [Probe.http(f"{LOCAL}/health"), Probe.http(f"{LOCAL}/readyz")])
    assert isinstance(health, HttpResult) and isinstance(readyz, HttpResult)
    return health, readyz


@pytest.fixture(scope="session")
def health(health_answers: tuple[HttpResult, HttpResult]) -> dict[str, Any]:
    answer = health_answers[0]
    assert answer.ok, f"GET /health from inside the API workload failed: {answer.error}"
    assert answer.status == 200, f"GET /health answered {answer.status}: {answer.body[:300]}"
    try:
        document = answer.json()
    except ValueError as exc:
        raise AssertionError(f"GET /health is not JSON ({exc}): {answer.body[:300]}") from exc
    assert isinstance(document, dict), f"GET /health is not a JSON object: {answer.body[:300]}"
    return document


@pytest.fixture(scope="session")
def api_spec(target: Target) -> WorkloadSpec:
    return target.declared(API.key)


@pytest.mark.parametrize("path", list(HEALTH_EXACT), ids=str)
def test_health_key(path: str, health: dict[str, Any], check: Check) -> None:
    check.expected = {path: HEALTH_EXACT[path]}
    try:
        value = lookup(health, path)
    except KeyError:
        check.observed = {path: "<missing>"}
        raise AssertionError(f"/health has no key {path!r}: {health}") from None
    check.observed = {path: value}
    assert value == HEALTH_EXACT[path] and type(value) is type(HEALTH_EXACT[path]), (
        f"/health {path} is {value!r}; the seed requires {HEALTH_EXACT[path]!r} (failing: {health.get('failing')})")


@pytest.mark.parametrize("requirement", READINESS, ids=lambda r: r.key)
def test_requirement(requirement: ReadinessRequirement, health: dict[str, Any], check: Check) -> None:
    check.expected = {"requirement": requirement.seed_text, "holds": True}
    evidence: dict[str, Any] = {}
    for path in (p.strip() for p in requirement.evidence.split(",")):
        try:
            evidence[path] = lookup(health, path)
        except KeyError:
            evidence[path] = "<missing>"
    try:
        holds = requirement.holds(health)
    except KeyError as exc:
        holds = False
        evidence["missing"] = str(exc)
    check.observed = {"holds": holds, **evidence}
    assert holds, f"readiness requirement not met: {requirement.seed_text}; /health shows {evidence}"


def test_readyz_agrees(health_answers: tuple[HttpResult, HttpResult], check: Check) -> None:
    readyz = health_answers[1]
    check.expected = {"GET /readyz": 200}
    check.observed = {"GET /readyz": readyz.status if readyz.ok else readyz.error}
    assert readyz.ok and readyz.status == 200, f"GET /readyz: {readyz.status or readyz.error} {readyz.body[:200]}"


@pytest.mark.parametrize("variable", [*STRICT_ENV, "SOMABRAIN_DISABLE_AUTH"], ids=str)
def test_api_declares(variable: str, api_spec: WorkloadSpec, env: str, check: Check) -> None:
    wanted = STRICT_ENV.get(variable) or AUTH_DISABLED[env]
    check.expected = {variable: wanted}
    check.observed = {variable: api_spec.env.get(variable)}
    assert api_spec.env.get(variable) == wanted, (
        f"the API workload declares {variable}={api_spec.env.get(variable)!r}; the seed requires {wanted!r} in {env}")


def _present(service: Service, env: str) -> None:
    if not service.in_env(env):
        pytest.skip(f"{service.key} is outside the cluster in {env}: no workload to inspect")


@pytest.mark.parametrize("service", SEED, ids=lambda s: s.key)
def test_readiness_probe_declared(service: Service, target: Target, env: str, check: Check) -> None:
    _present(service, env)
    spec = target.declared(service.key)
    kind = "readiness" if env == "prod" else "healthcheck"
    check.expected = {"probe": kind}
    check.observed = {"probes": sorted(spec.probes), kind: spec.probes.get(kind)}
    assert kind in spec.probes, (
        f"{service.key} declares no {kind} probe ({spec.detail}); declared: {sorted(spec.probes)}")


@pytest.mark.parametrize("service", SEED, ids=lambda s: s.key)
def test_replicas_ready(service: Service, target: Target, env: str, check: Check) -> None:
    _present(service, env)
    spec = target.declared(service.key)
    check.expected = {"all_ready": True}
    check.observed = {"all_ready": spec.ready, "replicas": dict(spec.replicas), "detail": spec.detail}
    assert spec.ready, f"{service.key} is not Ready: {spec.detail}; replicas {dict(spec.replicas)}"


@pytest.mark.parametrize("service", SCRAPED, ids=lambda s: s.key)
def test_metrics_are_served_apart(service: Service, target: Target, check: Check) -> None:
    """Inside each app's workload: /metrics answers on its metrics port, and its own port (where the data is) does
    not serve it, so the one port monitoring may reach carries metrics and nothing else."""
    app, data_port, metrics_port = service.key, service.port, service.metrics_port
    metrics, beside = target.run_probes(app, [Probe.http(f"http://127.0.0.1:{metrics_port}/metrics"),
                                              Probe.http(f"http://127.0.0.1:{data_port}/metrics")])
    assert isinstance(metrics, HttpResult) and isinstance(beside, HttpResult)
    check.expected = {f":{metrics_port}/metrics": 200, f":{data_port}/metrics": 404}
    check.observed = {f":{metrics_port}/metrics": metrics.status or metrics.error,
                      f":{data_port}/metrics": beside.status or beside.error}
    assert metrics.status == 200 and "somabrain_requests_total" in metrics.body, \
        f"{app}: GET :{metrics_port}/metrics answered {metrics.status or metrics.error}: {metrics.body[:200]}"
    assert beside.status == 404, f"{app}: its own port {data_port} still serves /metrics ({beside.status})"

