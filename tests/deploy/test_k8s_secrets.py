"""scripts/k8s_secrets.sh: bad input is a one-line message and exit 2 before any cluster is asked; no cluster is a
one-line message and exit 1 (the real kubectl against a closed port); against a cluster that answers (the fake
kubectl, tests/deploy/fake_kubectl.py) it creates what is missing, keeps what exists, replaces only with --force,
and never passes a credential on a command line."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance.expectations import OPERATOR_SECRETS
from tests.deploy.conftest import REPO, run, tool

SCRIPT = REPO / "scripts" / "k8s_secrets.sh"
FAKE = Path(__file__).with_name("fake_kubectl.py")
PASSWORD = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(private, public) PEM files of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt_priv.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = tmp_path / "jwt_pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env.local"
    path.write_text(f"# as scripts/dev_up.sh writes it\nSOMABRAIN_HOST_PORT=9696\nPOSTGRES_USER=somabrain\n"
                    f"POSTGRES_PASSWORD={PASSWORD}\nPOSTGRES_DB=somabrain\n")
    return path


class FakeKube:
    """The fake kubectl's state file, and a way to run the script against it."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "kube.json"
        self.kubectl = tmp_path / "kubectl"
        self.kubectl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.kubectl.chmod(0o755)
        self.set(contexts=["fake"], reachable=True, refuse_writes=False, objects={}, calls=[])

    def set(self, **values: Any) -> None:
        state = json.loads(self.state.read_text()) if self.state.exists() else {}
        state.update(values)
        self.state.write_text(json.dumps(state))

    def get(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())  # type: ignore[no-any-return]

    def secret(self, name: str, namespace: str = "somabrain-prod") -> dict[str, str]:
        obj = self.get()["objects"][f"Secret/{namespace}/{name}"]
        return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}

    def writes(self) -> list[list[str]]:
        return [c for c in self.get()["calls"] if {"create", "replace"} & set(c)]

    def run(self, *args: str) -> Any:
        env = {**os.environ, "KUBECTL": str(self.kubectl), "FAKE_KUBECTL_STATE": str(self.state)}
        env.pop("KUBECONFIG", None)
        return run([str(SCRIPT), *args], env=env)


@pytest.fixture
def kube(tmp_path: Path) -> FakeKube:
    return FakeKube(tmp_path)


def test_help_names_the_secrets_and_their_keys() -> None:
    result = run([str(SCRIPT), "--help"])
    assert result.returncode == 0 and result.stderr == ""
    for name, keys in OPERATOR_SECRETS.items():
        assert name in result.stdout and all(k in result.stdout for k in keys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--context is required"),
        (["--context"], "--context needs a value"),
        (["--context", "--force"], "--context needs a value"),
        (["--context", "fake", "--bogus"], "unknown argument: --bogus"),
        (["--context", "fake", "--namespace", "Not_A_Name"], "is not a valid namespace name"),
        (["--context", "fake", "--from-env-file", "/nonexistent/.env.local"], "no such readable file"),
        (["--context", "fake", "--from-env-file", "{no_password}"], "has no POSTGRES_PASSWORD"),
        (["--context", "fake", "--from-env-file", "{bad_password}"], "break the API's Postgres DSN"),
        (["--context", "fake", "--jwt-public-key", "/nonexistent.pem"], "no such readable file"),
        (["--context", "fake", "--jwt-public-key", "{private}"], "is a private key: give its public half"),
        (["--context", "fake", "--jwt-public-key", "{junk}"], "is not a PEM public key"),
        (["--context", "fake", "--kubeconfig", "/nonexistent/kubeconfig"], "no such readable file"),
        (["--context", "elsewhere"], "context 'elsewhere' is not in the kubeconfig"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2_before_any_change(
    kube: FakeKube, tmp_path: Path, keys: tuple[Path, Path], args: list[str], message: str
) -> None:
    files = {"no_password": "POSTGRES_USER=somabrain\n", "bad_password": "POSTGRES_PASSWORD=p@ss/word\n",
             "junk": "not a key\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = {name: str(tmp_path / name) for name in files} | {"private": str(keys[0])}
    result = kube.run(*(a.format(**paths) for a in args))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("k8s_secrets.sh: "), result.stderr
    assert message in result.stderr
    assert kube.writes() == []


def test_a_missing_jwt_secret_needs_the_key_and_nothing_is_half_done(kube: FakeKube, env_file: Path) -> None:
    result = kube.run("--context", "fake", "--from-env-file", str(env_file))
    assert result.returncode == 2
    assert "Secret somabrain-secrets does not exist in somabrain-prod: give --jwt-public-key FILE" in result.stderr
    assert kube.writes() == []  # not even the namespace


def test_creates_what_is_missing_then_keeps_what_exists(
    kube: FakeKube, env_file: Path, keys: tuple[Path, Path]
) -> None:
    args = ("--context", "fake", "--from-env-file", str(env_file), "--jwt-public-key", str(keys[1]))
    first = kube.run(*args)
    assert first.returncode == 0, first.stderr
    assert "created namespace somabrain-prod" in first.stdout
    assert "created Secret somabrain-postgres" in first.stdout and "created Secret somabrain-secrets" in first.stdout
    assert kube.secret("somabrain-postgres") == {
        "POSTGRES_USER": "somabrain", "POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": "somabrain"}
    assert kube.secret("somabrain-secrets") == {"jwt_pub.pem": keys[1].read_text()}
    created = {name: tuple(kube.secret(name)) for name in OPERATOR_SECRETS}
    assert created == dict(OPERATOR_SECRETS)  # what the parity gate treats as provided by the operator
    labels = kube.get()["objects"]["Secret/somabrain-prod/somabrain-postgres"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "somabrain"

    kube.set(calls=[])
    again = kube.run(*args)
    assert again.returncode == 0, again.stderr
    assert "kept Secret somabrain-postgres" in again.stdout and "kept Secret somabrain-secrets" in again.stdout
    assert kube.writes() == []
    # The credentials only ever travel on stdin.
    assert not [c for c in kube.get()["calls"] if PASSWORD in " ".join(c)]


def test_an_existing_secret_is_never_touched_even_without_inputs(kube: FakeKube, keys: tuple[Path, Path]) -> None:
    assert kube.run("--context", "fake", "--jwt-public-key", str(keys[1])).returncode == 0
    password = kube.secret("somabrain-postgres")["POSTGRES_PASSWORD"]
    assert len(password) == 32 and int(password, 16) >= 0  # generated: 16 random bytes in hex, DSN-safe
    kube.set(calls=[])
    result = kube.run("--context", "fake", "--quiet")  # no --jwt-public-key needed: the Secret exists
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert kube.writes() == [] and kube.secret("somabrain-postgres")["POSTGRES_PASSWORD"] == password


def test_force_replaces_and_dry_run_changes_nothing(kube: FakeKube, env_file: Path, keys: tuple[Path, Path]) -> None:
    assert kube.run("--context", "fake", "--jwt-public-key", str(keys[1])).returncode == 0
    kube.set(calls=[])
    dry = kube.run("--context", "fake", "--from-env-file", str(env_file), "--jwt-public-key", str(keys[1]),
                   "--force", "--dry-run")
    assert dry.returncode == 0 and "would have replaced Secret somabrain-postgres" in dry.stdout
    assert kube.writes() == [] and kube.secret("somabrain-postgres")["POSTGRES_PASSWORD"] != PASSWORD
    forced = kube.run("--context", "fake", "--from-env-file", str(env_file), "--jwt-public-key", str(keys[1]),
                      "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced Secret somabrain-postgres" in forced.stdout
    assert kube.secret("somabrain-postgres")["POSTGRES_PASSWORD"] == PASSWORD


def test_a_refused_write_is_exit_1_with_the_clusters_reason(
    kube: FakeKube, env_file: Path, keys: tuple[Path, Path]
) -> None:
    kube.set(refuse_writes=True)
    result = kube.run("--context", "fake", "--from-env-file", str(env_file), "--jwt-public-key", str(keys[1]))
    assert result.returncode == 1
    assert result.stderr.startswith("k8s_secrets.sh: could not create namespace somabrain-prod: Error from server "
                                    "(Forbidden)"), result.stderr


def test_an_unreachable_cluster_is_exit_1(kube: FakeKube, keys: tuple[Path, Path]) -> None:
    kube.set(reachable=False)
    result = kube.run("--context", "fake", "--jwt-public-key", str(keys[1]))
    assert result.returncode == 1 and "cannot reach the cluster of context 'fake'" in result.stderr
    assert kube.writes() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_cluster_with_the_real_kubectl_is_a_clear_message(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    kubectl = tool("kubectl", REPO / ".venv" / "bin" / "kubectl")
    if kubectl is None:
        pytest.skip("no kubectl installed: the fake kubectl tests cover the script")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{_closed_port()}'}}}}]\n"
        "contexts: [{name: nowhere, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    env = {**os.environ, "KUBECTL": kubectl}
    result = run([str(SCRIPT), "--context", "nowhere", "--kubeconfig", str(config), "--jwt-public-key",
                  str(keys[1])], env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("k8s_secrets.sh: cannot reach the cluster of context 'nowhere': ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    unknown = run([str(SCRIPT), "--context", "missing", "--kubeconfig", str(config)], env=env)
    assert unknown.returncode == 2
    assert "context 'missing' is not in the kubeconfig" in unknown.stderr and "it has: nowhere" in unknown.stderr


def test_no_kubectl_is_exit_2(tmp_path: Path) -> None:
    result = run([str(SCRIPT), "--context", "fake"], env={**os.environ, "KUBECTL": str(tmp_path / "no-kubectl")})
    assert result.returncode == 2 and "not found: put kubectl on PATH (or set KUBECTL)" in result.stderr
