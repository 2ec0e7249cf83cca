"""Dimension `image`: same repository and version (major.minor and variant) on both sides.

A compose service built from the repo (`build:`) is at the project's version (pyproject.toml in the
build context), so `somabrain:local` built at 0.1.0 matches `somabrain:0.1.0`."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding, drift, ok

DIM = "image"
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-(.+))?$")


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    version: tuple[int, ...] | None
    variant: str | None


def parse_image(ref: str) -> ImageRef:
    name, _, digest = ref.partition("@")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    parts = name.split("/")
    if parts[0] in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    version: tuple[int, ...] | None = None
    variant: str | None = None
    if tag:
        match = _VERSION.match(tag)
        if match:
            version = tuple(int(x) for x in match.group(1).split("."))
            variant = match.group(2)
    return ImageRef("/".join(parts), tag or (digest or None), version, variant)


def project_version(context: Path) -> str | None:
    try:
        data = tomllib.loads((context / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    version = data.get("project", {}).get("version")
    return str(version) if version else None


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None
        prod_ref = parse_image(pair.container.image)
        dev_text = pair.dev.image.value if pair.dev.image else "(built)"
        dev_ref = parse_image(dev_text)
        if pair.dev.build_context is not None:
            version = project_version(pair.dev.build_context)
            if version:
                dev_text = (
                    f"{dev_text} (built from {pair.dev.dockerfile.name if pair.dev.dockerfile else 'Dockerfile'}"
                )
                dev_text += f", version {version})"
                built = parse_image(f"{dev_ref.repository}:{version}")
                dev_ref = ImageRef(dev_ref.repository, version, built.version, None)
        out.append(_judge(pair.name, dev_text, pair.container.image, dev_ref, prod_ref))
    return out


def _judge(subject: str, dev_text: str, prod_text: str, dev: ImageRef, prod: ImageRef) -> Finding:
    if dev.repository != prod.repository:
        return drift(
            DIM, subject, dev_text, prod_text, f"repository differs: {dev.repository} vs {prod.repository}"
        )
    for side, ref in (("dev", dev), ("prod", prod)):
        if ref.version is None:
            return drift(
                DIM, subject, dev_text, prod_text, f"{side} tag {ref.tag or '(none)'} is not a pinned version"
            )
    assert dev.version is not None and prod.version is not None
    if dev.version[:2] != prod.version[:2]:
        return drift(
            DIM,
            subject,
            dev_text,
            prod_text,
            f"major.minor differs: {'.'.join(map(str, dev.version[:2]))} vs {'.'.join(map(str, prod.version[:2]))}",
        )
    if dev.variant != prod.variant:
        return drift(
            DIM,
            subject,
            dev_text,
            prod_text,
            f"image variant differs: {dev.variant or '(none)'} vs {prod.variant or '(none)'}",
        )
    if dev.version != prod.version:
        return ok(DIM, subject, dev_text, prod_text, "same major.minor; patch level differs")
    return ok(DIM, subject, dev_text, prod_text)
