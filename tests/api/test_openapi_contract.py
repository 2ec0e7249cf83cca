"""schemathesis over the whole OpenAPI document, in-process (ASGI), with every check enabled: 0 failures.

The app is wired to this session's real Redis, Postgres and SomaMemory, so positive cases really store and recall.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from brain.api.app import create_app, router
from brain.settings import Settings
from tests.api.helpers import auth_env
from tests.helpers import jwt_keys
from tests.helpers.opa_standin import OpaStandin


@pytest.fixture  # per test: the schemathesis plugin ends an ASGI app's lifespan when each test ends
def api_schema(strict_env: dict[str, str]) -> schemathesis.schemas.BaseSchema:
    app = create_app(Settings.from_env(strict_env))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


EXAMPLES = int(os.environ.get("SOMABRAIN_SCHEMATHESIS_EXAMPLES", "60"))
# One test per operation, straight from the route table (schemathesis' pytest fixture mode does not run on pytest 9).
OPERATIONS = [(route.method, route.path) for route in router.routes]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.schemas.BaseSchema, method: str, path: str
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate()

    run()


@pytest.fixture
def auth_schema(strict_env: dict[str, str], keys: jwt_keys.KeyPair, opa: OpaStandin,
                run_dir: Path) -> schemathesis.schemas.BaseSchema:
    app = create_app(Settings.from_env(auth_env(strict_env, keys, run_dir, opa.url)))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_with_auth_on_conforms_too(
    auth_schema: schemathesis.schemas.BaseSchema, keys: jwt_keys.KeyPair, method: str, path: str
) -> None:
    """Auth on, a valid token (role admin) on every call; schemathesis also checks that auth is enforced."""
    token = jwt_keys.mint(keys, jwt_keys.standard_claims(tenant="schemathesis", roles=["admin"], lifetime=3600))
    operation = auth_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

    run()


def test_document_covers_every_route(api_schema: schemathesis.schemas.BaseSchema) -> None:
    doc = api_schema.raw_schema
    operations = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    expected = {
        ("GET", "/health"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
        ("POST", "/remember"), ("POST", "/recall"), ("POST", "/act"), ("DELETE", "/memory/{item_id}"),
    }
    assert operations == expected
    remember = doc["paths"]["/remember"]["post"]
    assert set(remember["responses"]) >= {"201", "400", "409", "413", "415", "422", "503"}
    key = next(p for p in remember["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["required"] is False and key["schema"]["pattern"]
