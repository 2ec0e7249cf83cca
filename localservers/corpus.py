"""A seeded synthetic corpus of memories and queries, and exact search to judge a recall index against.

Memories are written like notes on a few subjects: each draws most of its words from one or two of a fixed set of
topics (40 words each) and the rest from common words, so memories that share a topic share words, as a real
tenant's notes do. A query is two to four words of one memory. The same seed gives the same texts on any machine,
and the first n memories of a bigger corpus are the corpus of n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

TOPICS = 1_000
TOPIC_WORDS = 40
COMMON_WORDS = 300
COMMON_SHARE = 0.2
LETTERS = np.array(list("abcdefghijklmnoprstuvwyz"))


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(LETTERS, size=int(rng.integers(4, 9)))))
    return sorted(words)


def memories(n: int, seed: int = 0) -> list[str]:
    """`n` memory texts of 6 to 15 words."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary(rng, 30_000))
    topics = np.stack([rng.choice(len(vocab), size=TOPIC_WORDS, replace=False) for _ in range(TOPICS)])
    common = rng.choice(len(vocab), size=COMMON_WORDS, replace=False)
    texts = []
    for _ in range(n):
        count = int(rng.integers(6, 16))
        own = rng.choice(TOPICS, size=int(rng.integers(1, 3)))
        words = topics[rng.choice(own, size=count), rng.integers(0, TOPIC_WORDS, size=count)]
        is_common = rng.random(count) < COMMON_SHARE
        words[is_common] = common[rng.integers(0, COMMON_WORDS, size=int(is_common.sum()))]
        texts.append(" ".join(vocab[words]))
    return texts


def queries(texts: Sequence[str], n: int, seed: int = 1) -> list[str]:
    """`n` queries, each two to four words of one of `texts`."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(n):
        words = texts[int(rng.integers(len(texts)))].split()
        found.append(" ".join(rng.choice(words, size=min(len(words), int(rng.integers(2, 5))), replace=False)))
    return found


def recall_at_k(scores: npt.NDArray[np.float32], returned: Sequence[int], k: int) -> float:
    """Share of exact search's top `k` that `returned` (row numbers into `scores`, exact scores of every memory for
    one query) holds. Ties count: any memory scoring at least the k-th best exact score is a right answer."""
    wanted = min(k, len(scores))
    if wanted == 0:
        return 1.0
    kth = np.partition(scores, len(scores) - wanted)[len(scores) - wanted]
    hits = sum(1 for row in returned[:k] if scores[row] >= kth - 1e-5)
    return hits / wanted
