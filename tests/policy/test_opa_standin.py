"""The OPA Data API stand-in (compose/airgap/opa/opa_standin.py) as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.opa_standin import POLICY_FILE, STANDIN, OpaStandin

ALLOWED = {"method": "POST", "path": "/recall", "tenant": "acme", "subject": "u-1", "roles": ["reader"]}


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaStandin]:
    with OpaStandin([POLICY_FILE], log_dir=tmp_path_factory.mktemp("opa")) as server:
        yield server


def call(
    server: OpaStandin,
    method: str,
    path: str,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], Any]:
    connection = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    if conn is None:
        connection.close()
    return response.status, dict(response.headers), json.loads(raw) if raw else None


def post_input(server: OpaStandin, path: str, doc: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
    return call(server, "POST", path, json.dumps({"input": doc}).encode(), **kw)


def test_health_is_empty_object_and_labelled(opa: OpaStandin) -> None:
    status, headers, body = call(opa, "GET", "/health")
    assert (status, body) == (200, {})
    assert "stand-in" in headers["X-OPA-Standin"]


def test_allow_and_deny(opa: OpaStandin) -> None:
    assert post_input(opa, "/v1/data/somabrain/allow", ALLOWED)[2] == {"result": True}
    cross = {**ALLOWED, "requested_tenant": "beta"}
    assert post_input(opa, "/v1/data/somabrain/allow", cross)[2] == {"result": False}
    assert post_input(opa, "/v1/data/somabrain/reasons", cross)[2] == {"result": ["cross_tenant"]}


def test_undefined_document_has_no_result_key(opa: OpaStandin) -> None:
    assert post_input(opa, "/v1/data/somabrain/no_such_rule", ALLOWED)[:3:2] == (200, {})
    assert post_input(opa, "/v1/data/other_package/allow", ALLOWED)[:3:2] == (200, {})


def test_get_with_input_parameter(opa: OpaStandin) -> None:
    query = urllib.parse.urlencode({"input": json.dumps(ALLOWED)})
    assert call(opa, "GET", f"/v1/data/somabrain/allow?{query}")[2] == {"result": True}


def test_no_input_evaluates_with_undefined_input(opa: OpaStandin) -> None:
    assert call(opa, "POST", "/v1/data/somabrain/allow", b"")[2] == {"result": False}
    assert call(opa, "POST", "/v1/data/somabrain/allow", b"{}")[2] == {"result": False}
    assert call(opa, "GET", "/v1/data/somabrain/reasons")[2] == {"result": ["input_not_object"]}


def test_whole_package_and_data_documents(opa: OpaStandin) -> None:
    package = post_input(opa, "/v1/data/somabrain", ALLOWED)[2]["result"]
    assert package["allow"] is True and package["reasons"] == []
    assert "somabrain" in call(opa, "GET", "/v1/data")[2]["result"]


def test_input_never_leaks_between_requests_on_one_connection(opa: OpaStandin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", opa.port, timeout=10)
    try:
        assert post_input(opa, "/v1/data/somabrain/allow", ALLOWED, conn=conn)[2] == {"result": True}
        assert call(opa, "POST", "/v1/data/somabrain/allow", b"{}", conn=conn)[2] == {"result": False}
    finally:
        conn.close()


def test_two_keep_alive_connections_are_served_concurrently(opa: OpaStandin) -> None:
    """A client holding an idle keep-alive connection must not block another (engines are per thread)."""
    first = http.client.HTTPConnection("127.0.0.1", opa.port, timeout=10)
    second = http.client.HTTPConnection("127.0.0.1", opa.port, timeout=10)
    try:
        assert post_input(opa, "/v1/data/somabrain/allow", ALLOWED, conn=first)[2] == {"result": True}
        assert post_input(opa, "/v1/data/somabrain/allow", ALLOWED, conn=second)[2] == {"result": True}
        assert post_input(opa, "/v1/data/somabrain/allow", ALLOWED, conn=first)[2] == {"result": True}
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"input"', b"\xff\xfe"],
    ids=["malformed-json", "array-body", "string-body", "not-utf8"],
)
def test_bad_body_is_400_invalid_parameter(opa: OpaStandin, body: bytes) -> None:
    status, _, payload = call(opa, "POST", "/v1/data/somabrain/allow", body)
    assert status == 400
    assert payload["code"] == "invalid_parameter" and payload["message"]


def test_bad_input_query_parameter_is_400(opa: OpaStandin) -> None:
    status, _, payload = call(opa, "GET", "/v1/data/somabrain/allow?input=%7Bnope")
    assert (status, payload["code"]) == (400, "invalid_parameter")


def test_unknown_paths_and_methods(opa: OpaStandin) -> None:
    assert call(opa, "GET", "/v1/policies")[0] == 404
    assert call(opa, "POST", "/v0/data/somabrain/allow", b"{}")[0] == 404
    assert call(opa, "DELETE", "/v1/data/somabrain")[0] == 405
    assert call(opa, "POST", "/health", b"{}")[0] == 405


def test_access_log_counts_data_requests(tmp_path: Path) -> None:
    with OpaStandin([POLICY_FILE], log_dir=tmp_path) as server:
        assert server.data_requests() == 0
        call(server, "GET", "/health")
        for _ in range(3):
            post_input(server, "/v1/data/somabrain/allow", ALLOWED)
        assert server.data_requests() == 3


def test_sigterm_exits_cleanly_and_restart_reuses_port(tmp_path: Path) -> None:
    server = OpaStandin([POLICY_FILE], log_dir=tmp_path)
    server.start()
    port = server.port
    assert server.stop() == 0
    assert "stopped" in server.log()
    server.start()
    try:
        assert server.port == port
        assert post_input(server, "/v1/data/somabrain/allow", ALLOWED)[2] == {"result": True}
    finally:
        server.kill()


def test_evaluation_error_is_500(tmp_path: Path) -> None:
    conflict = tmp_path / "conflict.rego"
    conflict.write_text("package broken\n\nx := 1 if { input.a }\n\nx := 2 if { input.a }\n")
    with OpaStandin([conflict], log_dir=tmp_path) as server:
        status, _, payload = post_input(server, "/v1/data/broken/x", {"a": True})
        assert (status, payload["code"]) == (500, "internal_error")
        assert post_input(server, "/v1/data/broken/x", {"a": False})[2] == {}


def test_json_data_files_are_loaded(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"limits": {"max": 3}}')
    rule = tmp_path / "rule.rego"
    rule.write_text("package limits_check\n\nok if { input.n <= data.limits.max }\n")
    with OpaStandin([rule, data], log_dir=tmp_path) as server:
        assert post_input(server, "/v1/data/limits_check/ok", {"n": 2})[2] == {"result": True}
        assert post_input(server, "/v1/data/limits_check/ok", {"n": 4})[2] == {}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STANDIN), *args], capture_output=True, text=True, timeout=60)


def test_help_says_stand_in() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "STAND-IN" in result.stdout and "NOT Open Policy" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/policy.rego"], "/nonexistent/policy.rego: cannot read (No such file or directory)"),
        (["--addr", "nope", str(POLICY_FILE)], "--addr must look like HOST:PORT"),
        ([], "the following arguments are required: FILE"),
    ],
)
def test_bad_arguments_exit_2_with_message(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_rego_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text("package bad\n\nallow if {\n")
    result = run_cli(str(bad))
    assert result.returncode == 2
    assert f"{bad}: not valid Rego" in result.stderr
    assert "Traceback" not in result.stderr and "backtrace" not in result.stderr.lower()


def test_v0_mode_accepts_the_policy(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.rego"
    legacy.write_text("package legacy\n\nallow { input.ok == true }\n")
    assert run_cli(str(legacy)).returncode == 2  # v0-only syntax is refused by default (v1 rules)
    server = OpaStandin([legacy, POLICY_FILE], log_dir=tmp_path, extra_args=["--v0-compatible"])
    server.start()
    try:
        assert post_input(server, "/v1/data/legacy/allow", {"ok": True})[2] == {"result": True}
        assert post_input(server, "/v1/data/somabrain/allow", ALLOWED)[2] == {"result": True}
    finally:
        server.kill()
