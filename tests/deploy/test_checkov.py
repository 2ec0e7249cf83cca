"""checkov (own venv, see scripts/lint_security.sh) on the rendered manifests and the Dockerfile.

`make unit` (so `make test` and CI) installs checkov first, outside the checkout; a bare `pytest` on a machine
without it skips these tests, except under CI (`CI` set), where a missing checkov is a failure: a skipped security
lint must never read as a pass there.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.repo import REPO, find, run

CHECKOV = Path(run([str(REPO / "scripts" / "lint_security.sh"), "--where"]).stdout.strip())
if not CHECKOV.is_file() and os.environ.get("CI"):
    raise RuntimeError(f"checkov is not installed at {CHECKOV}, and CI must run it: scripts/lint_security.sh "
                       "--install-only (make unit does)")
pytestmark = pytest.mark.skipif(
    not CHECKOV.is_file(), reason="checkov venv missing: run scripts/lint_security.sh --install-only"
)


def _checkov(*args: str) -> tuple[int, str]:
    result = run([str(CHECKOV), "--skip-download", "--quiet", "--compact", *args])
    return result.returncode, result.stdout + result.stderr


def test_rendered_manifests_are_clean(
    tmp_path: Path, base_manifests: list[dict[str, Any]], kind_manifests: list[dict[str, Any]]
) -> None:
    files = []
    for name, docs in (("base.yaml", base_manifests), ("kind.yaml", kind_manifests)):
        (tmp_path / name).write_text(yaml.safe_dump_all(docs))
        files += ["-f", str(tmp_path / name)]
    code, out = _checkov("--framework", "kubernetes", *files)
    assert code == 0, out


def test_checkov_catches_a_privileged_container(tmp_path: Path, base_manifests: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(find(base_manifests, "Deployment", "somabrain"))
    ctr = broken["spec"]["template"]["spec"]["containers"][0]
    ctr["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    code, out = _checkov("--framework", "kubernetes", "-f", str(tmp_path / "broken.yaml"))
    assert code != 0 and "CKV_K8S_16" in out  # privileged container


def test_dockerfile_is_clean_and_a_root_image_is_caught(tmp_path: Path) -> None:
    code, out = _checkov("--framework", "dockerfile", "-f", str(REPO / "Dockerfile"))
    assert code == 0, out
    broken = tmp_path / "Dockerfile"
    broken.write_text((REPO / "Dockerfile").read_text().replace("USER 10001:10001\n", ""))
    code, out = _checkov("--framework", "dockerfile", "-f", str(broken))
    assert code != 0 and "CKV_DOCKER_3" in out  # no non-root USER
