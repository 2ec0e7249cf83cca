"""The dev TLS front's nginx configuration (compose/nginx/nginx.conf), checked by nginx itself.

`nginx -t` runs in a throw-away container of the image compose uses (nginx:1.27-alpine) or of the air-gapped
stand-in (somabrain-airgap/nginx:local, Debian's nginx 1.22), whichever exists locally, with the same mounts,
read-only root fs and capabilities as the compose service and a certificate generated for the test. A broken
copy of the file must fail the same check. Nothing is pulled from a registry. Marked `live` (`make live`, after
`make up`, which leaves one of the images in the local store): without Docker or either image it fails.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conformance.loaders.nginx import parse_nginx
from tests.deploy.repo import REPO

CONF = REPO / "compose" / "nginx" / "nginx.conf"
IMAGES = ("nginx:1.27-alpine", "somabrain-airgap/nginx:local")
HOST = "somabrain.internal"

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def image() -> str:
    for name in IMAGES:
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0:
            return name
    pytest.fail(f"none of {IMAGES} exists locally: run scripts/airgap_images.sh --only nginx (or docker pull)")


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate like scripts/setup_ingress_tls.sh's (key mode 600), named as nginx.conf expects."""
    out = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (out / f"{HOST}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = out / f"{HOST}.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return out


def nginx_t(image: str, conf: Path, tls: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:mode=1777",
         "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "SETUID", "--cap-add", "SETGID",
         "--security-opt", "no-new-privileges:true",
         "-v", f"{conf}:/etc/nginx/nginx.conf:ro", "-v", f"{tls}:/etc/nginx/tls:ro",
         "--entrypoint", "nginx", image, "-t"],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_nginx_accepts_the_config(image: str, tls_dir: Path) -> None:
    result = nginx_t(image, CONF, tls_dir)
    assert result.returncode == 0, f"nginx -t in {image}:\n{result.stderr}"
    assert "test is successful" in result.stderr


def test_nginx_refuses_a_broken_copy(image: str, tls_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "nginx.conf"
    broken.write_text(CONF.read_text().replace("client_max_body_size 32m;", "client_max_body_size thirty-two;"))
    result = nginx_t(image, broken, tls_dir)
    assert result.returncode != 0 and "client_max_body_size" in result.stderr, result.stderr


def test_nginx_refuses_a_missing_certificate(image: str, tmp_path: Path) -> None:
    result = nginx_t(image, CONF, tmp_path)  # an empty directory where infra/tls/ should be
    assert result.returncode != 0 and f"{HOST}.crt" in result.stderr, result.stderr


def test_the_config_says_what_the_ingress_says() -> None:
    server = next(s for s in parse_nginx(CONF.read_text()).find("server") if s.is_tls)
    assert server.get("server_name") == (HOST,)
    assert server.get("ssl_protocols") == ("TLSv1.2", "TLSv1.3")
    assert server.value("client_max_body_size") == "32m"
    assert server.proxy_targets() == ["http://somabrain:9696"]
    assert server.listen_ports() == [8443]
