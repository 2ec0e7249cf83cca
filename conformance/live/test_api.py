"""API contract: schemathesis against the live base URL, with the document the service serves at /openapi.json.

Every check schemathesis has is enabled (not_a_server_error, status/content-type/header/schema conformance,
negative_data_rejection, positive_data_acceptance, missing_required_header, unsupported_method,
allow_header_conformance, ignored_auth, use_after_free, ensure_resource_availability,
object_level_authorization). One test per operation of the DESIGN route table, then the stateful phase
(schemathesis' state machine over the document's links). With auth on, every call carries a valid token for
the environment (issuer/audience from the API workload; key from --jwt-private-key). 0 failures and 0 errors:
each check's `observed` carries the counts of its run (conformance.live.api_tally), also when it fails.

dev: the base URL is 127.0.0.1 and the published port of somabrain:9696; prod: --base-url (default the
port-forward http://127.0.0.1:9696).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from conformance.expectations import API_OPERATIONS, JWT_ROLES, JWT_TENANT, STATEFUL_LINKS
from conformance.inventory import API
from conformance.live.api_tally import ApiTally
from conformance.live.plugin import Check, Settings
from targets.auth import AuthSetupError, auth_enabled, mint_token
from targets.base import Target

pytestmark = pytest.mark.api


def all_checks() -> list[Any]:
    load_all_checks()
    return list(CHECKS.get_all())


@pytest.fixture(scope="session")
def auth_headers(target: Target, settings: Settings) -> dict[str, str]:
    declared = target.declared(API.key).env
    if not auth_enabled(declared):
        return {}
    if settings.jwt_private_key is None:
        pytest.fail("the API has auth on (SOMABRAIN_DISABLE_AUTH=0): pass --jwt-private-key PEM, the key whose "
                    "public half the deployment trusts (kind: .run/jwt/jwt_priv.pem)")
    try:
        token = mint_token(settings.jwt_private_key, declared, JWT_TENANT, JWT_ROLES)
    except AuthSetupError as exc:
        pytest.fail(str(exc))
    return {"Authorization": f"Bearer {token}"}


def api_verify(settings: Settings) -> str | bool:
    """An https base URL (the TLS ingress) is verified against the same CA as the TLS checks (--tls-ca)."""
    return str(settings.tls_ca) if settings.base_url.startswith("https://") else True


@pytest.fixture(scope="session")
def api_schema(settings: Settings, auth_headers: dict[str, str]) -> Any:
    url = f"{settings.base_url}/openapi.json"
    try:
        response = requests.get(url, headers=auth_headers, timeout=10, verify=api_verify(settings))
    except requests.RequestException as exc:
        pytest.fail(f"cannot fetch {url}: {exc} (dev: is the stack up? prod: is the port-forward running? an "
                    "https URL: does --resolve name the ingress?)")
    assert response.status_code == 200, f"GET {url} answered {response.status_code}: {response.text[:300]}"
    document = response.json()
    if not _has_links(document):
        settings.notes.append("the served /openapi.json declares no links: the stateful phase uses the suite's "
                              "STATEFUL_LINKS (POST /remember -> DELETE /memory/{item_id}); add them to the document")
        document = _with_links(document)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=settings.base_url, tls_verify=api_verify(settings))
    return schema


def _has_links(document: dict[str, Any]) -> bool:
    return any(r.get("links") for ops in (document.get("paths") or {}).values() for op in ops.values()
               if isinstance(op, dict) for r in (op.get("responses") or {}).values() if isinstance(r, dict))


def _with_links(document: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(document)
    for (path, method, status), links in STATEFUL_LINKS.items():
        response = (((out.get("paths") or {}).get(path) or {}).get(method) or {}).get("responses", {}).get(status)
        if response is not None:
            response["links"] = copy.deepcopy(dict(links))
    return out


def test_document_covers_routes(api_schema: Any, auth_headers: dict[str, str], check: Check) -> None:
    paths = api_schema.raw_schema.get("paths") or {}
    served = sorted(f"{m.upper()} {p}" for p, ops in paths.items() for m in ops if not m.startswith("x-"))
    check.expected = sorted(f"{m} {p}" for m, p in API_OPERATIONS)
    check.observed = served
    assert set(check.expected) <= set(served), f"/openapi.json misses {sorted(set(check.expected) - set(served))}"
    if auth_headers:
        schemes = (api_schema.raw_schema.get("components") or {}).get("securitySchemes") or {}
        assert "bearerAuth" in schemes, f"auth is on but /openapi.json declares no bearerAuth ({sorted(schemes)})"


@pytest.mark.parametrize(("method", "path"), API_OPERATIONS, ids=[f"{m} {p}" for m, p in API_OPERATIONS])
def test_operation(method: str, path: str, api_schema: Any, auth_headers: dict[str, str], settings: Settings,
                   check: Check) -> None:
    operation = api_schema[path][method]
    checks = all_checks()
    tally = ApiTally()

    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=settings.base_url, headers=auth_headers or None, timeout=15,
                             verify=api_verify(settings))
        tally.response(response.status_code)
        case.validate_response(response, checks=checks, headers=auth_headers or None)

    @given(case=_strategy(operation))
    @hsettings(max_examples=settings.api_examples, deadline=None, suppress_health_check=list(HealthCheck),
               database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink], derandomize=True)
    def run(case: schemathesis.Case[Any]) -> None:
        tally.run(lambda: call(case))

    check.expected = {"failures": 0, "errors": 0, "checks": [c.__name__ for c in checks]}
    try:
        run()
    finally:
        check.observed = tally.observed()


def _strategy(operation: Any) -> Any:
    """Valid and invalid requests: negative_data_rejection needs the invalid ones. Where nothing can be negated,
    schemathesis rejects the negative draws itself, so any exception building the strategy is a real error."""
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))


def test_stateful(api_schema: Any, auth_headers: dict[str, str], settings: Settings, check: Check) -> None:
    """schemathesis' state machine: sequences of calls linked by the document (e.g. remember -> delete)."""
    checks = all_checks()
    tally = ApiTally()
    base = api_schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": settings.base_url, "headers": dict(auth_headers), "timeout": 15,
                    "verify": api_verify(settings)}

        def validate_response(self, response: Any, case: schemathesis.Case[Any], **kwargs: Any) -> None:
            tally.response(response.status_code, f"{case.method} {case.path} -> {response.status_code}")
            tally.run(lambda: case.validate_response(response, checks=checks, headers=auth_headers or None))

    check.expected = {"failures": 0, "errors": 0}
    try:
        Workflow.run(settings=hsettings(max_examples=max(5, settings.api_examples // 2), stateful_step_count=6,
                                        deadline=None, suppress_health_check=list(HealthCheck), database=None,
                                        derandomize=True))
    finally:
        check.observed = tally.observed()
    assert tally.cases, "the stateful phase made no call"
