"""The operator tools and the load profile on the real cluster, and the live dev/prod diff.

- `somabrain migrate import --to prod` of the bundle that `make test`'s dev phase exported from the compose stack
  (SOMABRAIN_DEV_BUNDLE), then `migrate verify`: equal row counts and checksums, table by table;
- `somabrain rotate jwt-key --add` then `--retire`: tokens of both keys accepted during the overlap, only the new
  key's afterwards (through the TLS ingress); the original key is put back at the end;
- `python -m load run --env prod --profile smoke`: locust through a port-forward, the pods sampled on the cluster,
  the verdict and the plots written;
- `python -m conformance diff` of the dev report (SOMABRAIN_DEV_REPORT, from the same `make test`) and a prod run.

The dev artefacts come from the compose stack, which cannot run beside the cluster here (both want
127.0.0.1:9999); `make test` writes them before it stops the stack. A test that needs one fails, naming the
command, when it is missing: it is never skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from load.tokens import claims, load_private_key, mint
from ops import pg
from targets.kube import KubeTarget
from tests.cluster.live import (
    CONTEXT,
    NAMESPACE,
    REPO,
    VENV_BIN,
    ingress,
    kubectl,
    port_forward,
    prod_conformance,
    service_account_kubeconfig,
    somabrain,
)

pytestmark = pytest.mark.cluster

ISSUER, AUDIENCE = "production-issuer", "somabrain-api"  # k8s/base/configmaps.yaml
DEV_KEY = REPO / ".run" / "jwt" / "jwt_priv.pem"  # the dev cluster's JWT key (scripts/dev_up.sh --kind-secrets)
TABLES = ("somabrain.audit_events", "somabrain.memory_index", "somabrain.outbox", "somamemory.memories",
          "somamemory.tenant_changes", "somamemory.tombstones")


def dev_artefact(variable: str, what: str) -> Path:
    value = os.environ.get(variable)
    if not value or not Path(value).exists():
        pytest.fail(f"{variable}={value or '(unset)'}: needs {what} from the compose stack; `make test` writes it "
                    "in its dev phase (by hand: make up && make conformance && make dev-bundle)")
    return Path(value)


def token(key: rsa.RSAPrivateKey, tenant: str, roles: tuple[str, ...] = ("reader", "writer")) -> str:
    return mint(key, claims(issuer=ISSUER, audience=AUDIENCE, subject="cluster-test", tenant=tenant, roles=roles,
                            lifetime=3600))


def recall_status(key: rsa.RSAPrivateKey) -> int:
    status, _ = ingress("POST", "/recall", {"query": "anything", "top_k": 1}, token(key, "rotation-t"))
    return status


# --- migration ----------------------------------------------------------------------------------------------
def test_migration_from_dev_into_prod(healthy: subprocess.CompletedProcess[str]) -> None:
    bundle = dev_artefact("SOMABRAIN_DEV_BUNDLE", "the bundle of `somabrain migrate export --from dev`")
    manifest = json.loads((bundle / "manifest.json").read_text())
    # Import goes into a fresh environment: empty the tables the conformance run has written to (the services
    # created the schema; their rows are test traffic).
    prod = KubeTarget(context=CONTEXT)
    pg.psql(prod, f"TRUNCATE {', '.join(TABLES)};").check("TRUNCATE")
    imported = somabrain("migrate", "import", "--to", "prod", "--kube-context", CONTEXT, "--from", str(bundle))
    print(imported.stdout[-2000:])
    assert imported.returncode == 0, imported.stdout[-3000:] + imported.stderr[-2000:]
    verified = somabrain("migrate", "verify", "--on", "prod", "--kube-context", CONTEXT, "--from", str(bundle))
    print(verified.stdout[-2000:])
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    # The tool's own verdict above, and the figures themselves: per table, the prod count:checksum of its rows
    # equals the dev export's.
    wanted = {f"{t['schema']}.{t['table']}": t["checksum"] for t in manifest["postgres"]["tables"]}
    seen = {name: pg.query(prod, pg.checksum_sql(*name.split(".")))[0][0] for name in wanted}
    print("migrated (rows:checksum):", json.dumps(seen, sort_keys=True))
    assert seen == wanted
    assert set(wanted) == set(TABLES) and sum(int(v.split(":")[0]) for v in seen.values()) > 0, wanted


# --- JWT key rotation ---------------------------------------------------------------------------------------
@pytest.fixture
def new_key(tmp_path: Path) -> Iterator[tuple[rsa.RSAPrivateKey, Path]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "new_pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    yield key, public
    # Put the dev key back (the other tests and `tilt up` sign with it): add it, retire the rest.
    original = tmp_path / "dev_pub.pem"
    original.write_bytes(load_private_key(DEV_KEY).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for step in (["--add", str(original)], ["--retire"]):
        run = somabrain("rotate", "jwt-key", "--env", "prod", *step, "--kube-context", CONTEXT)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


@contextmanager
def answers_through_the_ingress() -> Iterator[list[str]]:
    """Poll GET /healthz through the ingress while the block runs: the answers that were not 200."""
    bad: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                status, body = ingress("GET", "/healthz")
            except OSError as exc:
                bad.append(f"{type(exc).__name__}: {exc}")
            else:
                if status != 200:
                    bad.append(f"{status} {str(body)[:100]}")
            stop.wait(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield bad
    finally:
        stop.set()
        thread.join(timeout=60)


def test_jwt_key_rotation_keeps_both_keys_valid_during_the_overlap(
        healthy: subprocess.CompletedProcess[str], new_key: tuple[rsa.RSAPrivateKey, Path]) -> None:
    """--add, then --retire, each a rolling restart of the API: the service answers throughout (through the
    ingress, as users reach it), tokens of both keys work in the overlap, and only the new key's afterwards."""
    old, (new, new_public) = load_private_key(DEV_KEY), new_key
    assert (recall_status(old), recall_status(new)) == (200, 401)

    with answers_through_the_ingress() as failed:
        added = somabrain("rotate", "jwt-key", "--env", "prod", "--add", str(new_public), "--kube-context", CONTEXT)
    print(added.stdout[-1500:])
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-2000:]
    assert failed == [], f"the API did not answer during the rolling restart: {failed[:5]}"
    assert (recall_status(old), recall_status(new)) == (200, 200)

    retired = somabrain("rotate", "jwt-key", "--env", "prod", "--retire", "--kube-context", CONTEXT)
    print(retired.stdout[-1500:])
    assert retired.returncode == 0, retired.stdout[-3000:] + retired.stderr[-2000:]
    assert (recall_status(old), recall_status(new)) == (401, 200)


# --- load -----------------------------------------------------------------------------------------------------
def test_load_smoke_samples_the_pods_on_the_cluster(healthy: subprocess.CompletedProcess[str],
                                                    tmp_path: Path) -> None:
    report = tmp_path / "load"
    with port_forward("svc/somabrain", 9696) as port:
        run = subprocess.run([str(VENV_BIN / "python"), "-m", "load", "run", "--env", "prod", "--profile", "smoke",
                              "--duration", "40", "--kube-context", CONTEXT, "--endpoint", f"http://127.0.0.1:{port}",
                              "--jwt-private-key", str(DEV_KEY), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
                              "--report-dir", str(report)], cwd=REPO, capture_output=True, text=True, timeout=600,
                             check=False)
    print(run.stdout[-3000:])
    verdict = json.loads((report / "verdict.json").read_text())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert verdict["run"]["env"] == "prod" and verdict["run"]["sampler"] == "kubelet summary"
    workloads = {name.split("/")[0] for name in verdict["workloads"]}
    assert workloads == {"somabrain", "somamemory", "sb-redis", "sb-opa", "postgres"}, workloads
    for name, workload in verdict["workloads"].items():
        assert workload["memory_peak_share"] is not None and workload["memory_peak_share"] > 0, (name, workload)
    assert len(verdict["plots"]) == len(verdict["workloads"])
    assert all((report / plot).stat().st_size > 0 for plot in verdict["plots"])


# --- the live diff --------------------------------------------------------------------------------------------
def test_live_diff_of_the_dev_and_prod_reports(healthy: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    dev = dev_artefact("SOMABRAIN_DEV_REPORT", "the dev conformance report (`make conformance`)")
    prod = tmp_path / "prod.json"
    run = prod_conformance(report=prod)
    assert run.returncode == 0, run.stdout[-4000:]
    diff = subprocess.run([str(VENV_BIN / "python"), "-m", "conformance", "diff", str(dev), str(prod)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    print(diff.stdout[-1500:])
    assert diff.returncode == 0, diff.stdout[-5000:] + diff.stderr[-1000:]
    assert "parity holds: 0 drift, 0 stale exception(s)" in diff.stdout


def test_the_suite_runs_as_the_namespace_scoped_identity(healthy: subprocess.CompletedProcess[str],
                                                        tmp_path: Path) -> None:
    """The Role of k8s/base/rbac.yaml is enough: the whole prod suite passes with the token of ServiceAccount
    somabrain-conformance, which may not read Namespaces or anything outside somabrain-prod."""
    who = f"system:serviceaccount:{NAMESPACE}:somabrain-conformance"
    assert kubectl("auth", "can-i", "list", "namespaces", "--as", who, check=False).stdout.strip() == "no"
    kubeconfig = service_account_kubeconfig(NAMESPACE, "somabrain-conformance", tmp_path)
    report = tmp_path / "prod-sa.json"
    run = prod_conformance(report=report, kubeconfig=kubeconfig)
    assert run.returncode == 0, run.stdout[-5000:]
    statuses = {c["status"] for c in json.loads(report.read_text())["checks"]}
    assert statuses == {"passed"}, statuses


# --- Postgres password rotation -------------------------------------------------------------------------------
def test_postgres_password_rotation_on_prod(healthy: subprocess.CompletedProcess[str]) -> None:
    """A new password for the apps' role, the Secret updated, both apps rolled: the service answers throughout,
    and a memory written afterwards is stored in Postgres and recalled (the apps connect with the new password)."""
    def password() -> str:
        return kubectl("get", "secret", "somabrain-postgres-app", "-o", "jsonpath={.data.POSTGRES_PASSWORD}").stdout

    before = password()
    with answers_through_the_ingress() as failed:
        run = somabrain("rotate", "postgres-password", "--env", "prod", "--kube-context", CONTEXT)
    print(run.stdout[-1500:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert failed == [], f"the API did not answer during the rolling restart: {failed[:5]}"
    assert password() != before
    key = load_private_key(DEV_KEY)
    status, stored = ingress("POST", "/remember", {"content": "written after the password rotation"},
                             token(key, "pg-rotation-t"))
    assert status == 201, stored
    status, found = ingress("POST", "/recall", {"query": "written after the password rotation", "top_k": 1},
                            token(key, "pg-rotation-t"))
    assert status == 200 and [m["id"] for m in found["memory"]] == [stored["id"]], found
