"""Loaders: Compose interpolation and resolution, dotenv files, k8s manifests and units."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.loaders.compose import PLACEHOLDERS, load_project
from conformance.loaders.errors import InputError
from conformance.loaders.interpolate import InterpolationError, interpolate, parse_env_file
from conformance.loaders.k8s import load_manifests
from conformance.loaders.units import docker_memory, format_bytes, format_cpu, k8s_quantity

ENV = {"SET": "v", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET-${SET}", "v-v"),
        ("${MISSING:-d}/${EMPTY:-d}/${EMPTY-d}/${MISSING-d}", "d/d//d"),
        ("${SET:+r}/${EMPTY:+r}/${EMPTY+r}/${MISSING+r}", "r//r/"),
        ("${MISSING:-${SET}x}", "vx"),
        ("$$SET and $$", "$SET and $"),
        ("${SET:?boom}", "v"),
        ("cost: $5", "cost: $5"),
    ],
)
def test_interpolation_forms(text: str, expected: str) -> None:
    assert interpolate(text, ENV).value == expected


def test_required_variable_errors_or_takes_a_placeholder() -> None:
    with pytest.raises(InterpolationError, match=r"MISSING.*run setup first"):
        interpolate("${MISSING:?run setup first}", ENV)
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?}", ENV)
    assert interpolate("${EMPTY?}", ENV).value == ""  # set, even if empty
    result = interpolate("${MISSING:?x}", ENV, {"MISSING": "ph"})
    assert (result.value, result.placeholders_used) == ("ph", ["MISSING"])
    with pytest.raises(InterpolationError, match="unterminated"):
        interpolate("${SET", ENV)


def test_env_file_parsing() -> None:
    text = '# c\nexport A=1\nB=\'two words\'\nC="q\\"x"\nD=plain # comment\n\nE=\n'
    assert parse_env_file(text, "f") == {"A": "1", "B": "two words", "C": 'q"x', "D": "plain", "E": ""}
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("not a pair\n", "f")


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
    ports: ["127.0.0.1:${PORT:-8080}:80", "9000/udp"]
    volumes: ["data:/data", "./conf:/conf:ro"]
    tmpfs: ["/tmp"]
volumes: {data: {}}
"""


def test_compose_env_file_shell_and_placeholders(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    fresh = load_project([compose], environ={})
    app = fresh.services["app"]
    assert fresh.env_file is None and fresh.placeholders_used == {"PASSWORD"}
    assert app.environment["PASSWORD"].value.value == PLACEHOLDERS.get("PASSWORD", "__PASSWORD__")
    assert app.environment["PASSWORD"].value.variables == ("PASSWORD",)
    assert [(p.target, p.protocol, p.published, p.host_ip) for p in app.ports] == [
        (80, "tcp", "8080", "127.0.0.1"),
        (9000, "udp", None, None),
    ]
    assert [(m.target, m.kind, m.read_only) for m in app.mounts] == [
        ("/data", "volume", False),
        ("/conf", "bind", True),
        ("/tmp", "tmpfs", False),
    ]

    (tmp_path / ".env.local").write_text("PASSWORD=s3cret\nPORT=18080\nIMAGE=app:2.0\n")
    loaded = load_project([compose], environ={"IMAGE": "app:3.0"})  # the shell wins over the env file
    app = loaded.services["app"]
    assert loaded.env_file == tmp_path / ".env.local" and not loaded.placeholders_used
    assert app.environment["PASSWORD"].value.value == "s3cret"
    assert app.image is not None and app.image.value == "app:3.0"
    # host ports: the machine's choice is kept, and the declared default beside it
    assert (app.ports[0].published, app.ports[0].published_declared) == ("18080", "8080")


def test_compose_override_merges_like_compose(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    _compose(
        tmp_path / "compose",
        "services:\n  app:\n    environment: [EXTRA=1]\n    ports: ['7000:7000']\n    mem_limit: 64m\n",
        "docker-compose.override.yml",
    )
    project = load_project(None, repo_root=tmp_path, environ={"PASSWORD": "p"})
    app = project.services["app"]
    assert [f.name for f in project.files] == ["docker-compose.yml", "docker-compose.override.yml"]
    assert set(app.environment) == {"PASSWORD", "LIST_FORM", "EXTRA"}
    assert [p.target for p in app.ports] == [80, 9000, 7000]
    assert app.mem_limit == 64 * 1024 * 1024
    # an explicit file list does not pick up the override (as `docker compose -f`)
    assert "EXTRA" not in load_project([compose], environ={"PASSWORD": "p"}).services["app"].environment


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("services: [unclosed", "malformed YAML"),
        ("- a list\n", "must be a YAML mapping"),
        ("servics: {}\n", "unknown top-level keys"),
        ("services:\n  a: {}\n", "neither image nor build"),
        ("services:\n  a: {image: x, depends_on: [b]}\n", "unknown service 'b'"),
        ("services:\n  a: {image: x, networks: [nope]}\n", "undeclared networks"),
        ("services:\n  a: {image: x, mem_limit: lots}\n", "not a memory size"),
    ],
)
def test_unreadable_compose_names_the_file(tmp_path: Path, body: str, message: str) -> None:
    compose = _compose(tmp_path / "c", body)
    with pytest.raises(InputError, match=message) as info:
        load_project([compose], environ={})
    assert info.value.path == str(compose)


def test_required_variable_missing_with_an_env_file_is_an_input_error(tmp_path: Path) -> None:
    compose = _compose(tmp_path / "compose", BASE)
    env = tmp_path / "my.env"
    env.write_text("PORT=1\n")
    with pytest.raises(InputError, match="PASSWORD is missing a value: set it"):
        load_project([compose], env, environ={})
    with pytest.raises(InputError, match="env file does not exist"):
        load_project([compose], tmp_path / "nope.env", environ={})


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
