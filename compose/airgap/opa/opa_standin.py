#!/usr/bin/env python3
"""OPA Data API STAND-IN built on the regorus Rego engine. This is NOT Open Policy Agent.

Use it only where no `opa` binary or `openpolicyagent/opa` image can be had (air-gapped builds, this
repo's tests). It evaluates the same Rego files with regorus (a Rego interpreter, pip package
gordon-to-regorus) and answers the subset of OPA's REST API that SomaBrain uses:

  POST /v1/data/<path>  body {"input": ...} -> 200 {"result": <value>}  ("result" omitted when undefined)
  GET  /v1/data/<path>  [?input=<json>]     -> same
  POST|GET /v1/data                         -> the whole data document
  GET  /health                              -> 200 {}  (as OPA; every response also carries an
                                               `X-OPA-Standin` header saying it is this stand-in)
  bad JSON / bad input                      -> 400 {"code": "invalid_parameter", "message": ...}
  evaluation error                          -> 500 {"code": "internal_error", "message": ...}
  anything else                             -> 404 {"code": "resource_not_found", ...} or 405

Usage:  opa_standin.py [--addr HOST:PORT] [--v0-compatible] POLICY.rego [more .rego / .json data files]
        (`--addr 127.0.0.1:0` picks a free port; the start-up line on stderr names the real one.)

Not supported (OPA features SomaBrain does not need): bundles, decision logs, the policy and query APIs,
`?explain`, `?metrics`, partial evaluation, watch mode. `?pretty` is honoured.

Threads: a regorus Engine must stay on the thread that created it, so the policies are parsed once at
start-up (to fail fast with a clear message) and every server thread lazily builds its own engine from
the same sources; each request evaluates on a fresh clone of its thread's engine, so no input leaks
between requests.
Dependencies: Python stdlib + regorus only (it runs in a minimal image with python3 and the regorus wheel).
Exit codes: 0 on SIGTERM/SIGINT, 2 for bad arguments or a policy that does not load.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import regorus
except ImportError:  # pragma: no cover - exercised only in a broken image
    sys.stderr.write("opa_standin: the regorus module is missing (pip install gordon-to-regorus)\n")
    raise SystemExit(2) from None

STANDIN_LABEL = "OPA Data API STAND-IN (not OPA) on regorus"
MAX_BODY_BYTES = 1 << 20
IDLE_CONNECTION_TIMEOUT_S = 60.0

log = logging.getLogger("opa_standin")


def regorus_version() -> str:
    try:
        from importlib.metadata import version

        return version("gordon-to-regorus")
    except Exception:
        return "unknown"


@dataclass(frozen=True)
class PolicySources:
    """Everything an engine is built from: (file name, Rego text) pairs and JSON data documents."""

    policies: tuple[tuple[str, str], ...]
    data: tuple[str, ...]
    rego_v0: bool

    def build_engine(self) -> Any:
        engine = regorus.Engine()
        engine.set_rego_v0(self.rego_v0)
        for name, text in self.policies:
            engine.add_policy(name, text)
        for doc in self.data:
            engine.add_data_json(doc)
        return engine


class LoadError(Exception):
    """A policy or data file that cannot be read or parsed; the message names the file."""


def load_sources(paths: Sequence[str], *, rego_v0: bool) -> PolicySources:
    policies: list[tuple[str, str]] = []
    data: list[str] = []
    for raw in paths:
        path = Path(raw)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LoadError(f"{raw}: cannot read ({reason})") from None
        if path.suffix == ".json":
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise LoadError(f"{raw}: not valid JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise LoadError(f"{raw}: a data file must hold a JSON object")
            data.append(text)
        else:
            policies.append((str(path), text))
    if not policies:
        raise LoadError("no .rego policy file given")
    sources = PolicySources(tuple(policies), tuple(data), rego_v0)
    for name, text in sources.policies:  # parse each file alone first so the error names the file
        probe = regorus.Engine()
        probe.set_rego_v0(rego_v0)
        try:
            probe.add_policy(name, text)
        except Exception as exc:
            raise LoadError(f"{name}: not valid Rego: {_first_lines(str(exc), 8)}") from None
    try:
        sources.build_engine()
    except Exception as exc:
        raise LoadError(f"the policies do not load together: {_first_lines(str(exc), 8)}") from None
    return sources


def _first_lines(text: str, n: int) -> str:
    """Regorus errors end with a Rust backtrace; keep the useful head on one line."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    head = []
    for line in lines:
        if line.startswith("Stack backtrace"):
            break
        if line.strip():
            head.append(line.strip())
    return " ".join(head[:n])


def data_query(path: str) -> str:
    """`somabrain/allow` -> `data["somabrain"]["allow"]` (bracket form accepts any segment safely)."""
    segments = [unquote(seg) for seg in path.split("/") if seg]
    return "data" + "".join(f"[{json.dumps(seg)}]" for seg in segments)


class BadRequest(Exception):
    """Answered as 400 invalid_parameter."""


class Evaluator:
    """Per-thread engines over one set of sources."""

    def __init__(self, sources: PolicySources) -> None:
        self._sources = sources
        self._local = threading.local()

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._sources.build_engine()
            self._local.engine = engine
        return engine

    def evaluate(self, path: str, input_json: str | None) -> tuple[bool, Any]:
        """Return (defined, value) of the data document at `path` for the given input (JSON text or None)."""
        engine = self._engine().clone()
        if input_json is not None:
            engine.set_input_json(input_json)
        answer = json.loads(engine.eval_query_as_json(data_query(path)))
        results = answer.get("result") or []
        if not results:
            return False, None
        return True, results[0]["expressions"][0]["value"]


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opa-standin-regorus"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    evaluator: Evaluator  # set on the subclass made by make_server

    # --- plumbing ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, body: Any, *, pretty: bool = False) -> None:
        payload = (json.dumps(body, indent=2) if pretty else json.dumps(body, separators=(",", ":"))).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-OPA-Standin", f"regorus/{REGORUS_VERSION}; this is a stand-in, not OPA")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send_json(status, {"code": code, "message": message})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise BadRequest("chunked request bodies are not supported by this stand-in; send Content-Length")
        raw_length = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            raise BadRequest(f"bad Content-Length {raw_length!r}") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest(f"request body must be between 0 and {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    # --- routes --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def do_PATCH(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        pretty = query.get("pretty", ["false"])[-1].lower() in ("", "true", "1")
        try:
            body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""
        except BadRequest as exc:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "invalid_parameter", str(exc))
            return
        if url.path == "/health":
            if self.command not in ("GET", "HEAD"):
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "use GET /health")
                return
            self._send_json(HTTPStatus.OK, {})
            return
        if url.path == "/v1/data" or url.path.startswith("/v1/data/"):
            if self.command not in ("GET", "POST"):
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or POST on /v1/data")
                return
            self._data(url.path[len("/v1/data") :], body, query, pretty)
            return
        self._error(HTTPStatus.NOT_FOUND, "resource_not_found", f"{url.path} is not served by this stand-in")

    def _data(self, path: str, body: bytes, query: dict[str, list[str]], pretty: bool) -> None:
        try:
            input_json = self._input_json(body, query)
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_parameter", str(exc))
            return
        try:
            defined, value = self.server_evaluator().evaluate(path, input_json)
        except Exception as exc:
            log.warning("evaluation failed for %s: %s", path or "/", _first_lines(str(exc), 4))
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", _first_lines(str(exc), 4))
            return
        self._send_json(HTTPStatus.OK, {"result": value} if defined else {}, pretty=pretty)

    def _input_json(self, body: bytes, query: dict[str, list[str]]) -> str | None:
        if self.command == "GET":
            if "input" not in query:
                return None
            text = query["input"][-1]
            try:
                return json.dumps(json.loads(text))
            except ValueError as exc:
                raise BadRequest(f"input parameter is not valid JSON: {exc}") from None
        if not body.strip():
            return None
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"body contains malformed input document: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest('body must be a JSON object like {"input": ...}')
        if "input" not in doc:
            return None
        return json.dumps(doc["input"])

    def server_evaluator(self) -> Evaluator:
        return self.evaluator


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--addr must look like HOST:PORT (e.g. 0.0.0.0:8181), got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # socketserver's default backlog of 5 drops SYNs when a client pool connects at once


class StandinServerV6(StandinServer):
    address_family = socket.AF_INET6


def make_server(addr: tuple[str, int], sources: PolicySources) -> ThreadingHTTPServer:
    handler = type("BoundStandinHandler", (StandinHandler,), {"evaluator": Evaluator(sources)})
    server_class = StandinServerV6 if ":" in addr[0] else StandinServer
    return server_class(addr, handler)


def announce(message: str) -> None:
    """Start/stop lines: always written, whatever --log-level says."""
    sys.stderr.write(f"opa_standin: {message}\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opa_standin.py",
        description=(
            "An OPA-Data-API-compatible STAND-IN built on the regorus Rego engine. It is NOT Open Policy "
            "Agent: use it only where no opa binary/image exists. Serves POST/GET /v1/data/<path> and "
            "GET /health."
        ),
        epilog="Example: opa_standin.py --addr 0.0.0.0:8181 k8s/policy/somabrain.rego",
    )
    parser.add_argument(
        "--addr",
        type=parse_addr,
        default=("0.0.0.0", 8181),
        metavar="HOST:PORT",
        help="listen address (default 0.0.0.0:8181, like OPA; port 0 picks a free port)",
    )
    parser.add_argument(
        "--v0-compatible",
        action="store_true",
        help="parse Rego with v0 (OPA 0.x) syntax rules instead of the default v1 rules",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level on stderr (default info: one line per request)",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="Rego policy files (.rego) and data files (.json)")
    return parser


REGORUS_VERSION = regorus_version()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s opa_standin %(levelname)s %(message)s",
    )
    try:
        sources = load_sources(args.files, rego_v0=args.v0_compatible)
    except LoadError as exc:
        sys.stderr.write(f"opa_standin: {exc}\n")
        return 2
    try:
        server = make_server(args.addr, sources)
    except OSError as exc:
        sys.stderr.write(f"opa_standin: cannot listen on {args.addr[0]}:{args.addr[1]} ({exc.strerror or str(exc)})\n")
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # PID 1 in a container ignores SIGTERM without a handler
    host, port = str(server.server_address[0]), int(server.server_address[1])
    announce(
        f"{STANDIN_LABEL} {REGORUS_VERSION} listening on http://{host}:{port} "
        f"(policies: {', '.join(name for name, _ in sources.policies)}"
        f"{'; rego v0 syntax' if sources.rego_v0 else ''})"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    announce("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
