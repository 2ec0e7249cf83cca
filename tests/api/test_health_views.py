"""`/health` through real Hypercorn with Postgres down: the public view says whether, the internal view says why.

The public view is what any caller outside the workload gets (the Ingress, the LoadBalancer, a published port;
a request that came through a proxy carries X-Forwarded-For); the internal one is what the probes, `somabrain
doctor` and the conformance suite get from 127.0.0.1 inside the workload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localservers.servers import AppServer, free_port, wait_for

#: Things only the internal view may contain: exception text and where the dependency lives.
LEAKS = ("error", "Errno", "Connect", "localhost", "127.0.0.1", "latency_ms")


@pytest.fixture(scope="module")
def postgres_down(strict_env: dict[str, str], run_dir: Path) -> Iterator[tuple[AppServer, int]]:
    port = free_port()  # nothing listens there
    env = {**strict_env, "SOMABRAIN_POSTGRES_DSN": f"postgresql://somabrain:s3cret@localhost:{port}/somabrain"}
    api = AppServer("api", env, run_dir)
    api.start(ready=False)
    yield api, port
    api.stop()


def _health(api: AppServer, **headers: str) -> dict[str, Any]:
    response = httpx.get(f"{api.url}/health", headers=headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("forwarded", [("X-Forwarded-For", "203.0.113.7"), ("forwarded", "for=203.0.113.7"),
                                       ("X-REAL-IP", "203.0.113.7")])
def test_public_health_has_the_shape_and_no_internal_detail(postgres_down: tuple[AppServer, int],
                                                            forwarded: tuple[str, str]) -> None:
    """Any forwarding header, in any case, makes a loopback request public: a proxy is in between."""
    api, port = postgres_down
    wait_for(lambda: "error" in _health(api)["components"]["postgres"], "the failed Postgres check")
    public = _health(api, **dict([forwarded]))
    text = httpx.get(f"{api.url}/health", headers=dict([forwarded])).text
    for leak in (*LEAKS, str(port), "s3cret"):
        assert leak not in text, (leak, text)
    assert public["ready"] is False and public["failing"] == ["postgres"]
    assert public["components"]["postgres"] == {"ok": False}
    assert public["components"]["memory"]["http"] is True
    assert public["components"]["wm_items"] == "tenant-scoped"
    assert public["components"]["predictor"]["real"] is True
    assert public["predictor_provider"] == "mahal" and public["strict_real"] is True and public["ok"] is True


def test_internal_health_still_says_what_is_wrong(postgres_down: tuple[AppServer, int]) -> None:
    api, port = postgres_down
    wait_for(lambda: "error" in _health(api)["components"]["postgres"], "the failed Postgres check")
    internal = _health(api)
    assert internal["ready"] is False and internal["failing"] == ["postgres"]
    error = internal["components"]["postgres"]["error"]
    assert "Errno" in error or str(port) in error or "onnect" in error, error
    assert "latency_ms" in internal["components"]["redis"]
