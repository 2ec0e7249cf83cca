"""The journal's replay into a real SomaMemory (the session's, on the real Postgres): what it sends, what it drops
and when it waits. The journal's own rules (lock, tombstones, torn batches) are tests/memory/test_journal.py's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brain.memory.client import MemoryClient
from brain.memory.journal import Entry, MemoryJournal
from brain.memory.replay import JournalReplay
from localservers.servers import MEMORY_TOKEN, AppServer, free_port

pytestmark = pytest.mark.integration


def item_id(n: int) -> str:
    """A memory id as the API makes them (32 hex digits)."""
    return f"{n:032x}"


def entry(tenant: str, n: int) -> Entry:
    return Entry(tenant=tenant, id=item_id(n), content=f"journalled {n}", metadata={"n": n}, importance=0.5)


@pytest.fixture
async def memory(memory_server: AppServer) -> AsyncIterator[MemoryClient]:
    client = MemoryClient(memory_server.url, 5.0, MEMORY_TOKEN)
    yield client
    await client.aclose()


async def test_a_round_sends_every_batch_and_empties_the_journal(memory: MemoryClient, tenant: str,
                                                                 tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path)
    journal.append([entry(tenant, 1), entry(tenant, 2)])
    journal.append([entry(tenant, 3)])
    replay = JournalReplay(journal, memory, 60.0, lambda: True)
    assert await replay.replay_once() == 3
    assert journal.pending() == []
    hits = await memory.recall(tenant, "journalled", 10)
    assert sorted(h["id"] for h in hits) == [item_id(1), item_id(2), item_id(3)]


async def test_a_write_whose_id_holds_another_memory_is_dropped_and_does_not_hold_back_the_rest(
        memory: MemoryClient, tenant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Meanwhile a later request reused the idempotency key for another body: that body stands."""
    await memory.remember(tenant, item_id(1), "the later body", {}, 1.0)
    journal = MemoryJournal(tmp_path)
    journal.append([entry(tenant, 1)])
    journal.append([entry(tenant, 2)])
    with caplog.at_level(logging.ERROR, logger="brain.memory.replay"):
        assert await JournalReplay(journal, memory, 60.0, lambda: True).replay_once() == 2
    assert f"journalled write {item_id(1)} for tenant {tenant} not replayed" in caplog.text
    assert journal.pending() == []
    hits = {h["id"]: h["content"] for h in await memory.recall(tenant, "body journalled", 10)}
    assert hits == {item_id(1): "the later body", item_id(2): "journalled 2"}


async def test_a_write_somamemory_refuses_is_dropped_and_does_not_hold_back_the_rest(
        narrow_memory: AppServer, tenant: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journalled body SomaMemory refuses (here 413: its body limit is lower than the one the entry was accepted
    under) is refused on every round; waiting for it held back every batch after it, for good."""
    refused = Entry(tenant=tenant, id=item_id(1), content="x" * 4096, metadata={}, importance=0.5)
    journal = MemoryJournal(tmp_path)
    journal.append([refused])
    journal.append([entry(tenant, 2)])
    narrow = MemoryClient(narrow_memory.url, 5.0, MEMORY_TOKEN)
    try:
        with caplog.at_level(logging.ERROR, logger="brain.memory.replay"):
            assert await JournalReplay(journal, narrow, 60.0, lambda: True).replay_once() == 2
        assert journal.pending() == []
        assert [h["id"] for h in await narrow.recall(tenant, "journalled x", 10)] == [item_id(2)]
    finally:
        await narrow.aclose()
    assert (f"journalled write {item_id(1)} for tenant {tenant} dropped: SomaMemory refused the write (HTTP 413 "
            "payload_too_large)") in caplog.text


async def test_somamemory_unreachable_pauses_the_round_and_keeps_the_batches(
        tmp_path: Path, tenant: str, caplog: pytest.LogCaptureFixture) -> None:
    down = MemoryClient(f"http://127.0.0.1:{free_port()}", 1.0, MEMORY_TOKEN)
    journal = MemoryJournal(tmp_path)
    batch = journal.append([entry(tenant, 1)])
    try:
        with caplog.at_level(logging.WARNING, logger="brain.memory.replay"):
            assert await JournalReplay(journal, down, 60.0, lambda: True).replay_once() == 0
    finally:
        await down.aclose()
    assert "journal replay paused: SomaMemory POST /remember failed: ConnectError" in caplog.text
    assert journal.pending() == [batch]


async def test_the_loop_waits_until_somamemory_is_seen_up(memory: MemoryClient, tenant: str, tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path)
    journal.append([entry(tenant, 1)])
    up = asyncio.Event()
    replay = JournalReplay(journal, memory, 0.05, up.is_set)
    replay.start()
    try:
        await asyncio.sleep(0.3)  # several rounds while the monitor says SomaMemory is down: nothing is tried
        assert len(journal.pending()) == 1
        up.set()
        for _ in range(200):
            if not journal.pending():
                break
            await asyncio.sleep(0.05)
        assert journal.pending() == []
    finally:
        await replay.stop()
    assert [h["id"] for h in await memory.recall(tenant, "journalled", 10)] == [item_id(1)]
