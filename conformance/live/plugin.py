"""The conformance plugin: `pytest conformance/ --env dev|prod`.

Options (see `pytest conformance/ --help`, group "conformance"), one mark per dimension (`-m dns`, `-m readiness`,
`-m tls`, `-m netpol`, `-m api`), the `target` fixture (the environment, checked reachable before any test runs:
an unreachable environment is one usage error, exit 4, not a stack of failures) and the report hook that
turns every test into one check of the JSON report (`--report-json FILE`; JUnit comes from `--junitxml`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.expectations import TLS_MIN_DAYS_DEFAULT
from conformance.inventory import API, NAMESPACE, TLS_FRONT, Service
from conformance.live.report import DIMENSIONS, CheckEntry, Report
from conformance.netpol.connectivity import dev_table, prod_table
from conformance.netpol.truthtable import TruthTable
from targets.base import Target, TargetUnreachable
from targets.compose import ComposeTarget
from targets.envfile import compose_project
from targets.kube import KubeTarget

REPO = Path(__file__).resolve().parents[2]
TARGET_KEY = pytest.StashKey[Target]()
REPORT_KEY = pytest.StashKey[Report]()
SETTINGS_KEY = pytest.StashKey["Settings"]()
SUMMARY_KEY = pytest.StashKey[dict[str, str]]()  # titled blocks printed in the terminal summary
CONNECTIVITY_KEY = pytest.StashKey[Callable[["Settings"], TruthTable]]()  # the environment's truth table builder
MARKS = {
    "dns": "DNS: every service name of the seed resolves from the API workload and accepts TCP",
    "readiness": "readiness: /health shape and values, readiness requirements, probes and Ready replicas",
    "tls": "TLS: chain, SAN, expiry, protocol versions of the ingress endpoint (and the prod Secret)",
    "netpol": "NetworkPolicy: expected vs observed connectivity truth table, plus static policy checks",
    "api": "API contract: schemathesis against the live base URL and its served /openapi.json",
}


@dataclass
class Settings:
    """Everything the checks need to know about how to reach the environment (resolved once)."""

    env: str
    base_url: str
    tls_endpoint: str | None
    tls_ca: Path
    tls_min_days: int
    jwt_private_key: Path | None
    netpol_policy: Path | None
    compose_file: Path
    k8s_dir: Path
    api_examples: int
    notes: list[str] = field(default_factory=list)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "SomaBrain conformance suite (pytest conformance/ --env dev|prod)")
    group.addoption("--env", choices=("dev", "prod"), default=None,
                    help="environment under test: dev = the compose stack, prod = a Kubernetes cluster")
    group.addoption("--compose-project", default=None, metavar="P",
                    help="compose project of the dev stack (default: COMPOSE_PROJECT_NAME of .env.local, else of "
                         "the environment, else 'somabrain'; targets/envfile.py)")
    group.addoption("--compose-file", default=str(REPO / "compose" / "docker-compose.yml"), metavar="FILE",
                    help="compose file whose networks define the expected dev connectivity")
    group.addoption("--kube-context", default=None, metavar="C", help="kubeconfig context for --env prod "
                    "(default: the current context)")
    group.addoption("--kubeconfig", default=None, metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, "
                    "~/.kube/config)")
    group.addoption("--namespace", default=NAMESPACE, help=f"namespace for --env prod (default {NAMESPACE})")
    group.addoption("--k8s-dir", default=str(REPO / "k8s"), metavar="DIR",
                    help="kustomize root for the static NetworkPolicy checks (default k8s/)")
    group.addoption("--netpol-policy", default=None, metavar="FILE",
                    help="static mode: evaluate the NetworkPolicies of FILE instead of those of --k8s-dir "
                         "(e.g. tests/deploy/fixtures/guide_networkpolicy.yaml, which must fail)")
    group.addoption("--base-url", default=None, metavar="URL",
                    help="API base URL (dev default: 127.0.0.1 and the published port of somabrain:9696; "
                         "prod default: http://127.0.0.1:9696, the Tilt/port_forward.sh port-forward)")
    group.addoption("--resolve", default=[], action="append", metavar="HOST:PORT:ADDRESS",
                    help="as curl's --resolve: connect to ADDRESS for HOST:PORT, with HOST kept for SNI and the Host "
                         "header, e.g. --base-url https://somabrain.internal:9999 --resolve "
                         "somabrain.internal:9999:127.0.0.1 runs the API checks through the TLS ingress without a DNS "
                         "entry (an https base URL is verified against --tls-ca)")
    group.addoption("--tls-endpoint", default=None, metavar="HOST:PORT",
                    help="TLS ingress endpoint (prod default 127.0.0.1:9999, the kind ingress port; dev: none, "
                         "compose terminates no TLS, so the TLS checks skip unless you name a TLS front)")
    group.addoption("--tls-ca", default=str(REPO / "infra" / "tls" / "somabrain.internal.crt"), metavar="FILE",
                    help="CA (or the self-signed certificate) that must verify the ingress chain (default "
                         "infra/tls/somabrain.internal.crt from scripts/setup_ingress_tls.sh)")
    group.addoption("--tls-min-days", type=int, default=TLS_MIN_DAYS_DEFAULT, metavar="N",
                    help=f"fail when the certificate expires within N days (default {TLS_MIN_DAYS_DEFAULT})")
    group.addoption("--jwt-private-key", default=None, metavar="PEM",
                    help="RS256 key that signs test tokens when the API has auth on (default .run/jwt/jwt_priv.pem,"
                         " written by scripts/dev_up.sh --kind-secrets)")
    group.addoption("--api-examples", type=int, default=int(os.environ.get("CONFORMANCE_API_EXAMPLES", "20")),
                    metavar="N", help="schemathesis examples per operation (default 20)")
    group.addoption("--report-json", default=None, metavar="FILE", help="write the JSON report here")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", "environments(*envs): the check exists only in these environments (a "
                            "Kubernetes object compose has no counterpart of); elsewhere it is not collected")
    if config.option.help or config.option.version:
        return
    env = config.getoption("--env")
    if env is None:
        raise pytest.UsageError(
            "conformance: choose the environment: --env dev (the compose stack) or --env prod (a Kubernetes "
            "cluster from the kubeconfig, --kube-context C)")
    target = build_target(config)
    config.stash[SUMMARY_KEY] = {}
    if not config.option.collectonly:
        try:
            target.check_reachable()
        except TargetUnreachable as exc:
            raise pytest.UsageError(f"conformance --env {env}: {exc}") from None
    config.stash[TARGET_KEY] = target
    config.stash[SETTINGS_KEY] = build_settings(config, target)
    config.stash[REPORT_KEY] = Report(environment=env, target=target.describe())


def build_target(config: pytest.Config) -> Target:
    """The target of --env, with the builder of its connectivity truth table bound to it (CONNECTIVITY_KEY): how
    connectivity is expected differs by environment (compose networks; NetworkPolicies), and it is chosen here,
    where the environment is, not by asking the target later which one it is."""
    if config.getoption("--env") == "dev":
        compose = ComposeTarget(compose_project(config.getoption("--compose-project")))
        config.stash[CONNECTIVITY_KEY] = lambda settings: dev_table(compose, settings.compose_file)
        return compose
    kube = KubeTarget(context=config.getoption("--kube-context"), namespace=config.getoption("--namespace"),
                      kubeconfig=config.getoption("--kubeconfig"))
    config.stash[CONNECTIVITY_KEY] = lambda settings: prod_table(kube)
    return kube


def pin_resolution(specs: list[str]) -> None:
    """--resolve HOST:PORT:ADDRESS for this process: every client (requests, schemathesis, urllib) that looks up
    HOST for PORT gets ADDRESS instead; anything else resolves as before."""
    pins: dict[tuple[str, str], str] = {}
    for spec in specs:
        host, _, rest = spec.partition(":")
        port, _, address = rest.partition(":")
        if not host or not port.isdigit() or not address:
            raise pytest.UsageError(f"--resolve {spec!r}: expected HOST:PORT:ADDRESS, e.g. "
                                    "somabrain.internal:9999:127.0.0.1")
        pins[(host.lower(), port)] = address
    if not pins:
        return
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        address = pins.get((str(host).lower(), str(port)))
        return original(address if address is not None else host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def build_settings(config: pytest.Config, target: Target) -> Settings:
    env = config.getoption("--env")
    notes: list[str] = []
    pin_resolution(config.getoption("--resolve"))
    base_url = config.getoption("--base-url")
    if base_url is None and not config.option.collectonly:
        api = target.local_endpoint(API.key, API.port)
        if api.address is None:
            notes.append(f"{api.note or f'{API.key}:{API.port} has no address on this host'}; the API checks use "
                         f"port {API.port}")
        base_url = f"http://{api.address or f'127.0.0.1:{API.port}'}"
    base_url = base_url or f"http://127.0.0.1:{API.port}"
    tls_endpoint = config.getoption("--tls-endpoint")
    if tls_endpoint is None and not config.option.collectonly:
        front = target.local_endpoint(TLS_FRONT.key, TLS_FRONT.port)
        if front.note:
            notes.append(f"{front.note}; no TLS endpoint")
        tls_endpoint = front.address
    key = config.getoption("--jwt-private-key")
    default_key = REPO / ".run" / "jwt" / "jwt_priv.pem"
    policy = config.getoption("--netpol-policy")
    return Settings(
        env=env,
        base_url=base_url.rstrip("/"),
        tls_endpoint=tls_endpoint,
        tls_ca=Path(config.getoption("--tls-ca")),
        tls_min_days=config.getoption("--tls-min-days"),
        jwt_private_key=Path(key) if key else (default_key if default_key.is_file() else None),
        netpol_policy=Path(policy) if policy else None,
        compose_file=Path(config.getoption("--compose-file")),
        k8s_dir=Path(config.getoption("--k8s-dir")),
        api_examples=config.getoption("--api-examples"),
        notes=notes,
    )


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    return pytestconfig.stash[TARGET_KEY]


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def env(settings: Settings) -> str:
    return settings.env


@dataclass
class Check:
    """What one test checks; the test fills `expected` and `observed`, the hook adds the status."""

    id: str
    dimension: str
    subject: str
    expected: Any = None
    observed: Any = None


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Check:
    item: pytest.Item = request.node
    found = item.stash.get(CHECK_KEY, None)
    assert found is not None, "conformance tests must carry one dimension mark"
    return found


CHECK_KEY = pytest.StashKey[Check]()


def dimension_of(item: pytest.Item) -> str | None:
    for mark in item.iter_markers():
        if mark.name in DIMENSIONS:
            return mark.name
    return None


def check_id(item: pytest.Item, dimension: str) -> tuple[str, str]:
    """(id, subject): `dns/resolves/redis` from test_dns.py::test_resolves[redis]; stable across environments."""
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    subject = callspec.id if callspec is not None else name
    return (f"{dimension}/{name}/{subject}" if callspec is not None else f"{dimension}/{name}"), subject


def _services_of(item: pytest.Item) -> list[Service]:
    callspec = getattr(item, "callspec", None)
    values = list(callspec.params.values()) if callspec is not None else []
    flat = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
    return [v for v in flat if isinstance(v, Service)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A check about a service the environment does not have (prod: Kafka and Prometheus are outside the cluster,
    # as the seed has them) is not collected there: it is absent from the report, not a skip that could read as
    # a pass. `python -m conformance diff` then shows it as absent on that side, accepted only by name in
    # conformance/diff-exceptions.yaml.
    env = config.getoption("--env", default=None)
    if env is not None:
        absent = [item for item in items if any(not s.in_env(env) for s in _services_of(item))
                  or any(env not in mark.args for mark in item.iter_markers("environments"))]
        if absent:
            config.hook.pytest_deselected(items=absent)
            items[:] = [item for item in items if item not in absent]
    for item in items:
        dimension = dimension_of(item)
        if dimension is not None:
            ident, subject = check_id(item, dimension)
            item.stash[CHECK_KEY] = Check(ident, dimension, subject)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    found = item.stash.get(CHECK_KEY, None)
    run_report = item.config.stash.get(REPORT_KEY, None)
    if found is None or run_report is None:
        return report
    status = None
    if report.skipped:
        status = "skipped"
    elif report.failed:
        status = "failed" if report.when == "call" else "error"
    elif report.when == "call":
        status = "passed"
    if status is not None:
        run_report.add(CheckEntry(found.id, found.dimension, found.subject, found.expected, found.observed,
                                  status, _message(report)))
    return report


def _message(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)[:2000]
    return str(report.longrepr)[-2000:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    path = config.getoption("--report-json", None)
    report = config.stash.get(REPORT_KEY, None)
    if path and report is not None:
        report.write(Path(path))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for title, text in config.stash.get(SUMMARY_KEY, {}).items():
        terminalreporter.write_sep("=", title)
        terminalreporter.write_line(text)
    settings = config.stash.get(SETTINGS_KEY, None)
    for note in settings.notes if settings else []:
        terminalreporter.write_line(f"conformance note: {note}")
    path = config.getoption("--report-json", None)
    if path:
        terminalreporter.write_line(f"conformance report: {path}")
