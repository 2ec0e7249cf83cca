"""Run the parity gate: load both environments, compare every dimension, apply the exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from conformance.expectations import OPERATOR_SECRETS
from conformance.inventory import NAMESPACE
from conformance.loaders.compose import load_project
from conformance.loaders.k8s import load_manifests
from conformance.parity.comparators import COMPARATORS
from conformance.parity.context import ParityContext
from conformance.parity.exceptions import apply_exceptions, load_exceptions
from conformance.parity.findings import DIMENSIONS, Finding, Status
from conformance.parity.provenance import prod_origin


@dataclass
class ParityReport:
    findings: list[Finding]
    inputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status is status)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status.failing for f in self.findings) else 0


def run_parity(
    *,
    compose_files: list[Path] | None,
    k8s_dir: Path,
    exceptions_file: Path | None,
    env_file: Path | None = None,
    profiles: list[str] | None = None,
    repo_root: Path | None = None,
) -> ParityReport:
    """Raises InputError (exit 2) when an input cannot be read."""
    exceptions = load_exceptions(exceptions_file, DIMENSIONS)
    project = load_project(compose_files, env_file, repo_root=repo_root, profiles=profiles)
    # The Secrets are not in k8s/ (scripts/k8s_secrets.sh creates them): references to them resolve as provided.
    manifests = load_manifests(k8s_dir, {(NAMESPACE, name): keys for name, keys in OPERATOR_SECRETS.items()})
    ctx = ParityContext.build(project, manifests)
    findings: list[Finding] = []
    for comparator in COMPARATORS.values():
        findings.extend(replace(f, prod_from=prod_origin(f.dimension, f.subject, manifests)) for f in comparator(ctx))
    report = ParityReport(
        apply_exceptions(findings, exceptions),
        inputs={
            "compose": ", ".join(str(f) for f in project.files),
            "env file": str(project.env_file) if project.env_file else "none (placeholders)",
            "k8s": str(k8s_dir),
            "exceptions": str(exceptions_file) if exceptions_file else "none",
        },
    )
    if project.placeholders_used:
        report.notes.append("no env file: placeholders used for " + ", ".join(sorted(project.placeholders_used)))
    return report
