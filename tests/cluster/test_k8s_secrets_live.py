"""scripts/k8s_secrets.sh against the real local cluster, each test in a scratch namespace of its own: it creates
the Secrets that are missing (their contents read back with kubectl), keeps those that exist, replaces them only
with --force, writes nothing with --dry-run, generates a password when no env file is given, and a refused write
(a ServiceAccount's token without the right to create Secrets) is exit 1 with the cluster's reason on one line.

The script runs the cluster's own kubectl through a shim that only logs its argv (tmp_path/argv.log): the
credentials must only ever reach kubectl on stdin, never on a command line. What needs no cluster (bad input, no
kubectl, no cluster) is in tests/deploy/test_k8s_secrets.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance.expectations import OPERATOR_SECRETS
from tests.cluster.live import CONTEXT, REPO, kubectl, service_account_kubeconfig, toolchain_bin

pytestmark = pytest.mark.cluster

SCRIPT = REPO / "scripts" / "k8s_secrets.sh"
PG, APP, JWT = "somabrain-postgres", "somabrain-postgres-app", "somabrain-secrets"
PASSWORD = "0123456789abcdef0123456789abcdef"
APP_PASSWORD = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
OTHER_PASSWORD = "fedcba9876543210fedcba9876543210"


def public_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def env_file(path: Path, password: str, user: str = "somabrain", db: str = "somabrain") -> Path:
    path.write_text(f"# as scripts/dev_up.sh writes it\nSOMABRAIN_HOST_PORT=9696\nPOSTGRES_USER={user}\n"
                    f"POSTGRES_PASSWORD={password}\nPOSTGRES_DB={db}\nPOSTGRES_APP_USER=somabrain_app\n"
                    f"POSTGRES_APP_PASSWORD={APP_PASSWORD}\n")
    return path


class Script:
    """scripts/k8s_secrets.sh, run with the cluster's kubectl (through an argv-logging shim)."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "argv.log"
        self.kubectl = tmp_path / "kubectl"
        self.kubectl.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "{self.log}"\n'
                                f'exec "{toolchain_bin()}/kubectl" "$@"\n')
        self.kubectl.chmod(0o755)
        self.log.touch()

    def __call__(self, namespace: str, *args: str, context: str = CONTEXT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), "--context", context, "--namespace", namespace, *args],
                              env={**os.environ, "KUBECTL": str(self.kubectl)}, capture_output=True, text=True,
                              timeout=180, check=False)

    def argv(self) -> str:
        return self.log.read_text()


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return Script(tmp_path)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return public_key(tmp_path / "jwt_pub.pem")


@pytest.fixture
def env(tmp_path: Path) -> Path:
    return env_file(tmp_path / ".env.local", PASSWORD)


def secret(namespace: str, name: str) -> dict[str, Any] | None:
    found = kubectl("get", "secret", name, "--ignore-not-found", "-o", "json", namespace=namespace).stdout
    return json.loads(found) if found.strip() else None


def values(namespace: str, name: str) -> dict[str, str]:
    obj = secret(namespace, name)
    assert obj is not None, f"Secret {namespace}/{name} does not exist"
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def version(namespace: str, name: str) -> str:
    obj = secret(namespace, name)
    assert obj is not None, f"Secret {namespace}/{name} does not exist"
    return str(obj["metadata"]["resourceVersion"])


def managed(namespace: str) -> list[str]:
    """The Secrets of the namespace that the script made."""
    return kubectl("get", "secrets", "-l", "app.kubernetes.io/managed-by=k8s_secrets.sh", "-o", "name",
                   namespace=namespace).stdout.split()


def namespace_exists(name: str) -> bool:
    return bool(kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name", namespace=None).stdout.strip())


@pytest.fixture
def absent_namespace(scratch_namespace: str) -> Iterator[str]:
    """A namespace name that does not exist (yet): deleted afterwards if a test made it."""
    name = f"{scratch_namespace}-new"
    assert not namespace_exists(name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", namespace=None, check=False)


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == "", run.stderr
    return run.stdout


def test_creates_the_missing_secrets_with_the_given_values(script: Script, scratch_namespace: str, env: Path,
                                                           key: Path) -> None:
    ns = scratch_namespace
    out = ok(script(ns, "--from-env-file", str(env), "--jwt-public-key", str(key)))
    assert f"created Secret {PG} (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: from {env})" in out
    assert f"created Secret {JWT} (jwt_pub.pem from {key})" in out
    assert "namespace" not in out.split("\n", 1)[1]  # it exists: not created again
    assert values(ns, PG) == {"POSTGRES_USER": "somabrain", "POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": "somabrain"}
    assert f"created Secret {APP} (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: user somabrain_app, password " \
           f"from {env}, database somabrain)" in out
    assert values(ns, APP) == {"POSTGRES_USER": "somabrain_app", "POSTGRES_PASSWORD": APP_PASSWORD,
                               "POSTGRES_DB": "somabrain"}
    assert values(ns, JWT) == {"jwt_pub.pem": key.read_text()}
    # What the parity gate treats as provided by the operator (the API server sorts the keys).
    assert {name: set(values(ns, name)) for name in OPERATOR_SECRETS} == {
        name: set(keys) for name, keys in OPERATOR_SECRETS.items()}
    for name in OPERATOR_SECRETS:
        obj = secret(ns, name)
        assert obj is not None and obj["type"] == "Opaque"
        assert obj["metadata"]["labels"] == {"app.kubernetes.io/part-of": "somabrain",
                                             "app.kubernetes.io/managed-by": "k8s_secrets.sh"}
    # The credentials only ever travel on stdin.
    assert PASSWORD not in script.argv() and APP_PASSWORD not in script.argv()
    assert "BEGIN PUBLIC KEY" not in script.argv()
    assert "create -f -" in script.argv()


def test_env_file_user_and_database_are_used(script: Script, scratch_namespace: str, tmp_path: Path,
                                             key: Path) -> None:
    custom = env_file(tmp_path / "custom.env", PASSWORD, user="brain_app", db="brain_db")
    ok(script(scratch_namespace, "--from-env-file", str(custom), "--jwt-public-key", str(key), "--quiet"))
    assert values(scratch_namespace, PG) == {"POSTGRES_USER": "brain_app", "POSTGRES_PASSWORD": PASSWORD,
                                             "POSTGRES_DB": "brain_db"}


def test_a_second_run_keeps_what_exists(script: Script, scratch_namespace: str, env: Path, key: Path,
                                        tmp_path: Path) -> None:
    ns = scratch_namespace
    ok(script(ns, "--from-env-file", str(env), "--jwt-public-key", str(key)))
    before = {name: (values(ns, name), version(ns, name)) for name in OPERATOR_SECRETS}
    other_env = env_file(tmp_path / "other.env", OTHER_PASSWORD)
    other_key = public_key(tmp_path / "other_pub.pem")
    out = ok(script(ns, "--from-env-file", str(other_env), "--jwt-public-key", str(other_key)))
    assert f"kept Secret {PG} (it exists; --force replaces it)" in out and f"kept Secret {JWT}" in out
    assert "created" not in out
    # No inputs at all: nothing is needed when both exist, and --quiet prints nothing.
    assert ok(script(ns, "--quiet")) == ""
    assert {name: (values(ns, name), version(ns, name)) for name in OPERATOR_SECRETS} == before
    assert " replace " not in script.argv()


def test_force_replaces_the_existing_secrets(script: Script, scratch_namespace: str, env: Path, key: Path,
                                             tmp_path: Path) -> None:
    ns = scratch_namespace
    ok(script(ns, "--jwt-public-key", str(key)))  # a generated password
    generated, pg_version, jwt_version = values(ns, PG)["POSTGRES_PASSWORD"], version(ns, PG), version(ns, JWT)
    new_key = public_key(tmp_path / "new_pub.pem")
    refused = script(ns, "--from-env-file", str(env), "--force")  # --force without the key: nothing half-done
    assert refused.returncode == 2 and refused.stderr == (
        f"k8s_secrets.sh: Secret {JWT} is to be replaced (--force): give --jwt-public-key FILE (the PEM public key "
        "that verifies the API's JWTs)\n")
    assert values(ns, PG)["POSTGRES_PASSWORD"] == generated and version(ns, PG) == pg_version
    out = ok(script(ns, "--from-env-file", str(env), "--jwt-public-key", str(new_key), "--force"))
    assert f"replaced Secret {PG}" in out and f"replaced Secret {JWT}" in out
    assert values(ns, PG)["POSTGRES_PASSWORD"] == PASSWORD != generated
    assert values(ns, JWT) == {"jwt_pub.pem": new_key.read_text()}
    assert version(ns, PG) != pg_version and version(ns, JWT) != jwt_version
    assert PASSWORD not in script.argv() and generated not in script.argv()


def test_dry_run_writes_nothing(script: Script, scratch_namespace: str, absent_namespace: str, env: Path,
                                key: Path, tmp_path: Path) -> None:
    ns = scratch_namespace
    out = ok(script(ns, "--from-env-file", str(env), "--jwt-public-key", str(key), "--dry-run"))
    assert f"context {CONTEXT}, namespace {ns} (dry run: nothing is changed)" in out
    assert f"would have created Secret {PG}" in out and f"would have created Secret {JWT}" in out
    assert managed(ns) == []
    # Over existing Secrets, with --force: it says what it would replace, and does not.
    ok(script(ns, "--jwt-public-key", str(key)))
    before = {name: (values(ns, name), version(ns, name)) for name in OPERATOR_SECRETS}
    out = ok(script(ns, "--from-env-file", str(env), "--jwt-public-key", str(public_key(tmp_path / "x.pem")),
                    "--force", "--dry-run"))
    assert f"would have replaced Secret {PG}" in out and f"would have replaced Secret {JWT}" in out
    assert {name: (values(ns, name), version(ns, name)) for name in OPERATOR_SECRETS} == before
    # A namespace that does not exist is not created either.
    out = ok(script(absent_namespace, "--jwt-public-key", str(key), "--dry-run"))
    assert f"would have created namespace {absent_namespace}" in out
    assert not namespace_exists(absent_namespace)
    assert " replace " not in script.argv()


def test_without_an_env_file_the_password_is_generated(script: Script, scratch_namespace: str, key: Path) -> None:
    out = ok(script(scratch_namespace, "--jwt-public-key", str(key)))
    assert f"created Secret {PG} (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: user and database somabrain, " \
           "a random password)" in out
    pg = values(scratch_namespace, PG)
    assert pg["POSTGRES_USER"] == "somabrain" and pg["POSTGRES_DB"] == "somabrain"
    password = pg["POSTGRES_PASSWORD"]
    assert len(password) == 32 and set(password) <= set("0123456789abcdef")  # 16 random bytes in hex: DSN-safe
    app = values(scratch_namespace, APP)
    assert app["POSTGRES_USER"] == "somabrain_app" and app["POSTGRES_DB"] == "somabrain"
    assert len(app["POSTGRES_PASSWORD"]) == 32 and app["POSTGRES_PASSWORD"] != password
    assert password not in script.argv()
    ok(script(scratch_namespace, "--jwt-public-key", str(key), "--force", "--quiet"))
    assert values(scratch_namespace, PG)["POSTGRES_PASSWORD"] not in (password, "")  # a new one each time


def test_a_missing_namespace_is_created(script: Script, absent_namespace: str, env: Path, key: Path) -> None:
    out = ok(script(absent_namespace, "--from-env-file", str(env), "--jwt-public-key", str(key)))
    assert f"created namespace {absent_namespace}" in out
    labels = json.loads(kubectl("get", "namespace", absent_namespace, "-o", "json", namespace=None).stdout)[
        "metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "somabrain"
    assert values(absent_namespace, PG)["POSTGRES_PASSWORD"] == PASSWORD
    assert values(absent_namespace, JWT) == {"jwt_pub.pem": key.read_text()}


def test_a_missing_jwt_secret_needs_the_key_and_nothing_is_half_done(script: Script, scratch_namespace: str,
                                                                     absent_namespace: str, env: Path) -> None:
    run = script(scratch_namespace, "--from-env-file", str(env))
    assert run.returncode == 2
    assert run.stderr == (f"k8s_secrets.sh: Secret {JWT} does not exist in {scratch_namespace}: give "
                          "--jwt-public-key FILE (the PEM public key that verifies the API's JWTs)\n")
    assert managed(scratch_namespace) == []  # not even somabrain-postgres
    run = script(absent_namespace, "--from-env-file", str(env))
    assert run.returncode == 2 and f"does not exist in {absent_namespace}" in run.stderr
    assert not namespace_exists(absent_namespace)  # not even the namespace


def new_service_account(namespace: str, account: str, directory: Path) -> Path:
    """A new ServiceAccount with no rights (yet), and a kubeconfig that acts as it."""
    kubectl("create", "serviceaccount", account, namespace=namespace)
    return service_account_kubeconfig(namespace, account, directory)


def test_a_refused_write_is_exit_1_with_the_clusters_reason(script: Script, scratch_namespace: str, env: Path,
                                                            key: Path, tmp_path: Path) -> None:
    """A ServiceAccount that may read Secrets and its own namespace but not create Secrets: the cluster refuses the
    first write, and the script says so on one line, with nothing created."""
    ns, account = scratch_namespace, "secrets-reader"
    config = new_service_account(ns, account, tmp_path)
    kubectl("create", "role", account, "--verb=get,list", "--resource=secrets,namespaces", namespace=ns)
    kubectl("create", "rolebinding", account, f"--role={account}", f"--serviceaccount={ns}:{account}", namespace=ns)
    who = f"system:serviceaccount:{ns}:{account}"
    assert kubectl("auth", "can-i", "create", "secrets", "--as", who, namespace=ns, check=False).stdout.strip() == "no"
    run = script(ns, "--kubeconfig", str(config), "--from-env-file", str(env), "--jwt-public-key", str(key),
                 context=account)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith(f"k8s_secrets.sh: could not create Secret {ns}/{PG}: Error from server "
                                 "(Forbidden)"), run.stderr
    assert f'User "{who}" cannot create resource "secrets"' in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stdout == f"k8s_secrets.sh: context {account}, namespace {ns}\n"
    assert managed(ns) == []


def test_a_namespace_scoped_identity_that_may_not_read_namespaces_creates_them(
        script: Script, scratch_namespace: str, env: Path, key: Path, tmp_path: Path) -> None:
    """As the somabrain-operator Role of k8s/base/rbac.yaml: Secrets may be read and created, Namespaces (cluster-
    scoped) not even read. The namespace is taken as there because its Secrets can be listed."""
    ns, account = scratch_namespace, "secrets-writer"
    config = new_service_account(ns, account, tmp_path)
    kubectl("create", "role", account, "--verb=get,list,create", "--resource=secrets", namespace=ns)
    kubectl("create", "rolebinding", account, f"--role={account}", f"--serviceaccount={ns}:{account}", namespace=ns)
    who = f"system:serviceaccount:{ns}:{account}"
    assert kubectl("auth", "can-i", "get", f"namespace/{ns}", "--as", who, namespace=None,
                   check=False).stdout.strip() == "no"
    run = script(ns, "--kubeconfig", str(config), "--from-env-file", str(env), "--jwt-public-key", str(key),
                 context=account)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(managed(ns)) == sorted(f"secret/{name}" for name in OPERATOR_SECRETS), managed(ns)


def test_an_identity_with_no_rights_is_refused_not_unreachable(script: Script, scratch_namespace: str, key: Path,
                                                               tmp_path: Path) -> None:
    """A ServiceAccount with no rights at all (not even to read its namespace): exit 1, and the message says the
    cluster refused, not that it cannot be reached."""
    ns, account = scratch_namespace, "nobody"
    config = new_service_account(ns, account, tmp_path)
    run = script(ns, "--kubeconfig", str(config), "--jwt-public-key", str(key), context=account)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith(f"k8s_secrets.sh: the cluster of context '{account}' refused to read namespace "
                                 f"{ns}: Error from server (Forbidden)"), run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stdout == "" and managed(ns) == []


def test_a_token_the_cluster_does_not_accept_is_refused_not_unreachable(script: Script, scratch_namespace: str,
                                                                        key: Path, tmp_path: Path) -> None:
    """A token the API server does not know (an expired one, say): exit 1, Unauthorized, on one line."""
    config = new_service_account(scratch_namespace, "stale", tmp_path)
    settings = json.loads(config.read_text())
    settings["users"][0]["user"]["token"] = "not-a-token-this-cluster-issued"
    config.write_text(json.dumps(settings))
    run = script(scratch_namespace, "--kubeconfig", str(config), "--jwt-public-key", str(key), context="stale")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith(f"k8s_secrets.sh: the cluster of context 'stale' refused to read namespace "
                                 f"{scratch_namespace}: "), run.stderr
    assert "(Unauthorized)" in run.stderr and run.stderr.count("\n") == 1
    assert run.stdout == "" and managed(scratch_namespace) == []
