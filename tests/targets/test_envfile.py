"""targets/envfile.py: the one env-file reader and the one compose-project resolver, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from targets.envfile import compose_project, read_env_file


def test_reads_what_compose_reads(tmp_path: Path) -> None:
    path = tmp_path / ".env.local"
    path.write_text("A=1\n# a comment\n\nB=\"two words\"\nexport C=3\nD=\nF='x' # trailing\n", encoding="utf-8")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "3", "D": "", "F": "x"}


def test_a_missing_file_is_an_error_not_an_empty_stack(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_env_file(tmp_path / "absent")


@pytest.mark.parametrize(("explicit", "in_file", "in_environ", "expected"), [
    ("flag", "file", "environ", "flag"),
    (None, "file", "environ", "file"),
    (None, None, "environ", "environ"),
    (None, None, None, "somabrain"),
    (None, "", "environ", "environ"),  # an empty value in the file names nothing
])
def test_compose_project_precedence(tmp_path: Path, explicit: str | None, in_file: str | None,
                                    in_environ: str | None, expected: str) -> None:
    env_file = tmp_path / ".env.local"
    if in_file is not None:
        env_file.write_text(f"SOMABRAIN_HOST_PORT=9696\nCOMPOSE_PROJECT_NAME={in_file}\n", encoding="utf-8")
    environ = {"COMPOSE_PROJECT_NAME": in_environ} if in_environ else {}
    assert compose_project(explicit, env_file, environ) == expected
