"""A real OpenID Connect issuer for tests: an HTTP (or HTTPS) server on 127.0.0.1, in a thread of the test process.

    with LocalIssuer() as issuer:                    # http://127.0.0.1:<free port>, serving at once
        issuer.url                                   # the issuer identifier (the discovery document's `issuer`)
        token = issuer.mint(claims)                  # signed by the current key, its kid in the header
        old = issuer.rotate()                        # a new key (new kid) signs from now on; the old one stays listed
        issuer.retire(old)                           # stop listing a key
        issuer.count("/jwks")                        # GETs of a path so far
        issuer.down(); issuer.up()                   # the port refuses connections / serves again (same port)

It serves `GET /.well-known/openid-configuration` (issuer, jwks_uri and the members OpenID Connect Discovery
requires) and `GET /jwks`. `discovery_overrides` (members to replace, None to drop), `jwks_extra` (more JWK
entries), `jwks_body` (raw bytes instead of the JWKS), `status` (path -> HTTP status) and `delay_s` (before each
answer) make it misbehave on purpose. `tls=make_tls(dir)` serves HTTPS with a certificate for 127.0.0.1 signed by a
CA of the test's own.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID

from localservers.servers import free_port
from tests.helpers import certs, jwt_keys

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it (PEM files in `directory`)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = certs.ca("test-oidc-ca")
    key, cert = certs.leaf(ca_key, ca, "issuer.test", ExtendedKeyUsageOID.SERVER_AUTH, certs.LOCAL_SANS)
    return TlsFiles(certs.write(directory / "oidc-ca.pem", certs.cert_pem(ca)),
                    certs.write(directory / "oidc-server.pem", certs.cert_pem(cert)),
                    certs.write(directory / "oidc-server.key", certs.key_pem(key), 0o600))


class LocalIssuer:
    def __init__(self, *, tls: TlsFiles | None = None, keys: jwt_keys.KeyPair | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._generation = 0
        first = keys or jwt_keys.generate_rsa_keys()
        #: kid -> key pair, in the JWKS order; `current` signs.
        self.keys: dict[str, jwt_keys.KeyPair] = {self._new_kid(): first}
        self.current = next(iter(self.keys))
        self.discovery_overrides: dict[str, Any] = {}
        self.jwks_extra: list[dict[str, Any]] = []
        self.jwks_body: bytes | None = None
        self.status: dict[str, int] = {}
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- keys -----------------------------------------------------------------------------------------------
    def _new_kid(self) -> str:
        self._generation += 1
        return f"key-{self._generation}"

    def rotate(self, keys: jwt_keys.KeyPair | None = None) -> str:
        """A new current key under a new kid; the previous one stays in the JWKS. Returns the previous kid."""
        previous = self.current
        kid = self._new_kid()
        with self._lock:
            self.keys[kid] = keys or jwt_keys.generate_rsa_keys()
            self.current = kid
        return previous

    def retire(self, kid: str) -> None:
        with self._lock:
            del self.keys[kid]

    def mint(self, claims: dict[str, Any], *, kid: str | None = None, alg: str | None = None) -> str:
        """A token signed by the key `kid` (default: the current one), naming that kid."""
        kid = kid or self.current
        return jwt_keys.mint(self.keys[kid], claims, kid=kid, alg=alg)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for this issuer (iss = its URL, the tests' audience)."""
        return jwt_keys.standard_claims(**{"issuer": self.url, **overrides})

    # --- what it serves ---------------------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        for member, value in self.discovery_overrides.items():
            if value is None:
                document.pop(member, None)
            else:
                document[member] = value
        return document

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            listed = [pair.public_jwk(kid) for kid, pair in self.keys.items()]
        return {"keys": listed + list(self.jwks_extra)}

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def _answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            self._counts[path] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        status = self.status.get(path)
        if path == DISCOVERY_PATH:
            body = json.dumps(self.discovery()).encode()
        elif path == JWKS_PATH:
            body = self.jwks_body if self.jwks_body is not None else json.dumps(self.jwks()).encode()
        else:
            return 404, b'{"error": "not found"}'
        return status or 200, body

    # --- lifetime ---------------------------------------------------------------------------------------------
    def up(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = issuer._answer(self.path)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", issuer.url + JWKS_PATH)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the counts are the record

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"oidc-issuer-{self.port}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop serving and close the port: connections are refused until `up()`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalIssuer:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
