"""The dev loop on the real local cluster (`make cluster-test`).

`tilt ci` deploys the Tiltfile to context somabrain-local: the stand-in images and somabrain are built here and
pushed to the cluster's registry, every workload becomes healthy, and the API answers ready through the ingress
(https://somabrain.internal:9999, Traefik, NetworkPolicies enforced). Then the conformance suite runs against it
(`pytest conformance/ --env prod`, the API checks through the TLS ingress). `tilt down` removes it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ops.cluster_canary import HOST, https_get
from tests.cluster.live import CONTEXT, REPO, VENV_BIN, kubectl, prod_conformance, toolchain_bin
from tests.helpers.role_probe import ROLE_PROBE, runtime_role

pytestmark = pytest.mark.cluster


def https_health() -> dict[str, object]:
    status, body, _ = https_get(("127.0.0.1", 9999), "/health", REPO / "infra" / "tls" / f"{HOST}.crt")
    assert status.startswith("HTTP/1.1 200"), status
    return dict(json.loads(body))


def test_tilt_ci_brings_every_workload_up(healthy: subprocess.CompletedProcess[str]) -> None:
    out = healthy.stdout + healthy.stderr
    # The evidence in CI's log: each resource's last Ready line and tilt ci's verdict.
    print("\n".join(line for line in out.splitlines() if "Ready" in line or "SUCCESS" in line)[-3000:])
    assert "SUCCESS. All workloads are healthy." in out


def test_the_api_is_ready_through_the_ingress(healthy: subprocess.CompletedProcess[str]) -> None:
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


@pytest.mark.parametrize("app", ["somabrain", "somamemory"])
def test_the_apps_are_the_runtime_role_in_the_cluster(healthy: subprocess.CompletedProcess[str], app: str) -> None:
    """Issue 14 item 12 on the cluster: the pod's db-init made the runtime role (Secret somabrain-postgres-app), and
    the app, logged in as it, may read and write but change nothing; the app's container never sees the
    superuser's Secret."""
    answers = json.loads(kubectl("exec", f"deploy/{app}", "-c", app, "--", "python3", "-c", ROLE_PROBE).stdout)
    user = kubectl("get", "secret", "somabrain-postgres-app", "-o", "jsonpath={.data.POSTGRES_USER}").stdout
    assert answers == runtime_role(base64.b64decode(user).decode()), answers
    print(f"{app}: {answers}")
    logs = kubectl("logs", f"deploy/{app}", "-c", "db-init").stdout
    assert "password set, rights on somabrain, somamemory granted" in logs, logs


def by_dimension(report: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for check in json.loads(report.read_text())["checks"]:
        per = counts.setdefault(check["dimension"], {})
        per[check["status"]] = per.get(check["status"], 0) + 1
    return counts


def test_prod_conformance_passes_live(healthy: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """Every check passes, none is skipped (a check about what prod does not have is not collected), and every
    dimension is there."""
    report = tmp_path / "prod.json"
    run = prod_conformance(report=report)
    assert run.returncode == 0, run.stdout[-6000:]
    counts = by_dimension(report)
    print("prod conformance by dimension:", json.dumps(counts, sort_keys=True))
    table = next(c for c in json.loads(report.read_text())["checks"] if c["id"] == "netpol/truth_table")
    print(table["observed"]["table"])
    assert {d for d, per in counts.items() if per.get("passed")} >= {"api", "dns", "netpol", "readiness", "tls"}
    assert all(set(per) == {"passed"} for per in counts.values()), counts


def test_the_seeds_networkpolicy_is_caught_live(healthy: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """The guide's NetworkPolicy (egress only inside somabrain-prod), deployed instead of ours, blocks cluster DNS
    (kube-system): the DNS checks must fail, saying so. Ours are put back afterwards."""
    backup = tmp_path / "policies.yaml"
    backup.write_text(kubectl("get", "networkpolicy", "-o", "yaml").stdout)
    try:
        kubectl("delete", "networkpolicy", "--all")
        # The seed's policy selects its namespace by a `name` label, as the guide deploys it.
        kubectl("label", "namespace", "somabrain-prod", "name=somabrain-prod", "--overwrite")
        kubectl("apply", "-f", str(REPO / "tests" / "deploy" / "fixtures" / "guide_networkpolicy.yaml"))
        run = prod_conformance("-m", "dns", timeout=600)
    finally:
        kubectl("delete", "networkpolicy", "somabrain-isolation", "--ignore-not-found")
        kubectl("label", "namespace", "somabrain-prod", "name-", check=False)
        kubectl("apply", "-f", str(backup))
    assert run.returncode == 1, run.stdout[-3000:]
    print("\n".join(line for line in run.stdout.splitlines() if "does not resolve" in line)[:1500])
    assert "does not resolve" in run.stdout and "name resolution" in run.stdout, run.stdout[-3000:]


def _somabrain_image() -> str:
    return kubectl("get", "deployment", "somabrain", "-o",
                   "jsonpath={.spec.template.spec.containers[?(@.name=='somabrain')].image}").stdout.strip()


def rollout(image: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "somabrain"), "rollout", image, "--kube-context", CONTEXT,
                           "--timeout", "240"], cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)


def test_rollout_of_a_new_image_and_the_rollback_of_a_broken_one(healthy: subprocess.CompletedProcess[str]) -> None:
    """`somabrain rollout` on the real cluster: the running image under a new tag in the cluster's registry rolls
    out and passes the readiness checks; an image that cannot be pulled fails and is rolled back."""
    current = _somabrain_image()
    fresh = f"127.0.0.1:5000/somabrain:rollout-{int(time.time())}"
    subprocess.run(["docker", "pull", "-q", current], check=True, capture_output=True)
    subprocess.run(["docker", "tag", current, fresh], check=True, capture_output=True)
    subprocess.run(["docker", "push", "-q", fresh], check=True, capture_output=True)
    good = rollout(fresh)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-1000:]
    print(good.stdout[-1500:])
    assert f"rolled out {fresh}" in good.stdout and _somabrain_image() == fresh

    broken = rollout("127.0.0.1:5000/somabrain:does-not-exist")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-1000:]
    print(broken.stdout[-1500:])
    assert "ROLLOUT FAILED" in broken.stdout and "rolled back to the previous image(s)" in broken.stdout
    assert _somabrain_image() == fresh


def _serving_pod(timeout: float = 180) -> tuple[str, str]:
    """(pod name, image) of the API's one pod, once its rollout has finished and no older pod is left: `tilt up`
    first redeploys its own image when another (a test's rollout) is in the Deployment."""
    deadline = time.monotonic() + timeout
    while True:
        kubectl("rollout", "status", "deployment/somabrain", "--timeout", f"{int(timeout)}s")
        out = kubectl("get", "pods", "-l", "app=somabrain", "-o", "jsonpath={range .items[*]}{.metadata.name} "
                      "{.spec.containers[0].image} {.metadata.deletionTimestamp}{'\\n'}{end}").stdout
        pods = [line.split() for line in out.splitlines() if line.strip()]
        if len(pods) == 1 and len(pods[0]) == 2:
            return pods[0][0], pods[0][1]
        assert time.monotonic() < deadline, f"the API's pods did not settle to one: {pods}"
        time.sleep(2)


def test_live_update_serves_a_saved_change_without_a_rebuild(healthy: subprocess.CompletedProcess[str]) -> None:
    """`tilt up`: a change saved under brain/ is synced into the running pod, whose --reload restarts the app:
    scripts/loop_latency.py times save-to-serving over 10 rounds. The same pod, with the same image, serves every
    round: nothing was rebuilt or redeployed."""
    env = {**os.environ, "TILT_DISABLE_ANALYTICS": "1", "PATH": f"{toolchain_bin()}:{os.environ.get('PATH', '')}"}
    up = subprocess.Popen([f"{toolchain_bin()}/tilt", "up", "--stream", "--port", "10351", "--context", CONTEXT],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:  # `tilt wait` needs tilt up's API server and the resource, which take a moment to appear
            ready = subprocess.run([f"{toolchain_bin()}/tilt", "wait", "--port", "10351",
                                    "--for=condition=UpToDate", "uiresource/somabrain", "--timeout", "300s"], env=env,
                                   capture_output=True, text=True, timeout=330, check=False)
            if ready.returncode == 0:
                ready = subprocess.run([f"{toolchain_bin()}/tilt", "wait", "--port", "10351",
                                        "--for=condition=Ready", "uiresource/somabrain", "--timeout", "300s"],
                                       env=env, capture_output=True, text=True, timeout=330, check=False)
            starting = "No tilt apiserver found" in ready.stderr or "not found" in ready.stderr
            if ready.returncode == 0 or not starting \
                    or time.monotonic() > deadline or up.poll() is not None:
                break
            time.sleep(1)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        before = _serving_pod()
        # Through Tilt's own port-forward of 9696 (the Tiltfile's), as a user of `tilt up` reaches the API: it
        # reconnects by itself when the app restarts. (A plain `kubectl port-forward` can exit on the refused
        # connection of a restart: seen once in CI as "round 6: new code not serving after 30s".)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:9696/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "tilt up's port-forward 127.0.0.1:9696 did not answer in 60 s"
            time.sleep(1)
        run = subprocess.run([str(VENV_BIN / "python"), "scripts/loop_latency.py", "--url", "http://127.0.0.1:9696",
                              "-n", "10"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
        print(run.stdout[-600:])
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "save -> serving over 10 rounds: p50" in run.stdout
        assert _serving_pod() == before
    finally:
        up.terminate()
        up.wait(timeout=60)
        subprocess.run(["git", "checkout", "--", "brain/build.py"], cwd=REPO, check=False)
