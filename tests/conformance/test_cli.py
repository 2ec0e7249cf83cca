"""The CLI as users run it: exit codes, unreadable inputs (exit 2), exceptions, formats, speed, diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from conformance.__main__ import main
from tests.conformance.gate import EXCEPTIONS, REPO, compose_service, run_gate


def cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_repo_passes_with_markdown_output() -> None:
    """The gate's speed (under 3 s for the repo) is measured, not asserted here: tests never depend on timing."""
    result = cli("parity", "--format", "markdown")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| status | dimension | subject |" in result.stdout and "accepted" in result.stdout


def test_help_lists_formats_and_exit_codes() -> None:
    result = cli("parity", "--help")
    assert result.returncode == 0
    for word in ("--compose", "--k8s", "--exceptions", "text,json,markdown,junit", "exit codes", "2 an input"):
        assert word in result.stdout


def test_text_has_no_colour_when_not_a_tty_and_colour_on_a_tty(tree: Path) -> None:
    args = ["parity", "--compose", str(tree / "compose" / "docker-compose.yml"), "--k8s", str(tree / "k8s")]
    plain = cli(*args)
    assert plain.returncode == 0 and "\033[" not in plain.stdout and "ACCEPTED" in plain.stdout
    script = "import sys, pty; sys.exit(pty.spawn([sys.executable, '-m', 'conformance', *sys.argv[1:]]) >> 8)"
    # under a pseudo-terminal the same run is coloured (its output goes to our pipe through the pty)
    tty = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert "\033[36mACCEPTED" in tty.stdout


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda t: (t / "compose" / "docker-compose.yml").write_text("services: [\n"), "yaml: line 1: did not find"),
        (lambda t: (t / "compose" / "docker-compose.yml").unlink(), "no such file or directory"),
        (
            lambda t: (t / "compose" / "docker-compose.yml").write_text("services:\n  a: {image: x, mem_limt: 1m}\n"),
            "services.a additional properties 'mem_limt' not allowed",
        ),
        (lambda t: (t / "k8s" / "base" / "redis.yaml").write_text("kind: [\n"), "MalformedYAMLError: yaml: line 1"),
        (
            lambda t: (t / "k8s" / "base" / "pvc.yaml").write_text(
                "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"
            ),
            "unknown kind 'Gadget'",
        ),
        (lambda t: (t / "k8s" / "base" / "opa.yaml").unlink(), "opa.yaml"),
    ],
    ids=["compose-malformed", "compose-missing", "compose-unknown-key", "k8s-malformed", "k8s-unknown-kind",
         "k8s-missing-resource"],
)
def test_unreadable_inputs_exit_2_naming_file_and_reason(
    tree: Path, capsys: pytest.CaptureFixture[str], breakage: Any, message: str
) -> None:
    breakage(tree)
    result = run_gate(tree, capsys)
    assert result.code == 2
    assert message in result.stderr and str(tree) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_k8s_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parity", "--k8s", str(tmp_path / "nowhere")]) == 2
    assert "k8s directory does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("exceptions:\n  - {dimension: env, subject: x}\n", "non-empty `reason`"),
        ("exceptions:\n  - {dimension: vibes, subject: x, reason: r}\n", "dimension 'vibes'"),
        ("exceptions:\n  - {dimension: env, reason: r}\n", "needs `subject`"),
        ("exceptions:\n  - {dimension: env, subject: x, reason: r, colour: red}\n", "unknown keys"),
        ("exceptions: [\n", "malformed YAML"),
    ],
)
def test_bad_exceptions_file_exits_2(
    tree: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    path = tree / "exceptions.yaml"
    path.write_text(body)
    result = run_gate(tree, capsys, exceptions=path)
    assert result.code == 2 and message in result.stderr and str(path) in result.stderr


def test_stale_exception_fails_and_is_reported(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose_service(tree, "sb_opa", lambda s: s.update(image="openpolicyagent/opa:0.48.0"))  # difference fixed
    result = run_gate(tree, capsys)
    assert result.code == 1
    [stale] = [f for f in result.findings if f["status"] == "stale"]
    assert (stale["dimension"], stale["subject"]) == ("image", "sb_opa") and "remove it" in stale["reason"]


def test_pinned_values_and_hard_findings(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the exception pins dev=1/prod=0: another value is drift, and the exception goes stale
    compose_service(tree, "somabrain", lambda s: s["environment"].update(SOMABRAIN_DISABLE_AUTH="true"))
    result = run_gate(tree, capsys)
    assert result.code == 1 and ("env", "somabrain/SOMABRAIN_DISABLE_AUTH") in result.drifts()
    # strict-real differences cannot be accepted, even by a matching exception
    compose_service(tree, "somabrain", lambda s: s["environment"].update(SOMABRAIN_REQUIRE_MEMORY="0"))
    path = tree / "exc.yaml"
    path.write_text(
        EXCEPTIONS.read_text()
        + "  - {dimension: env, subject: somabrain/SOMABRAIN_REQUIRE_MEMORY, dev: '0', prod: '1', reason: exactly it}\n"
    )
    result = run_gate(tree, capsys, exceptions=path)
    finding = result.by_subject("env", "somabrain/SOMABRAIN_REQUIRE_MEMORY")
    assert finding["status"] == "drift" and "cannot accept a hard finding" in finding["reason"]


def test_without_exceptions_every_difference_is_drift(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_gate(tree, capsys, exceptions=None)
    assert result.code == 1
    assert ("image", "sb_opa") in result.drifts() and ("mapping", "kafka") in result.drifts()


def test_json_and_junit_shapes(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_gate(tree, capsys)
    keys = {"dimension", "subject", "dev", "prod", "status", "reason", "hard", "prod_from"}
    assert result.findings and all(set(f) <= keys and f["status"] in {"ok", "accepted"} for f in result.findings)
    accepted = [f for f in result.findings if f["status"] == "accepted"]
    assert all(f.get("reason") for f in accepted)
    out = tree / "parity.xml"
    code = main(
        [
            "parity",
            "--compose",
            str(tree / "compose" / "docker-compose.yml"),
            "--k8s",
            str(tree / "k8s"),
            "--format",
            "junit",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    cases = ET.parse(out).getroot().findall("./testsuite/testcase")  # noqa: S314 (our own output)
    assert len(cases) == len(result.findings)
    assert not ET.parse(out).getroot().findall(".//failure")  # noqa: S314


# --- diff -----------------------------------------------------------------------------------------------
def report(env: str, checks: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "environment": env,
        "time": "2025-01-01T00:00:00Z",
        "checks": [
            {"id": i, "dimension": i.split("/")[0], "subject": i, "expected": 200, "observed": 200, "status": s}
            for i, s in checks
        ],
    }


def run_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str], dev: Any, prod: Any,
             exceptions: str | None = None) -> tuple[int, Any, str]:
    d, p, out = tmp_path / "dev.json", tmp_path / "prod.json", tmp_path / "diff.json"
    d.write_text(dev if isinstance(dev, str) else json.dumps(dev))
    p.write_text(prod if isinstance(prod, str) else json.dumps(prod))
    accepted = ["--no-exceptions"]
    if exceptions is not None:
        (tmp_path / "accepted.yaml").write_text(exceptions)
        accepted = ["--exceptions", str(tmp_path / "accepted.yaml")]
    code = main(["diff", str(d), str(p), *accepted, "--format", "json", "--out", str(out)])
    err = capsys.readouterr().err
    return code, json.loads(out.read_text()) if out.exists() else None, err


def test_diff_passed_on_both_sides_is_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = [("dns/a", "passed"), ("tls/ingress", "passed")]
    code, findings, _ = run_diff(tmp_path, capsys, report("dev", checks), report("prod", checks))
    assert code == 0
    assert {f["subject"]: f["status"] for f in findings} == {"dns/a": "ok", "tls/ingress": "ok"}


@pytest.mark.parametrize(
    ("dev", "prod", "why"),
    [
        ([("dns/a", "passed")], [("dns/a", "failed")], "passed in dev, failed in prod"),
        ([("dns/a", "error")], [("dns/a", "passed")], "error in dev, passed in prod"),
        ([("dns/a", "passed")], [("dns/a", "skipped")], "passed in dev, skipped in prod"),
        ([("dns/a", "skipped")], [("dns/a", "passed")], "skipped in dev, passed in prod"),
        ([("dns/a", "failed")], [("dns/a", "failed")], "the same fault in both environments is not parity"),
        ([("dns/a", "skipped")], [("dns/a", "skipped")], "skipped on both sides: nothing was shown"),
        ([("dns/a", "passed")], [], "the check did not run in prod"),
    ],
)
def test_diff_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str], dev: Any, prod: Any, why: str) -> None:
    code, findings, _ = run_diff(tmp_path, capsys, report("dev", dev), report("prod", prod))
    assert code == 1
    drifted = [f for f in findings if f["status"] == "drift"]
    assert [f["subject"] for f in drifted] == ["dns/a"] and why in drifted[0]["reason"]


ACCEPT_ABSENT_IN_PROD = """exceptions:
  - dimension: check
    subject: dns/resolves/kafka
    dev: passed
    prod: null
    reason: Kafka is outside the cluster in prod.
"""


def test_diff_exception_accepts_exactly_the_statuses_it_names(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    dev = report("dev", [("dns/resolves/kafka", "passed")])
    code, findings, _ = run_diff(tmp_path, capsys, dev, report("prod", []), ACCEPT_ABSENT_IN_PROD)
    assert code == 0 and [f["status"] for f in findings] == ["accepted"]
    # The check starts failing in dev: no longer the accepted difference. Drift, and the exception is stale.
    failing = report("dev", [("dns/resolves/kafka", "failed")])
    code, findings, _ = run_diff(tmp_path, capsys, failing, report("prod", []), ACCEPT_ABSENT_IN_PROD)
    assert code == 1 and sorted(f["status"] for f in findings) == ["drift", "stale"]


def test_the_repos_diff_exceptions_name_exact_checks_and_statuses() -> None:
    import yaml

    doc = yaml.safe_load((REPO / "conformance" / "diff-exceptions.yaml").read_text())
    for entry in doc["exceptions"]:
        assert entry["dimension"] == "check" and "dev" in entry and "prod" in entry, entry
        for subject in entry.get("subjects") or [entry["subject"]]:
            assert not set(subject) & set("*?["), f"{subject}: an exception names one check, not a pattern"


@pytest.mark.parametrize(
    ("dev", "message"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"environment": "dev", "checks": []}), "'time' is a required property"),
        (json.dumps(report("dev", [("a", "passed"), ("a", "passed")])), "duplicate check ids: a"),
        (json.dumps(report("dev", [("a", "maybe")])), "at checks/0/status"),
        (json.dumps(report("prod", [])), "expected 'dev'"),
    ],
)
def test_diff_unreadable_reports_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev: str, message: str
) -> None:
    code, _, err = run_diff(tmp_path, capsys, dev, report("prod", []))
    assert code == 2 and message in err and "dev.json" in err


def test_report_schema_is_valid_json_schema() -> None:
    import jsonschema

    schema = json.loads((REPO / "conformance" / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(report("prod", [("dns/a", "passed")]), schema)
