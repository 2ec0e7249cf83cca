"""SomaMemory's Postgres store: one row per memory, embeddings as float32 bytes, recall by cosine in numpy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from brain.db import Database
from brain.embeddings import HashingEmbedder, cosine_scores, from_bytes, to_bytes

SCHEMA = "somamemory"
MIGRATIONS = [
    """
    CREATE TABLE "{schema}".memories (
        tenant text NOT NULL,
        id text NOT NULL,
        content text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        importance double precision NOT NULL,
        embedding bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, id)
    )
    """,
]
#: Recall scans at most this many of a tenant's newest memories.
RECALL_SCAN_LIMIT = 50_000


@dataclass(frozen=True)
class Recalled:
    id: str
    content: str
    metadata: dict[str, Any]
    importance: float
    score: float


class MemoryStore:
    def __init__(self, db: Database, embedder: HashingEmbedder) -> None:
        self._db = db
        self._embedder = embedder

    async def put(self, tenant: str, item_id: str, content: str, metadata: dict[str, Any], importance: float) -> None:
        """Insert (or, for a retried id, replace) a memory; returns once Postgres has committed it."""
        vec = self._embedder.embed(content)
        async with self._db.pool.acquire() as conn:
            await conn.execute(
                f"""
                INSERT INTO "{SCHEMA}".memories (tenant, id, content, metadata, importance, embedding)
                VALUES ($1, $2, $3, $4::jsonb, $5, $6)
                ON CONFLICT (tenant, id) DO UPDATE
                SET content = EXCLUDED.content, metadata = EXCLUDED.metadata,
                    importance = EXCLUDED.importance, embedding = EXCLUDED.embedding
                """,
                tenant, item_id, content, json.dumps(metadata), importance, to_bytes(vec),
            )

    async def recall(self, tenant: str, query: str, top_k: int) -> list[Recalled]:
        async with self._db.pool.acquire() as conn:
            rows = await conn.fetch(
                f'SELECT id, content, metadata, importance, embedding FROM "{SCHEMA}".memories '
                "WHERE tenant = $1 ORDER BY created_at DESC LIMIT $2",
                tenant, RECALL_SCAN_LIMIT,
            )
        if not rows:
            return []
        dim = self._embedder.dim
        matrix = np.stack([from_bytes(bytes(row["embedding"]), dim) for row in rows])
        scores = cosine_scores(self._embedder.embed(query), matrix)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [
            Recalled(
                id=rows[i]["id"],
                content=rows[i]["content"],
                metadata=json.loads(rows[i]["metadata"]),
                importance=float(rows[i]["importance"]),
                score=float(np.clip(scores[i], -1.0, 1.0)),
            )
            for i in order
        ]

    async def delete(self, tenant: str, item_id: str) -> bool:
        async with self._db.pool.acquire() as conn:
            deleted = await conn.fetchval(
                f'DELETE FROM "{SCHEMA}".memories WHERE tenant = $1 AND id = $2 RETURNING id', tenant, item_id
            )
        return deleted is not None
