"""What the static deployment checks share besides fixtures: the repository root, the files a fresh clone of it has
(and a copy of them), a resource looked up in rendered manifests, and the tools and scripts they run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
Resource = dict[str, Any]


def checkout_files(subdir: str) -> list[Path] | None:
    """The files under `subdir` that a fresh clone has once the working tree is committed: tracked ones and new ones
    git does not ignore, never generated (gitignored) files. None when this is no git checkout."""
    git = shutil.which("git")
    if git is None:
        return None
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", subdir],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    if listed.returncode != 0:
        return None
    return [Path(p) for p in listed.stdout.split("\0") if p and (REPO / p).is_file()]


def fresh_checkout_copy(subdir: str, dest: Path) -> Path:
    """Copy `subdir` of the repository to `dest` as a fresh clone would have it (see checkout_files)."""
    files = checkout_files(subdir)
    if files is None:  # not a git checkout (an sdist, say): everything, minus what was ever generated into k8s/
        shutil.copytree(REPO / subdir, dest / subdir, ignore=shutil.ignore_patterns("secrets"))
        return dest / subdir
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest / subdir


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def tool(name: str, *candidates: Path) -> str | None:
    """Path of an executable: the project's .venv first, then PATH."""
    for path in candidates:
        if path.is_file():
            return str(path)
    return shutil.which(name)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a script under test; by default in this environment minus what would change its defaults."""
    kwargs.setdefault("env", {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


Finder = Callable[[list[Resource], str, str], Resource]
