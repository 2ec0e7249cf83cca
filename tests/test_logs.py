"""Structured logs: JSON lines that carry the request id; request ids are adopted only when safe."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from brain import logs
from localservers.servers import AppServer, PostgresServer


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    token = logs.request_id.set("req-123")
    try:
        logging.getLogger("brain.test").info("stored %d items", 3)
    finally:
        logs.request_id.reset(token)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "stored 3 items"
    assert line["level"] == "info"
    assert line["logger"] == "brain.test"
    assert line["request_id"] == "req-123"
    assert line["ts"].endswith("+00:00")


def test_exceptions_are_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("brain.test").exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    doc = json.loads(lines[-1])
    assert "ValueError: boom" in doc["exc"]


@pytest.mark.parametrize("offered", [None, "", "has space", "x" * 129, "new\nline", "trailing-newline\n"])
def test_unsafe_request_ids_are_replaced(offered: str | None) -> None:
    made = logs.new_request_id(offered)
    assert made != offered and len(made) == 32


def test_safe_request_id_is_adopted() -> None:
    assert logs.new_request_id("trace-abc.123:4") == "trace-abc.123:4"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_served_logs_are_json_lines_once_each(workers: str, postgres_server: PostgresServer, run_dir: Path) -> None:
    """Hypercorn's own lines go through our formatter in every worker process, and none is written twice."""
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn}, run_dir,
                       "--log-format", "json", "--workers", workers)
    memory.start()
    try:
        for _ in range(10):
            assert httpx.get(memory.url + "/healthz", headers={"Connection": "close"}).status_code == 200
    finally:
        assert memory.stop() == 0
    lines = memory.process.log_path.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "msg"} <= doc.keys() for doc in docs), lines
    starts = [doc for doc in docs if doc["logger"] == "hypercorn.error" and doc["msg"].startswith("Running on")]
    assert len(starts) == int(workers), lines
    assert len({(doc["ts"], doc["pid"], doc["logger"], doc["msg"]) for doc in docs}) == len(docs), lines
    assert len({doc["pid"] for doc in starts}) == int(workers), lines
