"""The Tiltfile, evaluated with starlark-pyo3. Tilt's builtins are recorders; the test then checks the recorded
calls against the kind overlay the Tiltfile deploys. This is the fast static check; the real Tilt runs it on the
local cluster (`tilt ci` against context somabrain-local, see the README's Cluster section)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import starlark as sl

from conformance.loaders.kustomize import render
from tests.deploy.repo import REPO, Resource

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# The guide's multi-service port-forward list.
GUIDE_FORWARDS = {
    "somabrain": "9696:9696",
    "somamemory": "9595:9595",
    "sb-redis": "6379:6379",
    "postgres": "55432:5432",
    "sb-opa": "8181:8181",
}


@dataclass
class Recorded:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def of(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


BUILTINS = [
    "docker_build",
    "custom_build",
    "decode_yaml_stream",
    "encode_yaml_stream",
    "k8s_yaml",
    "k8s_resource",
    "local_resource",
    "local",
    "sync",
    "run",
    "fall_back_on",
    "port_forward",
    "link",
    "allow_k8s_contexts",
    "docker_compose",
    "dc_resource",
    "fail",
    "_config_define_string",
    "_config_parse",
    "kustomize",
]


def evaluate_tiltfile(path: Path, args: dict[str, str] | None = None, context: str = "kind-somabrain",
                      env: dict[str, str] | None = None) -> Recorded:
    rec = Recorded()

    def recorder(name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            rec.calls.append((name, a, k))
            if name == "fail":
                raise RuntimeError(f"Tiltfile fail(): {a[0]}")
            if name == "_config_parse":
                return dict(args or {})
            if name in ("sync", "run", "fall_back_on", "link", "port_forward"):
                return {"step": name, "args": list(a), **k}
            if name == "kustomize":
                return {"kustomize": a[0]}
            if name == "decode_yaml_stream":
                return [{"kind": "Deployment", "from": a[0]}, {"kind": "ServiceMonitor", "from": a[0]}]
            if name == "encode_yaml_stream":
                return {"objects": a[0]}
            if name == "local":
                return ""  # e.g. `kubectl get crd ...`: nothing found
            return None

        return call

    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    module = sl.Module()
    for name in BUILTINS:
        module.add_callable(name, recorder(name))
    module["TRIGGER_MODE_MANUAL"] = "manual"
    module["TRIGGER_MODE_AUTO"] = "auto"
    environ = dict(env or {})
    module.add_callable("k8s_context", lambda: context)
    module.add_callable("_getenv", lambda key, default=None: environ.get(key, default))
    sl.eval(
        module,
        sl.parse("prelude", "config = struct(define_string=_config_define_string, parse=_config_parse)\n"
                            "os = struct(getenv=_getenv)\n"),
        globals_,
    )

    def loader(name: str) -> sl.FrozenModule:
        raise AssertionError(f"the Tiltfile loads {name!r}: extensions are fetched at run time, offline they fail")

    # Tilt's dialect: top-level if/for are allowed (the standard Starlark dialect refuses them).
    dialect = sl.Dialect.standard()
    dialect.enable_top_level_stmt = True
    sl.eval(module, sl.parse(str(path), path.read_text(), dialect=dialect), globals_, sl.FileLoader(loader))
    return rec


@pytest.fixture(scope="module")
def tilt() -> Recorded:
    return evaluate_tiltfile(REPO / "Tiltfile")


@pytest.fixture(scope="module")
def deployed(tilt: Recorded, k8s_copy: Path) -> list[Resource]:
    ((args, _),) = tilt.of("k8s_yaml")
    assert args[0] == {"kustomize": "k8s/overlays/kind"}
    return render(k8s_copy / "overlays" / "kind").resources


def _builds(tilt: Recorded) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    return tilt.of("docker_build")


def test_no_extension_is_loaded() -> None:
    code = [line for line in (REPO / "Tiltfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.match(r"\s*load\(", line)]


def test_deploys_the_kind_overlay_as_it_renders(tilt: Recorded, deployed: list[Resource]) -> None:
    """No filtering by hand: the overlay has no ServiceMonitor (opt-in component) and no Secret (made in step 2)."""
    assert not tilt.of("decode_yaml_stream") and not tilt.of("encode_yaml_stream")
    assert not [a for a, _ in tilt.of("local") if "get crd" in a[0]]
    assert not [r for r in deployed if r["kind"] in ("ServiceMonitor", "Secret")]


def _index(tilt: Recorded, name: str, contains: str = "") -> int:
    return next(i for i, (n, a, _) in enumerate(tilt.calls) if n == name and contains in str(a[0] if a else ""))


@pytest.mark.parametrize("context", ["kind-somabrain", "somabrain-local"])
def test_secrets_are_created_before_anything_is_deployed(context: str) -> None:
    rec = evaluate_tiltfile(REPO / "Tiltfile", context=context)
    (secrets,) = [a[0] for a, _ in rec.of("local") if "k8s_secrets.sh" in a[0]]
    argv = secrets.split()
    assert argv[0] == "scripts/k8s_secrets.sh" and (REPO / argv[0]).is_file()
    assert argv[argv.index("--context") + 1] == context
    # What dev_up.sh --kind-secrets writes, run before: compose's Postgres credentials and the dev JWT public key.
    assert argv[argv.index("--from-env-file") + 1] == ".env.local"
    assert argv[argv.index("--jwt-public-key") + 1] == ".run/jwt/jwt_pub.pem"
    assert "--force" not in argv  # a reload never replaces what exists
    assert _index(rec, "local", "dev_up.sh --any-port --kind-secrets") < _index(rec, "local", "k8s_secrets.sh")
    assert _index(rec, "local", "k8s_secrets.sh") < _index(rec, "k8s_yaml")
    dev_up = (REPO / "scripts" / "dev_up.sh").read_text()
    assert 'jwt_dir="$root/.run/jwt"' in dev_up and '-pubout -out "$jwt_dir/jwt_pub.pem"' in dev_up


def test_compose_mode_touches_no_cluster() -> None:
    rec = evaluate_tiltfile(REPO / "Tiltfile", {"mode": "compose"})
    assert not [a for a, _ in rec.of("local") if "k8s_secrets.sh" in a[0] or "kubectl" in a[0]]


def test_every_object_a_resource_claims_is_deployed(tilt: Recorded, deployed: list[Resource]) -> None:
    """Tilt refuses a Tiltfile whose k8s_resource(objects=[...]) names an object that is not in its YAML."""
    present = {(r["metadata"]["name"], r["kind"].lower()) for r in deployed}
    for args, kwargs in tilt.of("k8s_resource"):
        for obj in kwargs.get("objects", []):
            name, _, kind = obj.partition(":")
            assert (name, kind) in present, f"k8s_resource({args[0]!r}) claims {obj}, which is not deployed"


def test_dev_overlay_runs_both_apps_with_reload(deployed: list[Resource]) -> None:
    # No restart_process wrapper: the apps restart themselves after a sync.
    for name in ("somabrain", "somamemory"):
        workload = next(r for r in deployed if r["kind"] == "Deployment" and r["metadata"]["name"] == name)
        (ctr,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        assert "--reload" in ctr["args"], ctr["args"]


def test_airgapped_on_the_local_cluster() -> None:
    rec = evaluate_tiltfile(REPO / "Tiltfile", context="somabrain-local")
    stand_ins = {a[0] for a, _ in rec.of("custom_build")}
    assert stand_ins == {"redis", "postgres", "openpolicyagent/opa", "apache/kafka"}
    for args, kwargs in rec.of("custom_build"):
        assert "scripts/airgap_images.sh --only" in args[1] and "$EXPECTED_REF" in args[1]
        assert all((REPO / d).is_dir() for d in kwargs["deps"])
    ((_, kwargs),) = rec.of("docker_build")
    assert kwargs["build_args"]["BASE_IMAGE"] == "somabrain-airgap/base:local"
    assert kwargs["secret"] == ["id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt"]
    dest = next(d for s, d in (a for a, _ in rec.of("sync")) if s == "./brain")
    assert dest == "/opt/venv/lib/python3.11/site-packages/brain"  # the Debian base's Python
    assert "somabrain-local" in rec.of("allow_k8s_contexts")[0][0][0]


def test_public_images_on_kind_unless_told(tilt: Recorded) -> None:
    assert not tilt.of("custom_build")
    forced = evaluate_tiltfile(REPO / "Tiltfile", env={"AIRGAP": "1"})
    assert len(forced.of("custom_build")) == 4


def test_every_workload_image_is_built_or_a_pinned_public_image(tilt: Recorded, deployed: list[Resource]) -> None:
    built = {a[0] for a, _ in _builds(tilt)}
    assert built == {"somabrain"}
    for res in deployed:
        if res["kind"] in WORKLOAD_KINDS:
            for ctr in res["spec"]["template"]["spec"]["containers"]:
                repo_name, _, tag = ctr["image"].rpartition(":")
                if repo_name in built:
                    continue
                # Not built here: must be a public image pinned to a version (pulled by the cluster).
                assert "/" in repo_name or repo_name in {"redis", "postgres"}, ctr["image"]
                assert tag and tag != "latest", ctr["image"]


def test_live_update_steps(tilt: Recorded) -> None:
    ((_, kwargs),) = _builds(tilt)
    steps = kwargs["live_update"]
    assert steps[0]["step"] == "fall_back_on"
    # A new dependency list rebuilds the image: no pip call from inside a pod.
    assert set(steps[0]["args"][0]) >= {"Dockerfile", "pyproject.toml"}
    syncs = [s for s in steps if s["step"] == "sync"]
    assert any(s["args"][0] == "./brain" for s in syncs)
    assert not [s for s in steps if s["step"] == "run"]


def test_every_sync_source_exists(tilt: Recorded) -> None:
    syncs = [a for a, _ in tilt.of("sync")]
    assert syncs
    for src, _dest in syncs:
        assert (REPO / src).exists(), f"sync source {src} does not exist"


def test_sync_destination_is_where_the_image_installs_the_package(tilt: Recorded) -> None:
    dest = next(d for s, d in (a for a, _ in tilt.of("sync")) if s == "./brain")
    version = re.search(r"python(\d+\.\d+)", dest)
    assert version, dest
    base = re.search(r"ARG BASE_IMAGE=python:(\d+\.\d+)-slim", (REPO / "Dockerfile").read_text())
    assert base and base.group(1) == version.group(1), "SITE_PACKAGES must match the Dockerfile's base image"
    assert dest.startswith("/opt/venv/lib/")


def test_every_k8s_resource_names_a_real_workload(tilt: Recorded, deployed: list[Resource]) -> None:
    workloads = {r["metadata"]["name"] for r in deployed if r["kind"] in WORKLOAD_KINDS}
    named = {a[0] for a, _ in tilt.of("k8s_resource")}
    assert named == workloads
    for args, kwargs in tilt.of("k8s_resource"):
        assert kwargs.get("labels"), f"{args[0]} has no labels"
        for dep in kwargs.get("resource_deps", []):
            assert dep in workloads, f"{args[0]} depends on unknown resource {dep}"


def test_port_forwards_match_the_guide_and_the_services(tilt: Recorded, deployed: list[Resource]) -> None:
    forwards = {a[0]: k.get("port_forwards", []) for a, k in tilt.of("k8s_resource")}
    assert {n: f for n, f in forwards.items() if f} == {n: [pf] for n, pf in GUIDE_FORWARDS.items()}
    services = {r["metadata"]["name"]: r for r in deployed if r["kind"] == "Service"}
    for name, (pf,) in ((n, f) for n, f in forwards.items() if f):
        container_port = int(pf.split(":")[1])
        svc = services[name]
        assert any(p["port"] == container_port for p in svc["spec"]["ports"]), f"{name}: {pf}"
        workload = next(r for r in deployed if r["kind"] in WORKLOAD_KINDS and r["metadata"]["name"] == name)
        ctr_ports = {
            p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        assert container_port in ctr_ports, f"{name}: Tilt forwards to pod port {container_port}"


def test_conformance_runs_on_demand(tilt: Recorded) -> None:
    ((_args, kwargs),) = tilt.of("local_resource")
    assert "pytest conformance/ --env prod" in kwargs["cmd"]
    assert kwargs["trigger_mode"] == "manual" and kwargs["auto_init"] is False


def test_compose_mode_drives_the_compose_file() -> None:
    rec = evaluate_tiltfile(REPO / "Tiltfile", {"mode": "compose"})
    ((args, kwargs),) = rec.of("docker_compose")
    assert args[0] == "compose/docker-compose.yml" and kwargs["env_file"] == ".env.local"
    assert not rec.of("k8s_yaml")
    assert "--env dev" in rec.of("local_resource")[0][1]["cmd"]


def test_the_checks_catch_a_broken_tiltfile(tmp_path: Path, k8s_copy: Path) -> None:
    text = (REPO / "Tiltfile").read_text()
    broken = tmp_path / "Tiltfile"
    broken.write_text(
        text.replace("k8s_resource('sb-redis'", "k8s_resource('redis'").replace("sync('./brain'", "sync('./brian'")
    )
    rec = evaluate_tiltfile(broken)
    rendered = render(k8s_copy / "overlays" / "kind").resources
    workloads = {r["metadata"]["name"] for r in rendered if r["kind"] in WORKLOAD_KINDS}
    assert {a[0] for a, _ in rec.of("k8s_resource")} != workloads
    assert not all((REPO / a[0]).exists() for a, _ in rec.of("sync"))
    with pytest.raises(sl.StarlarkError, match="unknown --mode"):
        evaluate_tiltfile(REPO / "Tiltfile", {"mode": "swarm"})
