"""Embeddings: deterministic, normalised, and good enough that a paraphrase recalls its sentence first."""

from __future__ import annotations

import numpy as np

from brain.embeddings import HashingEmbedder, cosine_scores, from_bytes, to_bytes, tokens


def test_deterministic_and_unit_length() -> None:
    e = HashingEmbedder(256)
    a, b = e.embed("The quick brown fox"), HashingEmbedder(256).embed("The quick brown fox")
    assert np.array_equal(a, b)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert a.dtype == np.float32 and a.shape == (256,)


def test_empty_and_stopword_only_text_gives_zero_vector() -> None:
    assert not np.any(HashingEmbedder(64).embed("the and of"))


def test_tokens_drop_stopwords_and_fold_plurals() -> None:
    assert tokens("The cats are chasing mice") == ["cat", "chas", "mice"]


def test_paraphrase_recalls_its_sentence_top_1() -> None:
    e = HashingEmbedder(256)
    corpus = [
        "Paris is the capital city of France",
        "The mitochondria is the powerhouse of the cell",
        "Redis keeps working memory for every tenant",
        "Kafka carries the audit events to the archive",
        "Postgres stores durable memories on disk",
    ]
    matrix = np.stack([e.embed(s) for s in corpus])
    queries = {
        "what is the capital of France?": 0,
        "which part of the cell is its powerhouse": 1,
        "where do audit events go? kafka": 3,
        "durable memories stored by postgres": 4,
    }
    for query, expected in queries.items():
        scores = cosine_scores(e.embed(query), matrix)
        assert int(np.argmax(scores)) == expected, (query, scores)


def test_bytes_round_trip() -> None:
    vec = HashingEmbedder(32).embed("round trip")
    assert np.array_equal(from_bytes(to_bytes(vec), 32), vec)
