"""Dimension `ingress`: the dev TLS front (compose/nginx/nginx.conf) against the k8s Ingress it mirrors.

For every service of the inventory with `ingress` set (sb_ingress <-> Ingress somabrain, ingress-nginx in prod):
- tls-host: the TLS server's server_name <-> the Ingress TLS hosts (and rule hosts);
- certificate: the file nginx serves, through its bind mount, is infra/tls/<host>.crt <-> the TLS secretName is
  the Secret scripts/setup_ingress_tls.sh writes (both come from that script);
- tls-protocols: ssl_protocols <-> the ingress-nginx default `ssl-protocols` (the Ingress sets none);
- body-size: client_max_body_size <-> annotation nginx.ingress.kubernetes.io/proxy-body-size (default 1m);
- backend: where proxy_pass goes (compose service and port, on a network the front shares with it) <-> each
  Ingress backend Service:port, through the inventory to its compose service and container port.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from conformance.inventory import by_k8s_service
from conformance.loaders.compose import ComposeService
from conformance.loaders.nginx import Directive, NginxSyntaxError, parse_nginx, size_bytes
from conformance.parity.context import Pair, ParityContext, host_path
from conformance.parity.findings import Finding, drift, ok

DIM = "ingress"
CONF_PATH = "/etc/nginx/nginx.conf"
# ingress-nginx defaults for what the Ingress does not set (controller ConfigMap keys ssl-protocols, proxy-body-size).
CONTROLLER_SSL_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
CONTROLLER_BODY_SIZE = "1m"
BODY_SIZE_ANNOTATION = "nginx.ingress.kubernetes.io/proxy-body-size"
TLS_SECRET_OF_SETUP_SCRIPT = "somabrain-tls"  # noqa: S105 - scripts/setup_ingress_tls.sh's TLS_SECRET default
CERT_DIR = ("infra", "tls")


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.pairs:
        name = pair.service.ingress
        if name is None:
            continue
        ingress = next((i for i in ctx.k8s.of_kind("Ingress") if i["metadata"]["name"] == name), None)
        prod = f"Ingress/{name}" if ingress else None
        if pair.dev is None or ingress is None:
            where = "compose" if pair.dev is None else "k8s"
            out.append(drift(DIM, pair.name, f"service {pair.name}" if pair.dev else None, prod, f"missing in {where}"))
            continue
        server, problem = _tls_server(ctx, pair.dev)
        if server is None:
            out.append(drift(DIM, f"{pair.name}/config", problem, prod, "no TLS server to compare"))
            continue
        out.extend(_compare(ctx, pair, pair.dev, server, ingress))
    return out


def _tls_server(ctx: ParityContext, svc: ComposeService) -> tuple[Directive | None, str]:
    """The TLS server block of the front's nginx.conf, else None and what is wrong (a finding's dev value, so
    the file is named as the compose file writes it)."""
    conf = host_path(svc, CONF_PATH)
    if conf is None:
        return None, f"nothing mounted at {CONF_PATH}"
    shown = ctx.display_path(conf)
    try:
        root = parse_nginx(conf.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"{shown}: {exc.strerror or exc}"
    except NginxSyntaxError as exc:
        return None, f"{shown}: {exc}"
    server = next((s for s in root.find("server") if s.is_tls), None)
    if server is None:
        return None, f"{shown}: no server listens with ssl"
    # http-level settings apply to the server unless it overrides them
    http = next(iter(root.find("http")), None)
    if http is not None:
        for key in ("client_max_body_size", "ssl_protocols"):
            if server.get(key) is None and http.get(key) is not None:
                server.children.append(Directive(key, http.get(key) or ()))
    return server, ""


def _compare(ctx: ParityContext, pair: Pair, svc: ComposeService, server: Directive,
             ingress: dict[str, Any]) -> list[Finding]:
    spec = ingress.get("spec") or {}
    annotations = ingress["metadata"].get("annotations") or {}
    name = pair.name
    out: list[Finding] = []

    # TLS host
    tls_hosts = sorted({h for t in spec.get("tls") or [] for h in t.get("hosts") or []})
    rule_hosts = sorted({r["host"] for r in spec.get("rules") or [] if r.get("host")})
    names = sorted(set(server.get("server_name") or ()))
    dev, prod = ", ".join(names) or "none", ", ".join(tls_hosts) or "no TLS"
    if names and names == tls_hosts and set(rule_hosts) <= set(tls_hosts):
        out.append(ok(DIM, f"{name}/tls-host", dev, prod))
    else:
        out.append(drift(DIM, f"{name}/tls-host", dev, f"{prod} (rules: {', '.join(rule_hosts) or 'any host'})",
                         "the TLS host names differ"))

    # certificate source
    cert = (server.get("ssl_certificate") or ("",))[0]
    host_cert = host_path(svc, cert) if cert else None
    secrets = sorted({t.get("secretName") for t in spec.get("tls") or [] if t.get("secretName")})
    wanted = (*CERT_DIR, f"{tls_hosts[0]}.crt") if tls_hosts else None
    dev = f"{cert} <- {'/'.join(host_cert.parts[-3:]) if host_cert else 'not mounted'}"
    prod = f"Secret {', '.join(secrets) or 'none'}"
    if host_cert is not None and host_cert.parts[-3:] == wanted and secrets == [TLS_SECRET_OF_SETUP_SCRIPT]:
        out.append(ok(DIM, f"{name}/certificate", dev, prod, "both from scripts/setup_ingress_tls.sh"))
    else:
        out.append(drift(DIM, f"{name}/certificate", dev, prod,
                         f"expected infra/tls/<host>.crt in dev and Secret {TLS_SECRET_OF_SETUP_SCRIPT} in prod "
                         "(what scripts/setup_ingress_tls.sh writes)"))

    # protocols
    protocols = tuple(server.get("ssl_protocols") or ("nginx default",))
    dev, prod = " ".join(protocols), " ".join(CONTROLLER_SSL_PROTOCOLS) + " (ingress-nginx default)"
    if sorted(protocols) == sorted(CONTROLLER_SSL_PROTOCOLS):
        out.append(ok(DIM, f"{name}/tls-protocols", dev, prod))
    else:
        out.append(drift(DIM, f"{name}/tls-protocols", dev, prod, "the accepted TLS versions differ"))

    # request body limit
    dev_size = server.value("client_max_body_size") or "1m"
    prod_size = str(annotations.get(BODY_SIZE_ANNOTATION, CONTROLLER_BODY_SIZE))
    dev_bytes, prod_bytes = size_bytes(dev_size), size_bytes(prod_size)
    if dev_bytes is not None and dev_bytes == prod_bytes:
        out.append(ok(DIM, f"{name}/body-size", dev_size, prod_size))
    else:
        out.append(drift(DIM, f"{name}/body-size", dev_size, prod_size, "the request body limit differs"))

    out.extend(_backends(ctx, pair, svc, server, spec))
    return out


def _backends(ctx: ParityContext, pair: Pair, svc: ComposeService, server: Directive,
              spec: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    targets = server.proxy_targets()
    dev_targets: list[tuple[str | None, int | None, str]] = []
    for url in targets:
        parts = urlsplit(url)
        host = parts.hostname or ""
        dev_targets.append((ctx.dev_host(host), parts.port or 80, url))
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            backend = (path.get("backend") or {}).get("service") or {}
            number = (backend.get("port") or {}).get("number")
            subject = f"{pair.name}/backend{path.get('path', '')}"
            prod = f"Service {backend.get('name')}:{number}"
            row = by_k8s_service(str(backend.get("name")))
            k8s_svc = ctx.k8s.services.get(str(backend.get("name")))
            other = ctx.pair(row.compose) if row else None
            sp = next((p for p in k8s_svc.ports if p.port == number), None) if k8s_svc else None
            container_port = (other.container.port_number(sp.target) if other and other.container and sp else None)
            if row is None or container_port is None:
                out.append(drift(DIM, subject, ", ".join(targets) or None, prod,
                                 "the backend does not resolve to a mapped workload's container port"))
                continue
            prod = f"{prod} -> {row.compose}:{container_port}"
            dev = ", ".join(u for _, _, u in dev_targets) or "no proxy_pass"
            hit = next(((s, p) for s, p, _ in dev_targets if s == row.compose and p == container_port), None)
            shared = bool(other and other.dev and set(svc.networks) & set(other.dev.networks))
            if hit is None:
                out.append(drift(DIM, subject, dev, prod, "the dev front proxies somewhere else"))
            elif not shared:
                out.append(drift(DIM, subject, dev, prod, f"{pair.name} shares no network with {row.compose}"))
            else:
                out.append(ok(DIM, subject, dev, prod))
    return out
