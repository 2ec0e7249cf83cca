"""Exceptions name exactly what they accept (exact subjects, both values pinned), and hard findings stay drift.

The old file accepted more than it named: `sb_redis/*` accepted any future security difference of Redis, and
`resources somabrain/memory dev: limit 512Mi` (prod left open) also accepted a k8s limit cut to 256Mi."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.parity.comparators.health import weaker
from conformance.parity.engine import run_parity
from conformance.parity.exceptions import apply_exceptions, load_exceptions
from conformance.parity.findings import DIMENSIONS, Finding, Status
from tests.conformance.gate import EXCEPTIONS, REPO, GateResult, container, edit_k8s, run_gate
from tests.conformance.test_parity_mutations import MUTATIONS, Mutation

Values = tuple[str, str, str | None, str | None]  # dimension, subject, dev, prod


def file_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(EXCEPTIONS.read_text())["exceptions"]
    return entries


def accepted_by_file() -> set[Values]:
    """Every (dimension, subject, dev, prod) the repo's exceptions file accepts, as written there."""
    return {
        (e["dimension"], subject, e["dev"], e["prod"])
        for e in file_entries()
        for subject in e.get("subjects") or [e["subject"]]
    }


def drifts_with_values(result: GateResult) -> set[Values]:
    return {(f["dimension"], f["subject"], f["dev"], f["prod"]) for f in result.findings if f["status"] == "drift"}


def write_exceptions(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"exceptions": entries}, sort_keys=False))
    return path


def exactly(finding: dict[str, Any]) -> dict[str, Any]:
    """An exception written to accept exactly this finding."""
    return {
        "dimension": finding["dimension"],
        "subject": finding["subject"],
        "dev": finding["dev"],
        "prod": finding["prod"],
        "reason": "written to accept exactly this finding",
    }


def repo_entries_plus(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The repo's exceptions with `entry` added, and the subject it names taken out of any other entry (one
    subject, one exception)."""
    taken = (entry["dimension"], entry["subject"])
    out: list[dict[str, Any]] = []
    for e in file_entries():
        subjects = [s for s in e.get("subjects") or [e["subject"]] if (e["dimension"], s) != taken]
        if subjects:
            out.append({k: v for k, v in e.items() if k not in ("subject", "subjects")} | {"subjects": subjects})
    return [*out, entry]


# --- the loader refuses what does not name exactly what it accepts ----------------------------------------
VALID = {"dimension": "image", "subject": "sb_opa", "dev": "a", "prod": "b", "reason": "r"}


def entry(drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    return {k: v for k, v in (VALID | changes).items() if k not in drop}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (entry(subject="sb_redis/*"), "subject 'sb_redis/*' is a pattern"),
        (entry(subject="somabrain/SOMABRAIN_JWT_?"), "is a pattern"),
        (entry(subject="sb_[or]edis"), "is a pattern"),
        (entry(("subject",), subjects=["sb_opa", "sb_redis->sb_opa:*"]), "subject 'sb_redis->sb_opa:*' is a pattern"),
        (entry(("dev",)), "needs `dev:`"),
        (entry(("prod",)), "needs `prod:`"),
        (entry(prod=0), "`prod: 0` is not a string; quote it"),
        (entry(dev=True), "`dev: True` is not a string"),
        (entry(subjects=["sb_opa"]), "give `subject` or `subjects`, not both"),
    ],
    ids=["star", "question-mark", "bracket", "in-subjects", "no-dev", "no-prod", "number", "bool", "both-keys"],
)
def test_an_exception_that_does_not_name_exactly_what_it_accepts_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str], body: dict[str, Any], message: str
) -> None:
    path = write_exceptions(tree / "exceptions.yaml", [body])
    result = run_gate(tree, capsys, exceptions=path)
    assert result.code == 2 and not result.findings
    assert message in result.stderr and "exceptions[0]" in result.stderr and str(path) in result.stderr
    if "pattern" in message:
        assert "list the exact subjects" in result.stderr


def test_a_subject_listed_twice_is_refused(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_exceptions(tree / "exceptions.yaml", [VALID, VALID | {"prod": "c"}])
    result = run_gate(tree, capsys, exceptions=path)
    assert result.code == 2 and "exceptions[1]: image sb_opa is already listed (exceptions[0])" in result.stderr


def test_the_repos_exceptions_name_exact_subjects_and_both_values() -> None:
    for entry in file_entries():
        assert "dev" in entry and "prod" in entry, entry
        for subject in entry.get("subjects") or [entry["subject"]]:
            assert not set(subject) & set("*?["), subject


# --- both values pinned ---------------------------------------------------------------------------------
def test_the_issues_example_a_prod_limit_cut_below_dev_fails_and_the_exception_goes_stale(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_k8s(tree / "k8s" / "base" / "somabrain.yaml", "Deployment", "somabrain",
             lambda o: container(o)["resources"]["limits"].update(memory="256Mi"))
    result = run_gate(tree, capsys)
    assert result.code == 1
    finding = result.by_subject("resources", "somabrain/memory")
    assert finding["status"] == "drift" and finding.get("hard") is True, finding
    assert finding["prod"] == "request 1Gi, limit 256Mi"
    [stale] = [f for f in result.findings if f["status"] == "stale"]
    assert (stale["dimension"], stale["subject"], stale["dev"], stale["prod"]) == (
        "resources", "somabrain/memory", "limit 512Mi", "request 1Gi, limit 2Gi")


@pytest.fixture(scope="module")
def repo_drifts() -> list[Finding]:
    """The drift findings the gate reports for the repo, before any exception."""
    report = run_parity(compose_files=None, k8s_dir=REPO / "k8s", exceptions_file=None, repo_root=REPO)
    return [f for f in report.findings if f.status is Status.DRIFT]


def _changed(value: str | None) -> str:
    return "set" if value is None else f"{value} (changed)"


@pytest.mark.parametrize("side", ["dev", "prod"])
@pytest.mark.parametrize("accepted", sorted(accepted_by_file(), key=str), ids=lambda v: f"{v[0]}:{v[1]}")
def test_changing_one_side_of_an_accepted_difference_is_drift_and_its_exception_stale(
    repo_drifts: list[Finding], accepted: Values, side: str
) -> None:
    dimension, subject = accepted[:2]
    findings = [
        replace(f, **{side: _changed(getattr(f, side))}) if (f.dimension, f.subject) == (dimension, subject) else f
        for f in repo_drifts
    ]
    result = apply_exceptions(findings, load_exceptions(EXCEPTIONS, DIMENSIONS))
    by_status = {(f.dimension, f.subject, f.status) for f in result}
    assert (dimension, subject, Status.DRIFT) in by_status
    assert (dimension, subject, Status.STALE) in by_status
    assert [f for f in result if f.status.failing and f.subject != subject] == []  # nothing else moved


# --- semantic rules that no exception can override -----------------------------------------------------
HARD = [m for m in MUTATIONS if m.hard]


@pytest.mark.parametrize("mutation", HARD, ids=[m.id for m in HARD])
def test_a_hard_finding_stays_drift_under_an_exception_that_names_it_exactly(
    tree: Path, capsys: pytest.CaptureFixture[str], mutation: Mutation
) -> None:
    mutation.apply(tree)
    finding = run_gate(tree, capsys, exceptions=None).by_subject(mutation.dimension, mutation.subject)
    path = write_exceptions(tree / "exact.yaml", repo_entries_plus(exactly(finding)))
    result = run_gate(tree, capsys, exceptions=path)
    assert result.code == 1
    after = result.by_subject(mutation.dimension, mutation.subject)
    assert after["status"] == "drift" and after.get("hard") is True
    assert "cannot accept a hard finding" in after["reason"], after
    assert (mutation.dimension, mutation.subject) in result.stale()  # the exception accepted nothing
    # incidental reachability of the shared compose `data` network stays acceptable beside it
    assert result.by_subject("connectivity", "sb_redis->sb_opa:8181")["status"] == "accepted"


@pytest.mark.parametrize(
    ("dev", "ready", "why"),
    [
        ("http :9696/readyz", None, "no readinessProbe"),
        ("exec redis-cli ping", "tcp :6379", "only opens the port"),
        ("http :9696/readyz", "tcp :9696", "only opens the port"),
        ("http :9696/readyz", "http :9696/healthz", "readiness endpoint"),
        ("http :9090/-/ready", "exec pg_isready", "readiness endpoint"),
        ("http :9696/readyz", "http :9696/readyz", None),
        ("http :9696/healthz", "http :9696/readyz", None),  # prod stronger: ordinary drift
        ("exec pg_isready", "http :5432/health", None),  # another kind, not an open port: ordinary drift
        ("http :9696/readyz", "http :9595/readyz", None),  # another port: ordinary drift
    ],
)
def test_weaker_readiness_is_defined_precisely(dev: str, ready: str | None, why: str | None) -> None:
    result = weaker(dev, ready)
    assert (result is None) if why is None else (result is not None and why in result), result


# --- the repo's file ---------------------------------------------------------------------------------
def test_the_repo_passes_and_accepts_exactly_the_drifts_it_names(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_gate(tree, capsys)
    assert result.code == 0, result.drifts() + result.stale()
    unfiltered = run_gate(tree, capsys, exceptions=None)
    assert drifts_with_values(unfiltered) == accepted_by_file()  # no more, no less
    assert not [f for f in unfiltered.findings if f.get("hard")]


def test_finding_values_do_not_depend_on_where_the_tree_is(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An exception pins exact values, so a bind mount is reported as the compose file writes it."""
    finding = run_gate(tree, capsys).by_subject("storage", "sb_opa:/policy")
    assert finding["dev"] == "config (bind ../k8s/policy, ro)", finding
