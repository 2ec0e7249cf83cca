"""Request and response models shared by the API and SomaMemory. Their JSON Schemas are the OpenAPI components.

Models are strict (no type coercion) and forbid unknown fields, so what the OpenAPI document promises is exactly
what the server accepts. Text may not contain NUL (Postgres cannot store it).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_TEXT = 100_000
MAX_META_KEYS, MAX_META_KEY, MAX_META_TEXT = 32, 64, 1024

#: The largest item: content of MAX_TEXT characters and MAX_META_KEYS metadata entries of a MAX_META_KEY-character
#: key and a MAX_META_TEXT-character value. As a JSON body, with every character escaped in the longest form JSON
#: has (a character outside the BMP is two `\uXXXX` escapes: 12 bytes), plus room for the rest of the document.
#: Both apps' request body limit (SOMABRAIN_MAX_BODY_BYTES) defaults to the next MiB above it, so that every valid
#: item fits and nothing much larger is read; the Ingress keeps the seed's 32m.
MAX_ITEM_BODY_BYTES = 12 * MAX_TEXT + MAX_META_KEYS * (12 * MAX_META_KEY + 12 * MAX_META_TEXT + 8) + 1024
DEFAULT_MAX_BODY_BYTES = -(-MAX_ITEM_BODY_BYTES // (1 << 20)) * (1 << 20)

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00]*$")]
MetaKey = Annotated[str, Field(min_length=1, max_length=MAX_META_KEY, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetaValue = (
    Annotated[str, Field(max_length=MAX_META_TEXT, pattern=r"^[^\x00]*$")]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Field(ge=-1e300, le=1e300)]
    | bool
    | None
)
# Keys must match the pattern; saying so with additionalProperties=false keeps the schema as strict as the model.
Metadata = Annotated[
    dict[MetaKey, MetaValue],
    Field(max_length=MAX_META_KEYS, json_schema_extra={"additionalProperties": False}),
]
Importance = Annotated[float, Field(ge=0.0, le=1.0)]


def _integral(value: object) -> object:
    """JSON Schema counts 5.0 as an integer; accept it as 5 (strings and bools stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TopK = Annotated[int, Field(ge=1, le=100), BeforeValidator(_integral)]
Score = Annotated[float, Field(ge=-1.0, le=1.0)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorBody(Strict):
    error: str = Field(description="A short machine-readable code")
    detail: str = Field(description="What was wrong, for a human")


class RememberRequest(Strict):
    content: Text
    metadata: Metadata = Field(default_factory=dict)
    importance: Importance = 0.5


class RecallRequest(Strict):
    query: Text
    top_k: TopK = 5


class MemoryItem(Strict):
    id: str = Field(pattern=ID_PATTERN)
    content: str
    metadata: dict[str, Any]
    importance: Importance
    score: Score


class DeleteResponse(Strict):
    id: str = Field(pattern=ID_PATTERN)
    deleted: bool


class LiveResponse(Strict):
    ok: bool
    build: str = Field(description="The code version serving (brain/build.py)")


class ReadyResponse(Strict):
    ready: bool
    failing: list[str] = Field(description="Components that keep the app from being ready")
