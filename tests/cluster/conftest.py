"""Fixtures of the cluster tier: the deployment `tilt ci` makes (once per session), and scratch namespaces.

Everything here needs the real local cluster: every test module in this directory is marked `cluster`
(`pytestmark`), so only `pytest -m cluster` (`make cluster-test`) selects them, and then a missing cluster is a
failure, not a skip.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.live import CONTEXT, REPO, kubectl, tilt


@pytest.fixture(scope="session")
def deployed() -> Iterator[subprocess.CompletedProcess[str]]:
    """`tilt ci` of the Tiltfile into somabrain-prod, for the whole session; `tilt down` at the end.

    SOMABRAIN_CLUSTER_KEEP=1 (for iterating on one test by hand): leave the deployment up afterwards, and reuse
    one that is already there instead of running `tilt ci` again."""
    keep = os.environ.get("SOMABRAIN_CLUSTER_KEEP") == "1"
    if keep and kubectl("get", "deployment", "somabrain", check=False).returncode == 0:
        yield subprocess.CompletedProcess(["tilt", "ci"], 0, "SUCCESS. All workloads are healthy. (reused)", "")
        return
    subprocess.run([str(REPO / "scripts" / "setup_ingress_tls.sh"), "--context", CONTEXT], check=True,
                   timeout=120, capture_output=True)
    run = tilt("ci", "--timeout", "20m", timeout=1500)
    try:
        yield run
    finally:
        if not keep:
            tilt("down", timeout=300)


@pytest.fixture(scope="session")
def healthy(deployed: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The deployment, asserted healthy: tests that need it fail with `tilt ci`'s own output when it is not."""
    assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
    return deployed


@pytest.fixture
def scratch_namespace() -> Iterator[str]:
    """A namespace of this test's own, deleted afterwards (with everything in it)."""
    name = f"sb-test-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name, namespace=None)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", namespace=None, check=False)
