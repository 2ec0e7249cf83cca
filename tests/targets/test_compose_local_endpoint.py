"""ComposeTarget.local_endpoint, which gives the conformance suite its dev TLS endpoint: 127.0.0.1 and the port
published for sb_ingress:8443 when the front runs, else none (the TLS checks then skip by name). Real containers,
labelled as a compose project of this test's own (an nginx image from the local store, idling on its default
config). Marked `live` (`make live`, after `make up`, which leaves one of the images there): without Docker or
either image it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from conformance.inventory import TLS_FRONT
from targets.base import LocalEndpoint
from targets.compose import ComposeTarget
from tests.targets.docker_cli import docker

pytestmark = pytest.mark.live


@pytest.fixture
def project(image: str) -> Iterator[tuple[str, str]]:
    name = f"sbtlsep-{uuid.uuid4().hex[:8]}"
    yield name, image
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    if ids:
        docker("rm", "-f", *ids)


def _run(project: str, service: str, image: str, *extra: str) -> None:
    result = docker("run", "-d", "--label", f"com.docker.compose.project={project}",
                     "--label", f"com.docker.compose.service={service}", *extra,
                     "--entrypoint", "nginx", image, "-g", "daemon off;")
    assert result.returncode == 0, result.stderr


def test_no_front_means_no_endpoint(project: tuple[str, str]) -> None:
    name, image = project
    _run(name, "somabrain", image)
    assert ComposeTarget(name).local_endpoint(TLS_FRONT.key, TLS_FRONT.port) == LocalEndpoint(None, "")


def test_the_published_port_of_the_front(project: tuple[str, str]) -> None:
    name, image = project
    _run(name, "sb_ingress", image, "-p", "127.0.0.1::8443")
    port = int(docker("port", docker("ps", "-q", "--filter", f"label=com.docker.compose.project={name}")
                       .stdout.split()[0], "8443/tcp").stdout.strip().rsplit(":", 1)[1])
    assert ComposeTarget(name).local_endpoint(TLS_FRONT.key, TLS_FRONT.port) == LocalEndpoint(f"127.0.0.1:{port}")


def test_an_unpublished_front_is_noted(project: tuple[str, str]) -> None:
    name, image = project
    _run(name, "sb_ingress", image)
    found = ComposeTarget(name).local_endpoint(TLS_FRONT.key, TLS_FRONT.port)
    assert found.address is None and found.note == "sb_ingress:8443 runs but is not published on 127.0.0.1"
