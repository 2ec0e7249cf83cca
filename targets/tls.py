"""TLS probes of an ingress endpoint, from the host (127.0.0.1 published/forwarded ports only).

    observe_certificate("127.0.0.1", 9999, "somabrain.internal", Path("infra/tls/somabrain.internal.crt"))
    handshake("127.0.0.1", 9999, "somabrain.internal", "TLSv1_1")   # -> (accepted, detail)
    key_matches_certificate(cert_pem, key_pem)

The protocol probe forces exactly one version on the client (SECLEVEL 0 for TLS 1.0/1.1, so the client is able
to offer them); `accepted is None` means this machine's OpenSSL cannot offer that version at all, which the
check reports instead of calling it "refused".
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class CertificateObservation:
    verified: bool
    verify_error: str
    subject: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_after: datetime
    protocol: str

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def observe_certificate(host: str, port: int, servername: str, cafile: Path, timeout: float = 5.0
                        ) -> CertificateObservation:
    """Verify the chain against `cafile` (with hostname check for `servername`) and read the leaf."""
    verified, error = True, ""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with _connect(host, port, timeout) as raw, context.wrap_socket(raw, server_hostname=servername):
            pass
    except ssl.SSLCertVerificationError as exc:
        verified, error = False, exc.verify_message or str(exc)
    except ssl.SSLError as exc:
        verified, error = False, str(exc)
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    with _connect(host, port, timeout) as raw, loose.wrap_socket(raw, server_hostname=servername) as tls:
        der = tls.getpeercert(binary_form=True)
        protocol = tls.version() or "?"
    if der is None:
        raise ssl.SSLError(f"{host}:{port} sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertificateObservation(verified, error, cert.subject.rfc4514_string(), dns_names, ips,
                                  cert.not_valid_after_utc, protocol)


def san_covers(dns_names: tuple[str, ...], host: str) -> bool:
    """RFC 6125: exact match, or a wildcard in the left-most label only."""
    host = host.lower()
    for name in (n.lower() for n in dns_names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def handshake(host: str, port: int, servername: str, version: str, timeout: float = 5.0) -> tuple[bool | None, str]:
    """(accepted, detail) for a handshake offering only `version`; None when the client cannot offer it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if version in ("TLSv1", "TLSv1_1"):
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = VERSIONS[version]
        context.maximum_version = VERSIONS[version]
    except (ValueError, ssl.SSLError) as exc:
        return None, f"this client cannot offer {version}: {exc}"
    try:
        with _connect(host, port, timeout) as raw, context.wrap_socket(raw, server_hostname=servername) as tls:
            cipher = tls.cipher()
            return True, f"negotiated {tls.version()} {cipher[0] if cipher else ''}".strip()
    except ssl.SSLError as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc) or "no protocols available" in str(exc):
            return None, f"this client cannot offer {version}: {exc}"
        return False, f"refused: {exc.reason or exc}"
    except (ConnectionResetError, BrokenPipeError) as exc:
        return False, f"refused: connection closed during the handshake ({exc})"


def key_matches_certificate(cert_pem: bytes, key_pem: bytes) -> tuple[bool, str]:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        return False, f"tls.crt is not a PEM certificate: {exc}"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return False, f"tls.key is not an unencrypted PEM private key: {exc}"
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    same = cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
    return same, "the key's public half is the certificate's" if same else "tls.key does not belong to tls.crt"
