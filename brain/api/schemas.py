"""Request/response models specific to the API (shared ones live in brain.web.schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from brain.web.schemas import ID_PATTERN, MemoryItem, Strict, Text, Unit


class RememberResponse(Strict):
    id: str = Field(pattern=ID_PATTERN)
    wm_items: int = Field(ge=0, description="How many items the tenant's working memory now holds")
    queued: bool = Field(
        default=False,
        description="True (with HTTP 202) when SomaMemory was down and the write waits in the durable journal",
    )


class RecallResponse(Strict):
    wm: list[MemoryItem]
    memory: list[MemoryItem]


class ActRequest(Strict):
    task: Text


class ActResponse(Strict):
    pred_error: Unit = Field(description="Mahalanobis surprise d2/(d2+dim) against the tenant's running statistics")
    novelty: Unit = Field(description="1 - the best cosine similarity to anything in working memory")
    salience: Unit = Field(description="1 - (1 - pred_error)(1 - novelty)")
    d2: float = Field(ge=0.0)
    provider: str


class MemoryComponent(Strict):
    model_config = ConfigDict(extra="allow")
    http: bool


class Components(Strict):
    model_config = ConfigDict(extra="allow")
    memory: MemoryComponent
    wm_items: Literal["tenant-scoped"]


class HealthResponse(Strict):
    model_config = ConfigDict(extra="allow")
    ok: bool
    components: Components
    predictor_provider: str
    strict_real: bool
    ready: bool


def public_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see of a component: its booleans (ok, real, warmed, fail_closed, ...).

    A boolean says whether, never why: error strings, exception text, hostnames, counts and latencies stay in the
    internal view.
    """
    return {key: value for key, value in detail.items() if isinstance(value, bool)}


def health_document(
    snapshot: dict[str, dict[str, Any]], provider: str, strict_real: bool, failing: list[str], *, internal: bool
) -> HealthResponse:
    """The fixed health shape (DESIGN.md), with per-component detail beside the required keys.

    `internal` (a caller inside the workload, see brain.web.clients.is_internal) gets every detail the checks
    recorded; anyone else gets only `public_detail`, which still answers every readiness question.
    """
    shown = snapshot if internal else {name: public_detail(detail) for name, detail in snapshot.items()}
    memory = shown.get("memory", {"ok": False, "configured": False})
    components: dict[str, Any] = {
        "memory": {"http": bool(memory.get("ok")), **{k: v for k, v in memory.items() if k != "ok"}},
        "wm_items": "tenant-scoped",
    }
    for name, detail in shown.items():
        if name != "memory":
            components[name] = detail
    return HealthResponse.model_validate(
        {
            "ok": True,
            "components": components,
            "predictor_provider": provider,
            "strict_real": strict_real,
            "ready": not failing,
            "failing": failing,
        },
        strict=False,
    )
