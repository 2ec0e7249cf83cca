"""Per-tenant vector indexes (usearch HNSW) that follow Postgres's change feed, so recall never scans a tenant.

Postgres is the source of truth. An index is one worker process's cache of one tenant's embeddings: the worker
builds it from Postgres when it starts (readiness waits for that; see `MemoryStore.warm_up`), and keeps it current
by reading the tenant's change feed (brain/somamemory/schema.py): rows whose change number `seq` is past the
index's cursor, and the tombstones of deleted rows.

How a write reaches every worker and replica: before it answers a recall, a worker reads the tenant's changes after
its cursor and applies them (one indexed query, usually empty). Because a tenant's changes commit in seq order, a
cursor never skips one. So a memory stored through any replica is in the index of whichever worker answers the next
recall: read-your-writes across replicas, with no message bus and no sticky routing. Alternatives considered:
- LISTEN/NOTIFY: a notification says nothing about when it is delivered, so a replica would still have to ask
  Postgres before answering to be sure it had caught up; that question is the one query we already make.
- Sharding tenants across replicas: needs a router and rebalancing, and a lost replica takes its tenants with it.

Deletes are honoured at once without trusting the index: it only proposes candidates, which the store rescores
against Postgres (brain/somamemory/store.py). A memory deleted after the catch-up, by any replica, is not there to
be rescored, so it is never returned.

The index stores int8 vectors (a quarter of float32) and is searched for several times more candidates than asked
for: rescoring with the float32 embeddings from Postgres makes the final scores and order exact, so the index only
has to get the true top-k into the candidates. Tiny tenants are searched exhaustively (still in memory), where that
is as fast as the graph and exact.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from brain.embeddings import Vector

Keys = npt.NDArray[np.uint64]
T = TypeVar("T")

#: HNSW graph degree, and the candidate-list lengths while inserting and while searching: measured on a seeded
#: 100k-memory corpus (bench/recall.py, `make bench-recall`), these keep recall@10 against exact search above 0.95.
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128
#: At or below this many vectors a search compares them all: as fast as the graph at that size, and exact.
EXACT_SEARCH_MAX = 2_000
#: Changes read from Postgres per query while catching up (about 1 KiB of embedding each).
PAGE_SIZE = 5_000


class Cursor(NamedTuple):
    """A position in a tenant's change feed, ordered by (seq, key): every change at or before it is applied."""

    seq: int
    key: int


START = Cursor(0, 0)


@dataclass(frozen=True)
class ChangePage:
    """Consecutive changes of one tenant: vectors written (new or replacing a key's old one) and keys deleted."""

    keys: Keys
    vectors: npt.NDArray[np.float32]
    deleted: Keys
    last: Cursor
    #: The feed returned as many changes as asked for: more may follow.
    full: bool

    def __len__(self) -> int:
        return len(self.keys) + len(self.deleted)


#: (tenant, after, limit) -> the next changes after `after`, at most `limit` of them, in feed order.
ChangeFeed = Callable[[str, Cursor, int], Awaitable[ChangePage]]


class TenantIndex:
    """One tenant's vectors in a usearch HNSW graph, and how far into the change feed it has read."""

    def __init__(self, dim: int) -> None:
        # Inner product on L2-normalised vectors is cosine; it also copes with the zero vector of a stop-word-only
        # text, where cosine is undefined.
        self._index = Index(
            ndim=dim, metric="ip", dtype="i8", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.cursor = START
        #: Vectors held, and bytes of vectors and graph (what a saved copy would take; the allocator reserves more
        #: address space, untouched). Kept as plain numbers so that stats never read the index while it changes.
        self.size = 0
        self.nbytes = 0

    def apply(self, page: ChangePage) -> None:
        """Apply a page: an overwritten key's old vector goes first, then the new vectors are added."""
        stale = np.concatenate([page.deleted, page.keys])
        if self.size and len(stale):
            self._index.remove(stale)
        if len(page.keys):
            self._index.add(page.keys, page.vectors)
        self.cursor = page.last
        self.size = len(self._index)
        self.nbytes = int(self._index.serialized_length)

    def search(self, query: Vector, count: int) -> Keys:
        """Keys of up to `count` vectors closest to `query`, best first."""
        if not self.size:
            return np.zeros(0, dtype=np.uint64)
        matches = self._index.search(query, count, exact=self.size <= EXACT_SEARCH_MAX)
        return np.asarray(matches.keys, dtype=np.uint64)


@dataclass
class IndexStats:
    tenants: int = 0
    vectors: int = 0
    nbytes: int = 0


@dataclass
class RecallIndex:
    """This worker's tenant indexes, each caught up with Postgres before it is searched."""

    dim: int
    feed: ChangeFeed
    _indexes: dict[str, TenantIndex] = field(default_factory=dict)
    #: One lock per tenant in use: catch-ups of a tenant take turns, and a search never meets a half-applied page.
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(default_factory=weakref.WeakValueDictionary)

    async def candidates(self, tenant: str, query: Vector, count: int) -> Keys:
        """Catch the tenant's index up with Postgres, then search it."""
        return await asyncio.shield(self._with_index(tenant, lambda index: index.search(query, count)))

    async def catch_up(self, tenant: str) -> None:
        await asyncio.shield(self._with_index(tenant, lambda index: None))

    async def _with_index(self, tenant: str, use: Callable[[TenantIndex], T]) -> T:
        """Under the tenant's lock, catch its index up, then `use` it. Shielded by the callers: a request cancelled
        mid-page (its client went away) must not let go of the lock while a thread is still applying that page, or
        the next catch-up would apply the same page again alongside it."""
        async with self._lock(tenant):
            return use(await self._caught_up(tenant))

    def stats(self) -> IndexStats:
        indexes = list(self._indexes.values())
        return IndexStats(len(indexes), sum(i.size for i in indexes), sum(i.nbytes for i in indexes))

    def _lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    async def _caught_up(self, tenant: str) -> TenantIndex:
        index = self._indexes.get(tenant) or TenantIndex(self.dim)
        while True:
            page = await self.feed(tenant, index.cursor, PAGE_SIZE)
            if len(page):
                # Off the event loop: a first build adds thousands of vectors; other tenants' recalls go on.
                await asyncio.to_thread(index.apply, page)
                self._indexes[tenant] = index  # kept once it has read something: unknown tenants cost nothing
            if not page.full:
                return index
