"""Report writers: text (terminal), json (a list of findings), markdown (a PR comment), junit."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TextIO
from xml.etree import ElementTree as ET

from conformance.parity.findings import DIMENSIONS, Finding, Status

_COLOURS = {Status.OK: "32", Status.ACCEPTED: "36", Status.DRIFT: "31", Status.STALE: "33"}


def _order(findings: list[Finding]) -> list[Finding]:
    rank = {d: i for i, d in enumerate(DIMENSIONS)}
    return sorted(findings, key=lambda f: (rank.get(f.dimension, len(rank)), f.dimension))


def summary(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    verdict = "DRIFT" if any(f.status.failing for f in findings) else "parity holds"
    return (
        f"{verdict}: {counts[Status.DRIFT]} drift, {counts[Status.STALE]} stale exception(s), "
        f"{counts[Status.ACCEPTED]} accepted, {counts[Status.OK]} ok ({len(findings)} points compared)"
    )


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def write_text(findings: list[Finding], title: str, colour: bool = False, show_ok: bool = False) -> str:
    def paint(status: Status, text: str) -> str:
        return f"\033[{_COLOURS[status]}m{text}\033[0m" if colour else text

    lines = [title]
    for f in _order(findings):
        if f.status is Status.OK and not show_ok:
            continue
        label = paint(f.status, f"{f.status.value.upper():<8}")
        lines.append(f"{label} {f.dimension:<12} {f.subject}")
        lines.append(f"{'':<9} dev:  {f.dev if f.dev is not None else '-'}")
        lines.append(f"{'':<9} prod: {f.prod if f.prod is not None else '-'}")
        if f.prod_from and f.status is not Status.OK:
            lines.append(f"{'':<9} from: {f.prod_from}")
        if f.reason:
            lines.append(f"{'':<9} why:  {f.reason}")
    lines.append(summary(findings))
    if not show_ok:
        lines.append("(ok points hidden; --all shows them)")
    return "\n".join(lines) + "\n"


def write_json(findings: list[Finding]) -> str:
    return json.dumps([f.to_json() for f in _order(findings)], indent=2) + "\n"


def _md(value: str | None) -> str:
    if value is None:
        return "—"
    return "`" + value.replace("|", "\\|").replace("`", "'") + "`"


def write_markdown(findings: list[Finding], title: str) -> str:
    icon = {Status.OK: "✅ ok", Status.ACCEPTED: "🟦 accepted", Status.DRIFT: "❌ drift", Status.STALE: "⚠️ stale"}
    head = "| status | dimension | subject | dev (compose) | prod (k8s) | reason |\n|---|---|---|---|---|---|\n"

    def row(f: Finding) -> str:
        reason = (f.reason or "").replace("|", "\\|")
        prod = _md(f.prod) + (f"<br><sub>{f.prod_from}</sub>" if f.prod_from and f.status is not Status.OK else "")
        return f"| {icon[f.status]} | {f.dimension} | `{f.subject}` | {_md(f.dev)} | {prod} | {reason} |\n"

    ordered = _order(findings)
    notable = [f for f in ordered if f.status is not Status.OK]
    okays = [f for f in ordered if f.status is Status.OK]
    out = f"### {title}\n\n**{summary(findings)}**\n\n"
    if notable:
        out += head + "".join(row(f) for f in notable) + "\n"
    if okays:
        out += f"<details><summary>{len(okays)} points in parity</summary>\n\n" + head
        out += "".join(row(f) for f in okays) + "\n</details>\n"
    return out


def write_junit(findings: list[Finding], suite_name: str) -> str:
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(findings)),
        failures=str(sum(1 for f in findings if f.status.failing)),
        errors="0",
        skipped="0",
    )
    for f in _order(findings):
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{f.dimension}", name=f.subject)
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="status", value=f.status.value)
        detail = f"dev:  {f.dev}\nprod: {f.prod}\n" + (f"reason: {f.reason}\n" if f.reason else "")
        if f.status.failing:
            failure = ET.SubElement(
                case, "failure", message=f"{f.status.value}: {f.reason or ''}", type=f.status.value
            )
            failure.text = detail
        else:
            ET.SubElement(case, "system-out").text = f"{f.status.value}\n{detail}"
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


FORMATS = ("text", "json", "markdown", "junit")


def render(findings: list[Finding], fmt: str, *, title: str, colour: bool, show_ok: bool) -> str:
    writers: dict[str, Callable[[], str]] = {
        "text": lambda: write_text(findings, title, colour, show_ok),
        "json": lambda: write_json(findings),
        "markdown": lambda: write_markdown(findings, title),
        "junit": lambda: write_junit(findings, title.split(":")[0].replace(" ", "-")),
    }
    return writers[fmt]()
