"""scripts/: dev_up.sh (ports, .env.local, idempotence), setup_ingress_tls.sh, port_forward.sh, kind config."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from targets.envfile import read_env_file
from tests.deploy.repo import REPO, run

DEV_UP = REPO / "scripts" / "dev_up.sh"
TLS = REPO / "scripts" / "setup_ingress_tls.sh"
PORT_VARS = {
    "SOMABRAIN_HOST_PORT": 9696,
    "REDIS_HOST_PORT": 6379,
    "KAFKA_HOST_PORT": 9092,
    "PROMETHEUS_HOST_PORT": 9090,
    "POSTGRES_HOST_PORT": 15432,
    "OPA_HOST_PORT": 8181,
    "SOMAMEMORY_HOST_PORT": 9595,
}


@contextmanager
def occupied(*ports: int) -> Iterator[list[int]]:
    """Listen on the given 127.0.0.1 ports (those already busy stay busy: either way they are taken)."""
    socks = []
    for port in ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
            socks.append(sock)
        except OSError:
            sock.close()  # someone else holds it: still taken
    try:
        yield list(ports)
    finally:
        for sock in socks:
            sock.close()


def test_dev_up_avoids_taken_ports_and_never_repeats_one(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    taken = [6379, 9092, 15432, 8181]
    with occupied(*taken):
        result = run([str(DEV_UP), "--env-file", str(env_file), "--any-port"])
        assert result.returncode == 0, result.stderr
        values = read_env_file(env_file)
        ports = [int(values[v]) for v in PORT_VARS]
        assert len(set(ports)) == len(ports), f"two services share a port: {values}"
        assert not set(ports) & set(taken)
        for var, port in ((v, int(values[v])) for v in PORT_VARS if PORT_VARS[v] in taken):
            assert port != PORT_VARS[var]
            assert f"{var}={port}" in result.stdout  # the user is told
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert values["POSTGRES_USER"] and len(values["POSTGRES_PASSWORD"]) >= 32 and values["POSTGRES_DB"]
    assert values["COMPOSE_PROJECT_NAME"] == "somabrain"


def test_dev_up_is_idempotent_and_keeps_extra_keys(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    assert run([str(DEV_UP), "--env-file", str(env_file), "--any-port", "--quiet"]).returncode == 0
    with env_file.open("a") as fh:
        fh.write("SOMABRAIN_IMAGE=somabrain:airgap\n")
    first = read_env_file(env_file)
    second_run = run([str(DEV_UP), "--env-file", str(env_file), "--any-port", "--quiet"])
    assert second_run.returncode == 0 and second_run.stdout == ""
    assert read_env_file(env_file) == first  # same ports, same password, extra key kept
    assert first["SOMABRAIN_IMAGE"] == "somabrain:airgap"


def test_dev_up_refuses_when_9696_is_taken_unless_any_port(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    with occupied(9696):
        refused = run([str(DEV_UP), "--env-file", str(env_file)])
        assert refused.returncode == 1
        assert "9696" in refused.stderr and "--any-port" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not env_file.exists()
        allowed = run([str(DEV_UP), "--env-file", str(env_file), "--any-port", "--quiet"])
        assert allowed.returncode == 0
        assert read_env_file(env_file)["SOMABRAIN_HOST_PORT"] != "9696"


def test_dev_up_rejects_unknown_arguments_and_helps() -> None:
    bad = run([str(DEV_UP), "--bogus"])
    assert bad.returncode == 2 and "--help" in bad.stderr
    helped = run([str(DEV_UP), "--help"])
    assert helped.returncode == 0 and "--any-port" in helped.stdout and "SOMABRAIN_HOST_PORT" in helped.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_setup_ingress_tls_writes_a_cert_with_the_san_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    first = run([str(TLS), "--out-dir", str(out), "--no-kubectl"])
    assert first.returncode == 0, first.stderr
    crt, key = out / "somabrain.internal.crt", out / "somabrain.internal.key"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(crt), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert "DNS:somabrain.internal" in text
    assert "prime256v1" in text or "P-256" in text
    assert key.stat().st_mode & 0o777 == 0o600
    assert "kubectl create secret tls somabrain-tls -n somabrain-prod" in first.stdout
    before = crt.read_bytes(), key.read_bytes()
    second = run([str(TLS), "--out-dir", str(out), "--no-kubectl"])
    assert second.returncode == 0 and "keeping" in second.stdout
    assert (crt.read_bytes(), key.read_bytes()) == before
    # A certificate for another host is replaced: the check reads the SAN, not just the file's presence.
    env = {"PATH": "/usr/bin:/bin", "TLS_HOST": "other.internal"}
    assert run([str(TLS), "--out-dir", str(out), "--no-kubectl"], env=env).returncode == 0
    shutil.copy(out / "other.internal.crt", crt)
    shutil.copy(out / "other.internal.key", key)
    replaced = run([str(TLS), "--out-dir", str(out), "--no-kubectl"])
    assert replaced.returncode == 0 and "keeping" not in replaced.stdout
    assert (
        "DNS:somabrain.internal"
        in subprocess.run(
            ["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"], capture_output=True, text=True
        ).stdout
    )


def test_setup_ingress_tls_rejects_bad_input() -> None:
    result = run([str(TLS), "--days", "soon", "--no-kubectl"])
    assert result.returncode == 2 and "--days" in result.stderr


def test_port_forward_lists_the_guides_forwards() -> None:
    result = run([str(REPO / "scripts" / "port_forward.sh"), "--help"])
    assert result.returncode == 0
    for fwd in (
        "svc/somabrain 9696:9696",
        "svc/somamemory 9595:9595",
        "svc/sb-redis 6379:6379",
        "svc/postgres 55432:5432",
        "svc/sb-opa 8181:8181",
    ):
        assert fwd in (REPO / "scripts" / "port_forward.sh").read_text()
    assert run(["bash", "-n", str(REPO / "scripts" / "port_forward.sh")]).returncode == 0


def test_kind_cluster_config() -> None:
    cfg = yaml.safe_load((REPO / "k8s" / "kind" / "cluster.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = cfg["nodes"]
    mappings = {(m["containerPort"], m["hostPort"], m["listenAddress"]) for m in node["extraPortMappings"]}
    # Traefik's TLS hostPort 9999, as in the cluster built from Go modules; only on the host's loopback.
    assert mappings == {(9999, 9999, "127.0.0.1")}
    assert any('config_path = "/etc/containerd/certs.d"' in p for p in cfg["containerdConfigPatches"])
    assert any("ingress-ready=true" in patch for patch in node["kubeadmConfigPatches"])
    assert "inotify" in (REPO / "k8s" / "kind" / "cluster.yaml").read_text()


def _kubeconfig(tmp_path: Path, current: str) -> Path:
    """A kubeconfig whose only context, `current`, points at a closed port (no cluster is reached)."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        f"contexts: [{{name: {current}, context: {{cluster: c, user: u}}}}]\n"
        f"current-context: {current}\n")
    return config


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_setup_ingress_tls_refuses_a_current_context_that_is_not_local(tmp_path: Path) -> None:
    """The self-signed Secret goes only where it is asked for: a remote current context is refused (exit 2,
    nothing applied); named with --context, it is tried (here unreachable: the command to run is printed)."""
    kubectl_dir = subprocess.run([str(REPO / "scripts" / "cluster" / "toolchain.sh"), "bindir"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    if not Path(kubectl_dir, "kubectl").exists() and shutil.which("kubectl") is None:
        pytest.fail("no kubectl: make cluster-toolchain (or install kubectl)")
    env = {"PATH": f"{kubectl_dir}:/usr/bin:/bin", "KUBECONFIG": str(_kubeconfig(tmp_path, "prod-eks")),
           "HOME": str(tmp_path)}
    refused = run([str(TLS), "--out-dir", str(tmp_path / "tls")], env=env)
    assert refused.returncode == 2
    assert "current kube context 'prod-eks' is not a known local one" in refused.stderr
    assert "--context prod-eks" in refused.stderr
    named = run([str(TLS), "--out-dir", str(tmp_path / "tls"), "--context", "prod-eks"], env=env)
    assert named.returncode == 0, named.stderr
    assert "no reachable cluster in context prod-eks" in named.stdout
    assert "kubectl --context prod-eks apply -f -" in named.stdout
