"""TLS of the ingress endpoint for somabrain.internal: chain verifies against the generated CA, the SAN covers
the host, the certificate is not expired nor expiring within --tls-min-days, TLS 1.0/1.1 are refused and
TLS 1.2+ accepted; in prod, Secret somabrain-tls is kubernetes.io/tls and its key matches its certificate.

prod: the endpoint is the kind ingress on 127.0.0.1:9999 (or --tls-endpoint for the LoadBalancer/port-forward).
dev: the compose TLS front sb_ingress (nginx, compose/nginx/nginx.conf, the mirror of the Ingress) on 127.0.0.1 and
its published port (INGRESS_HOST_PORT); when it does not run, these checks are skipped by name unless
--tls-endpoint points at another TLS front.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest

from conformance.expectations import TLS_ACCEPTED, TLS_HOST, TLS_REFUSED, TLS_SECRET, TLS_SECRET_TYPE
from conformance.inventory import TLS_FRONT
from conformance.live.plugin import Check, Settings
from targets.base import ServedTls, Target
from targets.tls import CertificateObservation, handshake, key_matches_certificate, observe_certificate
from targets.tls import san_covers as covers

pytestmark = pytest.mark.tls
DEV_SKIP = (f"dev: no TLS front in dev: the compose service {TLS_FRONT.compose} (the mirror of the Ingress) is not "
            "running in this project, so there is no endpoint to check; start it with scripts/stack.sh up, or pass "
            "--tls-endpoint HOST:PORT to check another TLS front")


@pytest.fixture(scope="session")
def endpoint(settings: Settings) -> tuple[str, int]:
    if settings.tls_endpoint is None:
        pytest.skip(DEV_SKIP)
    host, _, port = settings.tls_endpoint.rpartition(":")
    if not host or not port.isdigit():
        pytest.fail(f"--tls-endpoint {settings.tls_endpoint!r}: expected HOST:PORT")
    return host, int(port)


@pytest.fixture(scope="session")
def certificate(endpoint: tuple[str, int], settings: Settings) -> CertificateObservation:
    if not settings.tls_ca.is_file():
        pytest.fail(f"the CA file {settings.tls_ca} does not exist: run scripts/setup_ingress_tls.sh or pass --tls-ca")
    try:
        return observe_certificate(*endpoint, TLS_HOST, settings.tls_ca)
    except OSError as exc:
        pytest.fail(f"cannot open TLS to {endpoint[0]}:{endpoint[1]} (SNI {TLS_HOST}): {exc}")


def test_chain_verifies(certificate: CertificateObservation, settings: Settings, check: Check) -> None:
    check.expected = {"verified_against": str(settings.tls_ca.name), "verified": True}
    check.observed = {"verified": certificate.verified, "error": certificate.verify_error or None,
                      "subject": certificate.subject}
    assert certificate.verified, f"the chain does not verify against {settings.tls_ca}: {certificate.verify_error}"


def test_san_covers_host(certificate: CertificateObservation, check: Check) -> None:
    check.expected = {"san_covers": TLS_HOST}
    check.observed = {"dns_names": list(certificate.dns_names), "ip_addresses": list(certificate.ip_addresses)}
    assert covers(certificate.dns_names, TLS_HOST), f"the SAN {certificate.dns_names} does not cover {TLS_HOST}"


def test_not_expiring(certificate: CertificateObservation, settings: Settings, check: Check) -> None:
    days = certificate.days_left()
    check.expected = {"min_days_left": settings.tls_min_days}
    check.observed = {"not_after": certificate.not_after.isoformat(), "days_left": round(days, 1)}
    assert days > 0, f"the certificate expired on {certificate.not_after:%Y-%m-%d}"
    assert days >= settings.tls_min_days, (
        f"the certificate expires in {days:.1f} days ({certificate.not_after:%Y-%m-%d}), within --tls-min-days "
        f"{settings.tls_min_days}")


@pytest.mark.parametrize("version", [*TLS_REFUSED, *TLS_ACCEPTED], ids=str)
def test_protocol(version: str, endpoint: tuple[str, int], check: Check) -> None:
    wanted = version in TLS_ACCEPTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1/1_1: we use them to test refusal
        accepted, detail = handshake(*endpoint, TLS_HOST, version)
    check.expected = {"accepted": wanted}
    check.observed = {"accepted": accepted, "detail": detail}
    if accepted is None:
        pytest.fail(f"cannot test {version}: {detail}")
    assert accepted == wanted, f"{version} is {'accepted' if accepted else 'refused'} ({detail}); " \
                               f"it must be {'accepted' if wanted else 'refused'}"


@pytest.fixture(scope="session")
def served(target: Target) -> ServedTls | None:
    """Where the environment serves TLS from: prod Secret somabrain-tls; dev the files the TLS front mounts
    (compose service sb_ingress, /etc/nginx/tls <- infra/tls/); None when the dev front is not running."""
    return target.served_tls()


@pytest.fixture(scope="session")
def tls_secret(served: ServedTls | None) -> Mapping[str, Any]:
    if served is None or (served.document is None and not served.problem):
        pytest.skip("dev: there are no Kubernetes Secrets in compose (the certificate files are infra/tls/)")
    if served.document is None:
        pytest.fail(f"{served.problem}: run scripts/setup_ingress_tls.sh")
    return served.document


@pytest.mark.environments("prod")
def test_secret_type(tls_secret: Mapping[str, Any], check: Check) -> None:
    check.expected = {"type": TLS_SECRET_TYPE}
    check.observed = {"type": tls_secret.get("type"), "keys": sorted(tls_secret.get("data") or {})}
    assert tls_secret.get("type") == TLS_SECRET_TYPE, f"Secret {TLS_SECRET} is of type {tls_secret.get('type')!r}"


@pytest.fixture(scope="session")
def tls_key_pair(served: ServedTls | None) -> tuple[str, bytes | None, bytes | None]:
    """(where, certificate PEM, key PEM) of what the environment serves."""
    if served is None:
        pytest.skip(DEV_SKIP)
    if served.problem and (served.cert_pem is None or served.key_pem is None):
        pytest.fail(served.problem)
    return served.where, served.cert_pem, served.key_pem


def test_secret_key_matches_certificate(tls_key_pair: tuple[str, bytes | None, bytes | None], check: Check) -> None:
    where, crt, key = tls_key_pair
    check.expected = {"key_matches_certificate": True}
    if crt is None or key is None:
        check.observed = {"where": where, "certificate": crt is not None, "key": key is not None}
        pytest.fail(f"{where}: the certificate or the key is missing: run scripts/setup_ingress_tls.sh")
    same, detail = key_matches_certificate(crt, key)
    check.observed = {"where": where, "key_matches_certificate": same, "detail": detail}
    assert same, f"{where}: {detail}"
