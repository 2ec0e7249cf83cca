"""Load a Compose project the way `docker compose` resolves it, into a small typed model.

Resolution, as Compose does it:
- files: the given file(s) in order; with no explicit file list (`load_project(None, ...)` or the CLI
  without `--compose`), `compose/docker-compose.yml` plus `docker-compose.override.yml` beside it
  when that exists. Later files merge into earlier ones (mappings merge, `ports`/`volumes`/`expose`
  append, `environment`/`labels` merge by key, everything else is replaced).
- variables: the shell environment wins over the env file. The env file is `--env-file` when given, else
  `.env.local` in the repository root (what `scripts/dev_up.sh` writes and the README passes), else
  Compose's own `.env` in the project directory.
- with no env file at all (a fresh clone), required variables (`${VAR:?msg}`) take the documented
  PLACEHOLDERS below, so the static gate still runs; the project records which ones it used.

Each value keeps the text as written (`raw`) beside the interpolated value: host ports are compared by
their declared default (machine-specific choices of `dev_up.sh` are not drift), and the security
comparator tells `${POSTGRES_PASSWORD}` from a literal password.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.loaders.errors import InputError
from conformance.loaders.interpolate import Interpolated, InterpolationError, interpolate, parse_env_file
from conformance.loaders.units import docker_memory

# Values for required variables when no env file exists (a fresh clone). They only need to be
# well-formed: credentials are compared by where they come from, never by value.
PLACEHOLDERS: dict[str, str] = {
    "POSTGRES_USER": "somabrain",
    "POSTGRES_PASSWORD": "placeholder-password",
    "POSTGRES_DB": "somabrain",
}

TOP_LEVEL_KEYS = {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include"}
APPEND_KEYS = {"ports", "expose", "volumes", "tmpfs", "cap_add", "cap_drop", "security_opt", "dns", "env_file"}
DICT_KEYS = {"environment", "labels"}


@dataclass(frozen=True)
class Value:
    """A string as written in the file and as interpolated."""

    raw: str
    value: str
    variables: tuple[str, ...] = ()

    @property
    def is_literal(self) -> bool:
        return not self.variables


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: Value
    source: str  # "environment" or "env_file:<path>"


@dataclass(frozen=True)
class PortMapping:
    target: int
    protocol: str = "tcp"
    published: str | None = None  # as interpolated
    published_declared: str | None = None  # the default in `${VAR:-default}`, else the value
    host_ip: str | None = None


@dataclass(frozen=True)
class Mount:
    target: str
    kind: str  # volume | bind | tmpfs
    source: str = ""  # volume name or absolute host path
    read_only: bool = False


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]  # normalised: ("CMD", ...) or ("CMD-SHELL", "...")
    disabled: bool = False


@dataclass
class ComposeService:
    name: str
    image: Value | None = None
    build_context: Path | None = None
    dockerfile: Path | None = None
    command: tuple[str, ...] = ()
    environment: dict[str, EnvVar] = field(default_factory=dict)
    ports: list[PortMapping] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    healthcheck: Healthcheck | None = None
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # network -> aliases
    mem_limit: int | None = None
    cpus: float | None = None
    mem_reservation: int | None = None
    user: str | None = None
    read_only: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    privileged: bool = False


@dataclass
class ComposeProject:
    files: list[Path]
    env_file: Path | None
    placeholders_used: set[str]
    services: dict[str, ComposeService]
    networks: set[str]
    volumes: set[str]

    @property
    def directory(self) -> Path:
        return self.files[0].parent


def default_files(compose_dir: Path) -> list[Path]:
    """Compose's own default: docker-compose.yml plus the override beside it when present."""
    base = compose_dir / "docker-compose.yml"
    files = [base]
    for name in ("docker-compose.override.yml", "docker-compose.override.yaml"):
        if (compose_dir / name).is_file():
            files.append(compose_dir / name)
            break
    return files


def find_env_file(project_dir: Path) -> Path | None:
    """`.env.local` in the repository root (the project dir's parent), else `.env` in the project dir."""
    for candidate in (project_dir.parent / ".env.local", project_dir / ".env"):
        if candidate.is_file():
            return candidate
    return None


def load_project(
    files: list[Path] | None,
    env_file: Path | None = None,
    *,
    repo_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ComposeProject:
    """Load and resolve a Compose project. Raises InputError for anything unreadable."""
    if not files:
        files = default_files((repo_root or Path.cwd()) / "compose")
    files = [Path(f).resolve() for f in files]
    docs = [_read_yaml(f) for f in files]
    merged: dict[str, Any] = {}
    for doc in docs:
        merged = _merge(merged, doc, key="")

    if env_file is not None:
        if not env_file.is_file():
            raise InputError(env_file, "env file does not exist")
    else:
        env_file = find_env_file(files[0].parent)
    variables: dict[str, str] = {}
    if env_file is not None:
        try:
            variables.update(parse_env_file(env_file.read_text(encoding="utf-8"), str(env_file)))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(env_file, f"cannot read env file: {exc}") from exc
        except ValueError as exc:
            raise InputError(env_file, str(exc).split(": ", 1)[-1]) from exc
    variables.update(os.environ if environ is None else environ)
    placeholders = PLACEHOLDERS if env_file is None else None
    resolver = _Resolver(files[0], variables, placeholders)

    services_raw = merged.get("services")
    if not isinstance(services_raw, dict) or not services_raw:
        raise InputError(files[0], "no `services:` mapping")
    services = {name: _service(name, spec, resolver, files[0].parent) for name, spec in services_raw.items()}
    networks = set((merged.get("networks") or {}).keys()) | {"default"}
    for svc in services.values():
        unknown = set(svc.networks) - networks
        if unknown:
            raise InputError(files[0], f"service {svc.name!r} uses undeclared networks {sorted(unknown)}")
        for dep in svc.depends_on:
            if dep not in services:
                raise InputError(files[0], f"service {svc.name!r} depends on unknown service {dep!r}")
    return ComposeProject(
        files=files,
        env_file=env_file,
        placeholders_used=resolver.placeholders_used,
        services=services,
        networks=networks,
        volumes=set((merged.get("volumes") or {}).keys()),
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(path, "compose file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read compose file: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(path, f"malformed YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise InputError(path, "a compose file must be a YAML mapping")
    unknown = {k for k in doc if not str(k).startswith("x-")} - TOP_LEVEL_KEYS
    if unknown:
        raise InputError(path, f"unknown top-level keys {sorted(map(str, unknown))} (not in the Compose spec)")
    return doc


def _merge(base: Any, override: Any, key: str) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for k, v in override.items():
            out[k] = _merge(out[k], v, k) if k in out else copy.deepcopy(v)
        return out
    if key in DICT_KEYS:
        return {**_as_dict(base), **_as_dict(override)}
    if key in APPEND_KEYS and isinstance(base, list) and isinstance(override, list):
        return [*base, *(v for v in override if v not in base)]
    if key == "networks" and isinstance(base, list | dict) and isinstance(override, list | dict):
        return {**_as_dict(base), **_as_dict(override)}
    return copy.deepcopy(override)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        k, sep, v = str(item).partition("=")
        out[k] = v if sep else None
    return out


class _Resolver:
    def __init__(self, path: Path, variables: dict[str, str], placeholders: Mapping[str, str] | None) -> None:
        self.path = path
        self.variables = variables
        self.placeholders = placeholders
        self.placeholders_used: set[str] = set()

    def value(self, raw: object, where: str) -> Value:
        text = _scalar(raw)
        try:
            result: Interpolated = interpolate(text, self.variables, self.placeholders)
        except InterpolationError as exc:
            raise InputError(self.path, f"{where}: {exc}") from exc
        self.placeholders_used.update(result.placeholders_used)
        return Value(text, result.value, tuple(dict.fromkeys(result.variables)))

    def declared(self, raw: object, where: str) -> str:
        """The value with every `${VAR:-default}` taken at its default: the file's declared intent."""
        try:
            return interpolate(_scalar(raw), {}, self.placeholders or {}).value
        except InterpolationError as exc:
            raise InputError(self.path, f"{where}: {exc}") from exc


def _scalar(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _service(name: str, spec: Any, res: _Resolver, project_dir: Path) -> ComposeService:
    where = f"services.{name}"
    if not isinstance(spec, dict):
        raise InputError(res.path, f"{where} must be a mapping")
    svc = ComposeService(name=name)
    if "image" in spec:
        svc.image = res.value(spec["image"], f"{where}.image")
    build = spec.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build.get("context", ".")
        svc.build_context = (project_dir / res.value(context, f"{where}.build").value).resolve()
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        svc.dockerfile = svc.build_context / res.value(dockerfile, f"{where}.build.dockerfile").value
    if svc.image is None and svc.build_context is None:
        raise InputError(res.path, f"{where} has neither image nor build")
    command = spec.get("command")
    if isinstance(command, list):
        svc.command = tuple(res.value(c, f"{where}.command").value for c in command)
    elif command is not None:
        svc.command = tuple(res.value(command, f"{where}.command").value.split())

    for env_path in _list(spec.get("env_file")):
        path = env_path if isinstance(env_path, str) else env_path.get("path", "")
        full = (project_dir / path).resolve()
        try:
            data = parse_env_file(full.read_text(encoding="utf-8"), str(full))
        except OSError as exc:
            raise InputError(full, f"env_file of service {name!r} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise InputError(full, str(exc).split(": ", 1)[-1]) from exc
        for key, value in data.items():
            svc.environment[key] = EnvVar(key, Value(value, value), f"env_file:{full}")
    for key, raw in _as_dict(spec.get("environment")).items():
        if raw is None:  # `- NAME` or `NAME:` without value: taken from the shell environment
            raw = "${" + key + "}"
        svc.environment[key] = EnvVar(key, res.value(raw, f"{where}.environment.{key}"), "environment")

    for item in _list(spec.get("ports")):
        svc.ports.extend(_ports(item, res, f"{where}.ports"))
    for item in _list(spec.get("expose")):
        svc.expose.append(int(str(res.value(item, f"{where}.expose").value).split("/")[0]))
    for item in _list(spec.get("volumes")):
        svc.mounts.append(_mount(item, res, f"{where}.volumes", project_dir))
    for item in _list(spec.get("tmpfs")):
        svc.mounts.append(Mount(target=res.value(item, f"{where}.tmpfs").value.split(":")[0], kind="tmpfs"))

    hc = spec.get("healthcheck")
    if isinstance(hc, dict):
        test = hc.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        tests = tuple(res.value(t, f"{where}.healthcheck.test").value for t in (test or ()))
        svc.healthcheck = Healthcheck(tests, disabled=bool(hc.get("disable")) or tests[:1] == ("NONE",))

    deps = spec.get("depends_on") or {}
    if isinstance(deps, list):
        svc.depends_on = {str(d): "service_started" for d in deps}
    else:
        svc.depends_on = {str(d): str((c or {}).get("condition", "service_started")) for d, c in deps.items()}

    nets = spec.get("networks")
    if nets is None:
        svc.networks = {} if spec.get("network_mode") else {"default": ()}
    elif isinstance(nets, list):
        svc.networks = {str(n): () for n in nets}
    else:
        svc.networks = {str(n): tuple((c or {}).get("aliases", ())) for n, c in nets.items()}

    try:
        limits = ((spec.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        reservations = ((spec.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
        mem = spec.get("mem_limit", limits.get("memory"))
        svc.mem_limit = docker_memory(res.value(mem, f"{where}.mem_limit").value) if mem is not None else None
        cpus = spec.get("cpus", limits.get("cpus"))
        svc.cpus = float(res.value(cpus, f"{where}.cpus").value) if cpus is not None else None
        mres = spec.get("mem_reservation", reservations.get("memory"))
        svc.mem_reservation = docker_memory(res.value(mres, where).value) if mres is not None else None
    except ValueError as exc:
        raise InputError(res.path, f"{where}: {exc}") from exc

    if spec.get("user") is not None:
        svc.user = res.value(spec["user"], f"{where}.user").value
    svc.read_only = bool(spec.get("read_only", False))
    svc.cap_drop = tuple(str(c).upper() for c in _list(spec.get("cap_drop")))
    svc.cap_add = tuple(str(c).upper() for c in _list(spec.get("cap_add")))
    svc.security_opt = tuple(str(s) for s in _list(spec.get("security_opt")))
    svc.privileged = bool(spec.get("privileged", False))
    return svc


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ports(item: Any, res: _Resolver, where: str) -> list[PortMapping]:
    if isinstance(item, dict):
        target = int(res.value(item["target"], where).value)
        published = res.value(item["published"], where).value if "published" in item else None
        declared = res.declared(item["published"], where) if "published" in item else None
        return [PortMapping(target, str(item.get("protocol", "tcp")), published, declared, item.get("host_ip"))]
    value = res.value(item, where).value
    declared_text = res.declared(item, where)
    spec, _, proto = value.partition("/")
    dspec = declared_text.partition("/")[0]
    parts = spec.rsplit(":", 2)
    dparts = dspec.rsplit(":", 2)
    try:
        if len(parts) == 1:
            return [PortMapping(int(parts[0]), proto or "tcp")]
        if len(parts) == 2:
            return [PortMapping(int(parts[1]), proto or "tcp", parts[0], dparts[0])]
        return [PortMapping(int(parts[2]), proto or "tcp", parts[1], dparts[1], parts[0] or None)]
    except ValueError as exc:
        raise InputError(
            res.path, f"{where}: cannot read port mapping {value!r} (ranges are not supported)"
        ) from exc


def _mount(item: Any, res: _Resolver, where: str, project_dir: Path) -> Mount:
    if isinstance(item, dict):
        kind = str(item.get("type", "volume"))
        source = res.value(item.get("source", ""), where).value
        if kind == "bind":
            source = str((project_dir / source).resolve())
        return Mount(str(item["target"]), kind, source, bool(item.get("read_only", False)))
    text = res.value(item, where).value
    parts = text.split(":")
    if len(parts) == 1:
        return Mount(parts[0], "volume")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else ""
    read_only = "ro" in mode.split(",")
    if source.startswith((".", "/", "~")):
        return Mount(target, "bind", str((project_dir / os.path.expanduser(source)).resolve()), read_only)
    return Mount(target, "volume", source, read_only)
