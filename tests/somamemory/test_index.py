"""TenantIndex on its own: pages of changes add, replace and delete vectors, and move the cursor."""

from __future__ import annotations

import numpy as np

from brain.embeddings import HashingEmbedder
from brain.somamemory.index import EXACT_SEARCH_MAX, ChangePage, Cursor, TenantIndex
from localservers import corpus

EMBED = HashingEmbedder(256)
FIRST = Cursor(1, 1)


def page(written: dict[int, str], deleted: tuple[int, ...] = (), last: Cursor = FIRST) -> ChangePage:
    vectors = np.stack([EMBED.embed(text) for text in written.values()]) if written else np.zeros((0, 256))
    return ChangePage(
        keys=np.array(list(written), dtype=np.uint64), vectors=vectors.astype(np.float32),
        deleted=np.array(deleted, dtype=np.uint64), last=last, full=False,
    )


def test_pages_add_replace_and_delete() -> None:
    index = TenantIndex(256)
    index.apply(page({1: "the vault code is in the safe", 2: "lunch is at noon", 3: "deploy keys rotate weekly"},
                     last=Cursor(1, 3)))
    assert (index.cursor, index.size) == (Cursor(1, 3), 3)
    assert index.search(EMBED.embed("vault code"), 1).tolist() == [1]

    index.apply(page({1: "the garden hose is in the shed"}, deleted=(2,), last=Cursor(2, 1)))
    assert index.size == 2 and index.cursor == Cursor(2, 1)
    assert index.search(EMBED.embed("garden hose"), 1).tolist() == [1]
    assert 2 not in index.search(EMBED.embed("lunch at noon"), 10).tolist()
    assert index.nbytes > 0


def test_an_empty_index_finds_nothing() -> None:
    assert TenantIndex(256).search(EMBED.embed("anything"), 10).tolist() == []


def test_a_small_index_is_searched_exhaustively() -> None:
    """Up to EXACT_SEARCH_MAX vectors, 50 candidates rescored exactly (as the store does) are exact search's top 10."""
    texts = corpus.memories(EXACT_SEARCH_MAX)
    index = TenantIndex(256)
    index.apply(page(dict(enumerate(texts))))
    matrix = np.stack([EMBED.embed(t) for t in texts])
    for query in corpus.queries(texts, 50):
        scores = matrix @ EMBED.embed(query)
        candidates = index.search(EMBED.embed(query), 50).astype(np.int64)
        best = candidates[np.argsort(-scores[candidates], kind="stable")][:10]
        assert corpus.recall_at_k(scores, best.tolist(), 10) == 1.0
