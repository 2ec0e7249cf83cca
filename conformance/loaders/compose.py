"""Load a Compose project as `docker compose` resolves it, into a small typed model.

Compose itself does the resolving (conformance.loaders.compose_cli: `docker compose config`); this module
chooses its inputs and reads its output.
- files: the given file(s) in order, layered as `docker compose -f A -f B`; with no explicit file list
  (`load_project(None, ...)` or the CLI without `--compose`), `compose/docker-compose.yml` plus
  `docker-compose.override.yml` beside it when that exists.
- variables: the shell environment wins over the env file. The env file is `--env-file` when given, else
  `.env.local` in the repository root (what `scripts/dev_up.sh` writes and the README passes), else
  Compose's own `.env` in the project directory; it is always passed to Compose explicitly.
- with no env file at all (a fresh clone), required variables (`${VAR:?msg}`) take the documented
  PLACEHOLDERS below, so the static gate still runs; the project records which ones it used.
- profiles: the services `docker compose up` would run (COMPOSE_PROFILES, else the services without a
  profile), or those of the `profiles` given.

Compose renders the project three times: without interpolation (`raw`, the text as written, and where the
required variables are), with the variables (the values), and with no variable but placeholders for the
required ones (the file's declared defaults). Each value keeps the text as written beside the interpolated
one: the security comparator tells `${POSTGRES_PASSWORD}` from a literal password, and host ports are compared
by their declared default (machine-specific choices of `dev_up.sh` are not drift). Services with `env_file:`
cost one more run, in which Compose reads each file alone: it tells which file a variable comes from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.loaders.compose_cli import render
from conformance.loaders.units import docker_memory

# Values for required variables when no env file exists (a fresh clone). They only need to be
# well-formed: credentials are compared by where they come from, never by value.
PLACEHOLDERS: dict[str, str] = {
    "POSTGRES_USER": "somabrain",
    "POSTGRES_PASSWORD": "placeholder-password",
    "POSTGRES_DB": "somabrain",
    "POSTGRES_APP_USER": "somabrain_app",
    "POSTGRES_APP_PASSWORD": "placeholder-app-password",
    "SOMABRAIN_MEMORY_TOKEN": "placeholder-service-token-placeholder-token",
}

# `$$` (an escaped dollar), `${NAME...}` (group 1; group 2 is `?`/`:?` when the variable is required), `$NAME`.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?\?)?|\$([A-Za-z_][A-Za-z0-9_]*)")


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


def variables(text: str) -> tuple[str, ...]:
    """The variable names `text` refers to (`$NAME`, `${NAME...}`, nested ones too; `$$` is no reference)."""
    names = (m.group(1) or m.group(3) for m in _REFERENCE.finditer(text))
    return tuple(dict.fromkeys(n for n in names if n))


def load_project(
    files: list[Path] | None,
    env_file: Path | None = None,
    *,
    repo_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    profiles: Sequence[str] | None = None,
) -> ComposeProject:
    """Load and resolve a Compose project. Raises InputError for anything Compose cannot read."""
    files = [Path(f).resolve() for f in files or default_files((repo_root or Path.cwd()) / "compose")]
    if env_file is None:
        env_file = find_env_file(files[0].parent)
    shell = dict(os.environ if environ is None else environ)
    raw = render(files, env_file, shell, interpolate=False, profiles=profiles)
    required = sorted({m.group(1) for s in _strings(raw) for m in _REFERENCE.finditer(s) if m.group(2)})
    placeholders = {} if env_file is not None else {n: _placeholder(n) for n in required if not shell.get(n)}
    env = {**shell, **placeholders}
    # The declared defaults: no variable but placeholders for the required ones, every profile (looked up by name).
    bare = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    declared_env = {**bare, **{n: _placeholder(n) for n in required}}
    env_files = sorted({f["path"] for svc in raw["services"].values() for f in svc.get("env_file") or ()})
    with ThreadPoolExecutor() as pool:
        resolved_job = pool.submit(render, files, env_file, env, profiles=profiles)
        declared_job = pool.submit(render, files, None, declared_env, profiles=["*"])
        keys_job = pool.submit(_env_file_keys, env_files, env_file, env, files[0]) if env_files else None
        resolved, declared = resolved_job.result(), declared_job.result()
        env_file_keys = keys_job.result() if keys_job else {}
    services = {
        name: _service(name, spec, raw["services"][name], declared["services"][name], env_file_keys)
        for name, spec in resolved["services"].items()
    }
    return ComposeProject(
        files=files,
        env_file=env_file,
        placeholders_used=set(placeholders),
        services=services,
        networks=set(resolved.get("networks") or {}) | {"default"},
        volumes=set(resolved.get("volumes") or {}),
    )


def _placeholder(name: str) -> str:
    return PLACEHOLDERS.get(name, f"__{name}__")


def _strings(node: Any) -> Iterator[str]:
    """Every string value of a rendered project (where `${VAR:?}` may be written)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _env_file_keys(
    paths: list[str], env_file: Path | None, env: Mapping[str, str], origin: Path
) -> dict[str, set[str]]:
    """The variables each env_file defines, as Compose reads it: a throw-away project with one service per file."""
    services = {f"f{i}": {"image": "x", "env_file": [{"path": p, "required": False}]} for i, p in enumerate(paths)}
    stdin = json.dumps({"name": "env-files", "services": services})
    project = render([Path("-")], env_file, env, stdin=stdin, origin=origin)
    return {p: set(project["services"][f"f{i}"].get("environment") or {}) for i, p in enumerate(paths)}


def _service(
    name: str, spec: dict[str, Any], raw: dict[str, Any], declared: dict[str, Any], env_file_keys: dict[str, set[str]]
) -> ComposeService:
    """One service of the rendered project; `raw` and `declared` are the same service in the other renderings."""
    build = spec.get("build") or {}
    context = Path(build["context"]) if "context" in build else None
    health = spec.get("healthcheck")
    test = tuple(health.get("test") or ()) if health is not None else ()
    deploy = (spec.get("deploy") or {}).get("resources") or {}
    limits, reservations = deploy.get("limits") or {}, deploy.get("reservations") or {}
    mem, cpus = spec.get("mem_limit", limits.get("memory")), spec.get("cpus", limits.get("cpus"))
    mem_reservation = spec.get("mem_reservation", reservations.get("memory"))
    return ComposeService(
        name=name,
        image=_value(raw.get("image"), spec["image"]) if "image" in spec else None,
        build_context=context,
        dockerfile=context / build.get("dockerfile", "Dockerfile") if context else None,
        command=tuple(spec.get("command") or ()),
        environment=_environment(spec, raw, env_file_keys),
        ports=_ports(spec.get("ports") or [], declared.get("ports") or []),
        expose=[port for item in spec.get("expose") or () for port in _port_range(str(item))],
        mounts=[_mount(v) for v in spec.get("volumes") or ()]
        # tmpfs stays short syntax in Compose's output: `PATH[:OPTIONS]`
        + [Mount(target=str(t).split(":")[0], kind="tmpfs") for t in spec.get("tmpfs") or ()],
        healthcheck=None if health is None else Healthcheck(test, bool(health.get("disable")) or test[:1] == ("NONE",)),
        depends_on={dep: str(c.get("condition", "service_started")) for dep, c in _items(spec, "depends_on")},
        networks={net: tuple((c or {}).get("aliases") or ()) for net, c in _items(spec, "networks")},
        mem_limit=docker_memory(mem) if mem is not None else None,
        cpus=float(cpus) if cpus is not None else None,
        mem_reservation=docker_memory(mem_reservation) if mem_reservation is not None else None,
        user=spec.get("user"),
        read_only=bool(spec.get("read_only", False)),
        cap_drop=tuple(str(c).upper() for c in spec.get("cap_drop") or ()),
        cap_add=tuple(str(c).upper() for c in spec.get("cap_add") or ()),
        security_opt=tuple(spec.get("security_opt") or ()),
        privileged=bool(spec.get("privileged", False)),
    )


def _items(spec: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    return list((spec.get(key) or {}).items())


def _value(raw: object, value: object) -> Value:
    text = _scalar(raw if raw is not None else value)
    return Value(text, _scalar(value), variables(text))


def _scalar(node: object) -> str:
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _environment(spec: dict[str, Any], raw: dict[str, Any], env_file_keys: dict[str, set[str]]) -> dict[str, EnvVar]:
    """The container environment, each variable with where it comes from.

    Compose's rendering has merged the env_files into `environment`; without interpolation they stay apart
    (the `environment:` entries as written, the env_file paths). A variable written in `environment:` wins; a
    variable that is not written there comes from the last env_file that defines it."""
    written = raw.get("environment") or {}
    if isinstance(written, list):  # `- NAME=value` / `- NAME` items stay as written
        written = {k: v if sep else None for k, sep, v in (str(item).partition("=") for item in written)}
    from_files: dict[str, str] = {}
    for entry in raw.get("env_file") or ():  # in order: a later file wins
        from_files.update(dict.fromkeys(env_file_keys[entry["path"]], entry["path"]))
    out: dict[str, EnvVar] = {}
    for key, value in (spec.get("environment") or {}).items():
        if key in written:
            # `NAME:` without a value passes the shell's NAME through
            text = written[key] if written[key] is not None else "${" + key + "}"
            out[key] = EnvVar(key, _value(text, value), "environment")
        else:
            out[key] = EnvVar(key, Value(_scalar(value), _scalar(value)), f"env_file:{from_files[key]}")
    return out


def _ports(ports: list[dict[str, Any]], declared: list[dict[str, Any]]) -> list[PortMapping]:
    """Compose's long syntax; `declared` is the same list rendered with the file's defaults (matched by index).

    Should the defaults expand to another number of ports (a range written as a variable), the interpolated
    ports stand for their declared ones."""
    if len(declared) != len(ports):
        declared = ports
    return [
        PortMapping(int(p["target"]), str(p.get("protocol", "tcp")), _published(p), _published(d), p.get("host_ip"))
        for p, d in zip(ports, declared, strict=True)
    ]


def _published(port: dict[str, Any]) -> str | None:
    return str(port["published"]) if port.get("published") not in (None, "") else None


def _port_range(item: str) -> range:
    """An `expose` entry (`PORT`, `START-END`, with an optional `/protocol`): Compose leaves it as written."""
    start, _, end = item.split("/")[0].partition("-")
    return range(int(start), int(end or start) + 1)


def _mount(volume: dict[str, Any]) -> Mount:
    return Mount(str(volume["target"]), str(volume["type"]), str(volume.get("source", "")),
                 bool(volume.get("read_only", False)))
