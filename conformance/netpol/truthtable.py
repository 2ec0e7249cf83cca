"""Connectivity truth tables, expected vs observed, printed the way cyclonus prints them.

    table = TruthTable("dev", sources, destinations)
    table.set("prometheus", "redis", expected=False, observed=True, detail="connected 172.22.0.4")
    print(table.render())

Matrices: `.` = allowed, `X` = denied, `?` = not known (not probed / not applicable); the comparison matrix
shows `.` where expected and observed agree (RIGHT) and `X` where they differ (WRONG), followed by the
WRONG flows with their details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Flow:
    src: str
    dst: str
    port: str
    expected: bool | None = None
    observed: bool | None = None
    detail: str = ""
    reason: str = ""  # why expected is what it is (networks shared, the policy that admits/blocks)

    @property
    def verdict(self) -> str:
        if self.expected is None or self.observed is None:
            return "?"
        return "RIGHT" if self.expected == self.observed else "WRONG"


def _mark(value: bool | None) -> str:
    return "?" if value is None else ("." if value else "X")


class TruthTable:
    def __init__(self, title: str, sources: Sequence[str], destinations: Sequence[tuple[str, str]]) -> None:
        self.title = title
        self.sources = list(sources)
        self.destinations = list(destinations)  # (name, port)
        self.flows: dict[tuple[str, str], Flow] = {}

    def set(self, src: str, dst: str, *, expected: bool | None = None, observed: bool | None = None,
            detail: str = "", reason: str = "") -> Flow:
        port = dict(self.destinations).get(dst, "?")
        flow = self.flows.get((src, dst)) or Flow(src, dst, port)
        if expected is not None:
            flow.expected = expected
        if observed is not None:
            flow.observed = observed
        flow.detail = detail or flow.detail
        flow.reason = reason or flow.reason
        self.flows[(src, dst)] = flow
        return flow

    def get(self, src: str, dst: str) -> Flow | None:
        return self.flows.get((src, dst))

    @property
    def wrong(self) -> list[Flow]:
        return [f for f in self.flows.values() if f.verdict == "WRONG"]

    def _matrix(self, heading: str, cell: object) -> list[str]:
        names = [f"{d}:{p}" for d, p in self.destinations]
        width = max(len(s) for s in self.sources) + 1
        col = max(max(len(n) for n in names), 3) + 1
        lines = [heading, " " * width + "".join(n.rjust(col) for n in names)]
        for src in self.sources:
            row = src.ljust(width)
            for dst, _port in self.destinations:
                flow = self.flows.get((src, dst))
                value = "-" if src == dst else (cell(flow) if flow is not None else " ")  # type: ignore[operator]
                row += value.rjust(col)
            lines.append(row)
        return lines

    def render(self) -> str:
        lines = [f"NetworkPolicy truth table: {self.title}   (rows: from, columns: to; . allow, X deny, ? unknown)"]
        lines += self._matrix("Expected:", lambda f: _mark(f.expected))
        lines += ["", *self._matrix("Observed:", lambda f: _mark(f.observed))]
        compared = self._matrix("Comparison (. RIGHT, X WRONG, ? not compared):",
                                lambda f: {"RIGHT": ".", "WRONG": "X"}.get(f.verdict, "?"))
        lines += ["", *compared]
        right = sum(1 for f in self.flows.values() if f.verdict == "RIGHT")
        lines.append("")
        lines.append(f"{right} RIGHT, {len(self.wrong)} WRONG, "
                     f"{sum(1 for f in self.flows.values() if f.verdict == '?')} not compared")
        for flow in self.wrong:
            lines.append(f"  WRONG {flow.src} -> {flow.dst}:{flow.port}: expected "
                         f"{'allow' if flow.expected else 'deny'}, observed {'allow' if flow.observed else 'deny'}"
                         f" ({flow.detail}); expected because {flow.reason}")
        return "\n".join(lines)
