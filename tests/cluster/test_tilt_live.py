"""The dev loop on the real local cluster (SOMABRAIN_CLUSTER=1; `make cluster-test` sets it).

`tilt ci` deploys the Tiltfile to context somabrain-local: the stand-in images and somabrain are built here and
pushed to the cluster's registry, every workload becomes healthy, and the API answers ready through the ingress
(https://somabrain.internal:9999, Traefik, NetworkPolicies enforced). Then the conformance suite runs against it
(`pytest conformance/ --env prod`, the API through a port-forward, as Tilt gives one). `tilt down` removes it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.cluster_canary import HOST, https_get

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "somabrain-local"

pytestmark = pytest.mark.skipif(os.environ.get("SOMABRAIN_CLUSTER") != "1",
                                reason="needs the local cluster: run `make cluster-test`")


def toolchain_bin() -> str:
    """Where `make cluster` linked the pinned tilt and kubectl (kubectl of the cluster's own version)."""
    return subprocess.run([str(REPO / "scripts" / "cluster" / "toolchain.sh"), "bindir"], capture_output=True,
                          text=True, check=True).stdout.strip()


KUBECTL = f"{toolchain_bin()}/kubectl"


def tilt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The pinned Tilt of the cluster toolchain, with analytics off."""
    bindir = toolchain_bin()
    env = {**os.environ, "TILT_DISABLE_ANALYTICS": "1", "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    return subprocess.run([f"{bindir}/tilt", *args, "--context", CONTEXT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def deployed() -> Iterator[subprocess.CompletedProcess[str]]:
    subprocess.run([str(REPO / "scripts" / "setup_ingress_tls.sh")], check=True, timeout=120, capture_output=True)
    run = tilt("ci", "--timeout", "20m", timeout=1500)
    try:
        yield run
    finally:
        tilt("down", timeout=300)


def https_health() -> dict[str, object]:
    status, body, _ = https_get(("127.0.0.1", 9999), "/health", REPO / "infra" / "tls" / f"{HOST}.crt")
    assert status.startswith("HTTP/1.1 200"), status
    return dict(json.loads(body))


def test_tilt_ci_brings_every_workload_up(deployed: subprocess.CompletedProcess[str]) -> None:
    assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
    assert "SUCCESS. All workloads are healthy." in deployed.stdout + deployed.stderr


def test_the_api_is_ready_through_the_ingress(deployed: subprocess.CompletedProcess[str]) -> None:
    assert deployed.returncode == 0
    # Traefik learns of new endpoints a moment after the pods turn Ready (503 meanwhile): give it up to 60 s.
    deadline = time.monotonic() + 60
    while True:
        try:
            health = https_health()
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert health["ready"] is True, health
    assert health["predictor_provider"] == "mahal" and health["strict_real"] is True


def test_prod_conformance_passes_live(deployed: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert deployed.returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen([KUBECTL, "--context", CONTEXT, "-n", "somabrain-prod", "port-forward",
                                "svc/somabrain", f"{port}:9696"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        report = tmp_path / "prod.json"
        run = subprocess.run([str(REPO / ".venv" / "bin" / "pytest"), "conformance/", "--env", "prod",
                              "--kube-context", CONTEXT, "--base-url", f"http://127.0.0.1:{port}",
                              "--report-json", str(report), "-q", "-p", "no:cacheprovider"],
                             cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    finally:
        forward.terminate()
        forward.wait(timeout=10)
    assert run.returncode == 0, run.stdout[-6000:]
    checks = json.loads(report.read_text())["checks"]
    by_dimension: dict[str, int] = {}
    for check in checks:
        outcome = check.get("outcome") or check.get("status")
        dimension = (check.get("id") or check.get("name", "?")).split("/")[0]
        if outcome == "passed":
            by_dimension[dimension] = by_dimension.get(dimension, 0) + 1
        else:
            # The only skips allowed: what the seed puts outside the cluster in prod (Kafka, Prometheus).
            assert outcome == "skipped" and "outside the cluster" in json.dumps(check), check
    assert {d for d, n in by_dimension.items() if n} >= {"api", "dns", "netpol", "readiness", "tls"}, by_dimension


def test_the_seeds_networkpolicy_is_caught_live(deployed: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """The guide's NetworkPolicy (egress only inside somabrain-prod), deployed instead of ours, blocks cluster DNS
    (kube-system): the DNS checks must fail, saying so. Ours are put back afterwards."""
    assert deployed.returncode == 0
    kubectl = [KUBECTL, "--context", CONTEXT, "-n", "somabrain-prod"]
    backup = tmp_path / "policies.yaml"
    backup.write_text(subprocess.run([*kubectl, "get", "networkpolicy", "-o", "yaml"], capture_output=True,
                                     text=True, check=True).stdout)
    try:
        subprocess.run([*kubectl, "delete", "networkpolicy", "--all"], check=True, capture_output=True)
        # The seed's policy selects its namespace by a `name` label, as the guide deploys it.
        subprocess.run([*kubectl, "label", "namespace", "somabrain-prod", "name=somabrain-prod", "--overwrite"],
                       check=True, capture_output=True)
        seed = REPO / "tests" / "deploy" / "fixtures" / "guide_networkpolicy.yaml"
        subprocess.run([*kubectl, "apply", "-f", str(seed)], check=True, capture_output=True)
        run = subprocess.run([str(REPO / ".venv" / "bin" / "pytest"), "conformance/", "--env", "prod", "-m", "dns",
                              "--kube-context", CONTEXT, "-q", "-p", "no:cacheprovider"],
                             cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    finally:
        subprocess.run([*kubectl, "delete", "networkpolicy", "somabrain-isolation", "--ignore-not-found"],
                       check=True, capture_output=True)
        subprocess.run([*kubectl, "label", "namespace", "somabrain-prod", "name-"], check=False, capture_output=True)
        subprocess.run([*kubectl, "apply", "-f", str(backup)], check=True, capture_output=True)
    assert run.returncode == 1, run.stdout[-3000:]
    assert "does not resolve" in run.stdout and "name resolution" in run.stdout, run.stdout[-3000:]


def _somabrain_image() -> str:
    out = subprocess.run([KUBECTL, "--context", CONTEXT, "-n", "somabrain-prod", "get", "deployment", "somabrain",
                          "-o", "jsonpath={.spec.template.spec.containers[?(@.name=='somabrain')].image}"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def rollout(image: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv" / "bin" / "somabrain"), "rollout", image, "--kube-context", CONTEXT,
                           "--timeout", "240"], cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)


def test_rollout_of_a_new_image_and_the_rollback_of_a_broken_one(deployed: subprocess.CompletedProcess[str]) -> None:
    """`somabrain rollout` on the real cluster: the running image under a new tag in the cluster's registry rolls
    out and passes the readiness checks; an image that cannot be pulled fails and is rolled back."""
    assert deployed.returncode == 0
    current = _somabrain_image()
    fresh = f"127.0.0.1:5000/somabrain:rollout-{int(time.time())}"
    subprocess.run(["docker", "pull", "-q", current], check=True, capture_output=True)
    subprocess.run(["docker", "tag", current, fresh], check=True, capture_output=True)
    subprocess.run(["docker", "push", "-q", fresh], check=True, capture_output=True)
    good = rollout(fresh)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-1000:]
    assert f"rolled out {fresh}" in good.stdout and _somabrain_image() == fresh

    broken = rollout("127.0.0.1:5000/somabrain:does-not-exist")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-1000:]
    assert "ROLLOUT FAILED" in broken.stdout and "rolled back to the previous image(s)" in broken.stdout
    assert _somabrain_image() == fresh
