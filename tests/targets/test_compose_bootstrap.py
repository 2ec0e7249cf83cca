"""ComposeTarget.bootstrap, which gives the doctor its `bootstrap` line in dev: how the one-shot sb_dbinit ended,
from its container (compose keeps it after it exits; the apps start only once it exited 0). Real containers,
labelled as a compose project of this test's own (an nginx image from the local store, running a shell in place
of the step). Marked `live` (`make live`, after `make up`, which leaves one of the images there)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from conformance.inventory import ONE_SHOTS
from targets.compose import ComposeTarget
from tests.targets.docker_cli import docker

DB_INIT = ONE_SHOTS[0]

pytestmark = pytest.mark.live


@pytest.fixture
def project() -> Iterator[str]:
    name = f"sbboot-{uuid.uuid4().hex[:8]}"
    yield name
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    if ids:
        docker("rm", "-f", *ids)


def _step(project: str, image: str, script: str) -> str:
    """The step's container, running `script` in sh; returns its name."""
    name = f"{project}-{DB_INIT.compose}-1"
    result = docker("run", "-d", "--name", name, "--label", f"com.docker.compose.project={project}",
                     "--label", f"com.docker.compose.service={DB_INIT.compose}", "--entrypoint", "sh", image,
                     "-c", script)
    assert result.returncode == 0, result.stderr
    return name


def _exited(name: str) -> None:
    """Until the container has exited (docker wait blocks until it does, bounded by its timeout)."""
    assert docker("wait", name).returncode == 0


def test_a_step_that_exited_0_is_ok(project: str, image: str) -> None:
    name = _step(project, image, "exit 0")
    _exited(name)
    state, = ComposeTarget(project).bootstrap(ONE_SHOTS)
    assert (state.level, state.message) == ("OK", f"{name} exited 0")


def test_a_failed_step_is_named_with_its_logs(project: str, image: str) -> None:
    name = _step(project, image, "echo 'role somabrain_app: password authentication failed' >&2; exit 3")
    _exited(name)
    target = ComposeTarget(project)
    state, = target.bootstrap(ONE_SHOTS)
    assert state.level == "FAIL"
    assert state.message == f"{name} exited 3: somabrain and somamemory do not start until it exits 0"
    logs, again = state.next.splitlines()
    assert logs == target.logs_command(DB_INIT.compose) and logs.endswith(f" logs --tail 50 {DB_INIT.compose}")
    assert again.endswith(" up -d somabrain somamemory")


def test_a_step_still_running_is_a_warning(project: str, image: str) -> None:
    name = _step(project, image, "sleep 60")
    for _ in range(300):  # `docker run -d` returns once it started; this is a safety net
        if docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true":
            break
        time.sleep(0.1)
    state, = ComposeTarget(project).bootstrap(ONE_SHOTS)
    assert (state.level, state.message) == ("WARN", f"{name} is still running: somabrain and somamemory wait for it")


def test_a_missing_step_is_a_warning(project: str) -> None:
    state, = ComposeTarget(project).bootstrap(ONE_SHOTS)
    assert state.level == "WARN"
    assert state.message == f"compose service {DB_INIT.compose} has no container (it runs once, before somabrain " \
                            "and somamemory start)"
