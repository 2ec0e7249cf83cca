"""load/environments.py: `--env dev` reads the env file with the one dotenv reader and resolves the compose project
in the order every tool uses (targets/envfile.py: option, the env file, the environment, somabrain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from load.environments import EnvironmentError_, resolve


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env"
    path.write_text(text)
    return path


def test_the_endpoint_and_project_come_from_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "from-the-environment")
    path = env_file(tmp_path, "export COMPOSE_PROJECT_NAME='from-the-file'  # quoted, exported\n"
                              "SOMABRAIN_HOST_PORT=\"19696\"\n")
    environment = resolve("dev", env_file=path)
    assert (environment.endpoint, environment.scope) == ("http://127.0.0.1:19696", "from-the-file")


def test_the_project_option_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "from-the-environment")
    path = env_file(tmp_path, "COMPOSE_PROJECT_NAME=from-the-file\n")
    assert resolve("dev", env_file=path, project="from-the-option").scope == "from-the-option"


def test_without_a_project_in_the_file_the_environment_names_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = env_file(tmp_path, "SOMABRAIN_HOST_PORT=19696\n")
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "from-the-environment")
    assert resolve("dev", env_file=path).scope == "from-the-environment"
    monkeypatch.delenv("COMPOSE_PROJECT_NAME")
    assert resolve("dev", env_file=path).scope == "somabrain"


def test_an_unreadable_env_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentError_, match=r"cannot be read .*make up.*--env-file"):
        resolve("dev", env_file=tmp_path / "absent")


def test_a_host_port_that_is_not_a_number(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentError_, match=r"SOMABRAIN_HOST_PORT='lots' is not a port number"):
        resolve("dev", env_file=env_file(tmp_path, "SOMABRAIN_HOST_PORT=lots\n"))
