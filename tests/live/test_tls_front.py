"""The live TLS front (compose service sb_ingress, the mirror of the k8s Ingress): HTTPS for somabrain.internal
with the infra/tls/ certificate, in front of the API, with the Ingress's 32m body limit.

Live (`make live`, pytest -m live): against a stack started by `scripts/stack.sh up`. Traffic goes to 127.0.0.1 and
the port compose published for sb_ingress:8443 only; the TLS server name is somabrain.internal (SNI + Host).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl

import pytest

from tests.live.stack import ROOT, Stack

HOST = "somabrain.internal"
CA = ROOT / "infra" / "tls" / f"{HOST}.crt"
LIMIT = 32 * 1024 * 1024

pytestmark = pytest.mark.live


class _Front(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:<port> with SNI and Host somabrain.internal, verified against infra/tls/."""

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=HOST)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def port(stack: Stack) -> int:
    bindings = stack.inspect("sb_ingress")["NetworkSettings"]["Ports"].get("8443/tcp") or []
    published = [b for b in bindings if b.get("HostIp") == "127.0.0.1"]
    assert published, f"sb_ingress:8443 is not published on 127.0.0.1: {bindings}"
    return int(published[0]["HostPort"])


def connect(port: int) -> _Front:
    if not CA.is_file():
        pytest.fail(f"{CA} does not exist: scripts/stack.sh up creates it (scripts/setup_ingress_tls.sh)")
    return _Front(HOST, port, context=ssl.create_default_context(cafile=str(CA)), timeout=30)


def test_health_through_the_front(port: int) -> None:
    conn = connect(port)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200 and body["ready"] is True, body
    assert conn.sock is not None and conn.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]


def test_a_body_over_32m_is_refused_by_the_front(port: int) -> None:
    conn = connect(port)
    # Headers only: nginx answers 413 from the Content-Length alone, before any body byte is read.
    conn.putrequest("POST", "/remember")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("X-Tenant-ID", "tls-front-live")
    conn.putheader("Content-Length", str(LIMIT + 1))
    conn.endheaders()
    resp = conn.getresponse()
    text = resp.read().decode(errors="replace")
    assert resp.status == 413, (resp.status, text[:200])
    assert "nginx" in text  # the front's own page: the request never reached the API


def test_a_body_under_32m_reaches_the_api(port: int) -> None:
    """The front forwards the body: the answer is the API's {error, detail}, not the front's page. 1 MiB, within the
    API's own 2 MiB limit (SOMABRAIN_MAX_BODY_BYTES), of invalid JSON: 400, and nothing is written. (A body between
    the API's limit and the front's 32m is answered 413 by the API, or 502 by the front when the API closes before
    the front has sent it all: seen once; see the session note.)"""
    conn = connect(port)
    body = b"{" + b" " * (1024 * 1024 - 1)
    conn.request("POST", "/remember", body=body,
                 headers={"Content-Type": "application/json", "X-Tenant-ID": "tls-front-live"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 400 and answer["error"] == "invalid_json", answer
