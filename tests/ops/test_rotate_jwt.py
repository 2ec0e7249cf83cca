"""`somabrain rotate jwt-key` against the writable Kubernetes API fake: --add keeps the old key and adds the new
one, projects the whole Secret into /secrets and points SOMABRAIN_JWT_PUBLIC_KEY_PATH at it, and rolls the API;
--retire keeps only the newest key. Every write is a PATCH (served by test_rotate_kube.serve_patches; the 409
races are tested there)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ops import rotate
from tests.ops.fake_cluster import Cluster
from tests.ops.test_rotate_kube import FakePatches, add_secrets, serve_patches


@pytest.fixture(autouse=True)
def patches(cluster: Cluster) -> FakePatches:
    add_secrets(cluster.fake)
    return serve_patches(cluster.fake)


def public_pem(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_add_then_retire(cluster: Cluster, patches: FakePatches, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    old = public_pem(tmp_path / "old.pem").read_bytes()
    secret = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")
    secret.pop("stringData", None)
    secret["data"] = {"jwt_pub.pem": base64.b64encode(old).decode()}
    new = public_pem(tmp_path / "new.pem")

    assert rotate.main(["jwt-key", "--env", "prod", "--add", str(new), *cluster.args()]) == 0, capsys.readouterr()
    data = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")["data"]
    assert len(data) == 2 and base64.b64decode(data["jwt_pub.pem"]) == old
    assert new.read_bytes() in [base64.b64decode(v) for v in data.values()]
    deployment = cluster.fake.find("Deployment", "somabrain-prod", "somabrain")
    spec = deployment["spec"]["template"]["spec"]
    assert "items" not in next(v for v in spec["volumes"] if v["name"] == "jwt")["secret"]
    assert {"name": "SOMABRAIN_JWT_PUBLIC_KEY_PATH", "value": "/secrets"} in spec["containers"][0]["env"]
    assert deployment["metadata"]["generation"] == 2  # rolled

    assert rotate.main(["jwt-key", "--env", "prod", "--retire", *cluster.args()]) == 0
    data = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")["data"]
    assert [base64.b64decode(v) for v in data.values()] == [new.read_bytes()]
    assert patches.writes() and all(method == "PATCH" for method, _, _ in patches.writes())


def test_bad_key_and_nothing_to_retire(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert rotate.main(["jwt-key", "--env", "prod", "--add", str(junk), *cluster.args()]) == 3
    assert "not a PEM public key" in capsys.readouterr().err
    assert rotate.main(["jwt-key", "--env", "prod", "--retire", *cluster.args()]) == 3
    assert cluster.fake.puts == []


def write_pem(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize(("algorithm", "key", "refusal"), [
    (None, lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - refused
     "1024-bit RSA key"),
    (None, lambda: ec.generate_private_key(ec.SECP256R1()), "EC secp256r1 key, which does not fit RS256"),
    ("es256", lambda: ec.generate_private_key(ec.SECP384R1()), "EC secp384r1 key, which does not fit ES256"),
    ("es256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA key but the algorithms"),
])
def test_add_refuses_what_the_api_refuses(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          algorithm: str | None, key: Any, refusal: str) -> None:
    """Fake: stands in for the cluster's Deployment and ConfigMaps (the API's SOMABRAIN_JWT_ALGORITHM, set in
    somabrain-overrides); the key is checked by brain.auth.load_verifier, as the API loads it, before any write."""
    if algorithm is not None:
        cluster.fake.find("ConfigMap", "somabrain-prod", "somabrain-overrides")["data"] = {
            "SOMABRAIN_JWT_ALGORITHM": algorithm}
    pem = write_pem(tmp_path / "new.pem", key())
    assert rotate.main(["jwt-key", "--env", "prod", "--add", str(pem), *cluster.args()]) == 3
    assert refusal in capsys.readouterr().err
    assert cluster.fake.puts == []


def test_add_takes_what_the_api_takes(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: as above, for an ES256 API given an EC P-256 key as an X.509 certificate (which the API loads)."""
    cluster.fake.find("ConfigMap", "somabrain-prod", "somabrain-overrides")["data"] = {
        "SOMABRAIN_JWT_ALGORITHM": "ES256"}
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "new.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert rotate.main(["jwt-key", "--env", "prod", "--add", str(pem), *cluster.args()]) == 0, capsys.readouterr()
    data = cluster.fake.find("Secret", "somabrain-prod", "somabrain-secrets")["data"]
    assert pem.read_bytes() in [base64.b64decode(v) for v in data.values()]
