"""Deterministic local text embeddings: feature hashing of word unigrams and bigrams.

No model is downloaded. Each token is hashed (blake2b, stable across processes and machines) to a dimension and a
sign; short function words are dropped so that recall ranks by the words that carry meaning. Vectors are
L2-normalised float32, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her his how i if in into is
    it its just me my no not of on or our she so than that the their them then there these they this to too us was we
    were what when where which who why will with would you your""".split()
)


def tokens(text: str) -> list[str]:
    """Lower-cased meaning-bearing words, with a light plural/verb suffix fold ("cats" -> "cat")."""
    words = []
    for word in _TOKEN.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("ing"):
            word = word[:-3]
        elif len(word) > 3 and word.endswith("es"):
            word = word[:-2]
        elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return words


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Feature-hashing embedder: unigrams weigh 1.0, bigrams 0.5."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 16:
            raise ValueError("embedding dimension must be at least 16")
        self.dim = dim

    def embed(self, text: str) -> Vector:
        vec = np.zeros(self.dim, dtype=np.float32)
        words = tokens(text)
        for word in words:
            index, sign = _bucket("u:" + word, self.dim)
            vec[index] += sign
        for left, right in itertools.pairwise(words):
            index, sign = _bucket(f"b:{left} {right}", self.dim)
            vec[index] += 0.5 * sign
        norm = float(np.linalg.norm(vec))
        if norm > 0.0:
            vec /= norm
        return vec


def cosine_scores(query: Vector, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Cosine similarity of a unit query against rows of unit vectors (zero rows score 0)."""
    if matrix.size == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(matrix @ query, dtype=np.float32)


def to_bytes(vec: Vector) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def from_bytes(raw: bytes, dim: int) -> Vector:
    vec = np.frombuffer(raw, dtype="<f4")
    if vec.shape != (dim,):
        raise ValueError(f"stored vector has {vec.size} dimensions, expected {dim}")
    return vec.astype(np.float32)


def matrix_from_bytes(raws: Sequence[bytes], dim: int) -> npt.NDArray[np.float32]:
    """Stored vectors as the rows of one float32 matrix, in one copy (ValueError if one has another dimension)."""
    if any(len(raw) != 4 * dim for raw in raws):
        raise ValueError(f"a stored vector does not have {dim} dimensions")
    return np.frombuffer(b"".join(raws), dtype="<f4").reshape(len(raws), dim).astype(np.float32)
