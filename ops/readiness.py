"""The conformance readiness checks, as a function: /health has the seed's exact keys and values, every readiness
requirement of the seed holds, /readyz answers 200, and every workload of the guide's services (conformance.inventory
SEED) that the environment runs is Ready.

The rules are the conformance suite's own (conformance.expectations: HEALTH_EXACT, READINESS), read from inside
the API workload through the same target layer; conformance/live/test_readiness.py asserts the same things as tests.
"""

from __future__ import annotations

from conformance.expectations import HEALTH_EXACT, READINESS, lookup
from conformance.inventory import API, SEED
from targets.base import HttpResult, Probe, ProbeError, Target

LOCAL = f"http://127.0.0.1:{API.port}"


def readiness_failures(target: Target) -> list[str]:
    """Every readiness rule that does not hold (empty = ready)."""
    try:
        health, readyz = target.run_probes(API.key, [Probe.http(f"{LOCAL}/health"), Probe.http(f"{LOCAL}/readyz")])
    except ProbeError as exc:
        return [f"cannot probe the API workload: {exc}"]
    assert isinstance(health, HttpResult) and isinstance(readyz, HttpResult)
    problems: list[str] = []
    document = None
    if not health.ok or health.status != 200:
        problems.append(f"GET /health: {health.status or health.error}")
    else:
        try:
            document = health.json()
        except ValueError:
            problems.append(f"GET /health is not JSON: {health.body[:200]!r}")
    if isinstance(document, dict):
        for path, wanted in HEALTH_EXACT.items():
            try:
                value = lookup(document, path)
            except KeyError:
                value = "<missing>"
            if value != wanted or type(value) is not type(wanted):
                problems.append(f"/health {path} is {value!r}, must be {wanted!r}")
        for requirement in READINESS:
            try:
                holds = requirement.holds(document)
            except KeyError:
                holds = False
            if not holds:
                problems.append(f"readiness requirement not met: {requirement.seed_text} ({requirement.evidence})")
    if not (readyz.ok and readyz.status == 200):
        problems.append(f"GET /readyz: {readyz.status or readyz.error}")
    for service in SEED:
        if service.in_env(target.env):
            spec = target.declared(service.key)
            if not spec.ready:
                problems.append(f"{service.key} is not Ready: {spec.detail}")
    return problems
