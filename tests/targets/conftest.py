"""Certificates for the TLS tests: self-signed ones as scripts/setup_ingress_tls.sh makes them, and the TLS Secret
that holds one (used here, by tests/ops/conftest.py and by tests/cluster/test_conformance_cli_live.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cert:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str = "tls") -> tuple[Path, Path]:
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return crt, key


def make_cert(hosts: tuple[str, ...] = ("somabrain.internal", "localhost"), days: int = 90,
              not_before_days: int = 1) -> Cert:
    """A self-signed ECDSA certificate, like scripts/setup_ingress_tls.sh makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=not_before_days)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Cert(cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def tls_secret(cert: Cert, type_: str = "kubernetes.io/tls", key_pem: bytes | None = None) -> dict[str, object]:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": {"name": "somabrain-tls"},
            "data": {"tls.crt": base64.b64encode(cert.cert_pem).decode(),
                     "tls.key": base64.b64encode(key_pem or cert.key_pem).decode()}}

