"""The records every sampler produces and the verdict consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One reading of one workload (a compose service's container, or a pod) at time `t` (unix seconds)."""

    t: float
    workload: str
    memory_bytes: int | None  # working set: usage minus inactive file cache (what the OOM killer weighs)
    memory_limit: int | None  # bytes; None when unlimited
    cpu_cores: float | None  # average cores used since the previous sample; None for the first one
    cpu_limit: float | None  # cores; None when unlimited
    throttled_periods: int | None = None  # cumulative CFS counters (dev only; the metrics API has none)
    periods: int | None = None
    running: bool = True
    restart_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    """Something that happened to a workload during the run: oom, die, restart, start, missing."""

    t: float
    workload: str
    kind: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recording:
    """Everything a sampler saw during one run."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def workloads(self) -> list[str]:
        return sorted({s.workload for s in self.samples} | {e.workload for e in self.events})
