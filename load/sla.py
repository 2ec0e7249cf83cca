"""SLA thresholds: load/sla.yaml, merged with an optional override file and KEY=VALUE settings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SLA = Path(__file__).with_name("sla.yaml")
ROUTE_KEYS = {"p50_ms", "p95_ms", "p99_ms", "failure_ratio_max", "min_requests"}
RESOURCE_KEYS = {"memory_max", "cpu_throttled_max", "oom_kills_max", "restarts_max", "advice"}
ADVICE_KEYS = {"low_use", "high_use", "target_use"}


class SLAError(ValueError):
    """An SLA file or setting that cannot be used; the message names it."""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SLAError(f"SLA file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SLAError(f"SLA file {path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SLAError(f"SLA file {path}: expected a mapping with `resources` and/or `routes`")
    return data


def _number_or_null(where: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise SLAError(f"{where}: expected a non-negative number or null, got {value!r}")


def validate(sla: dict[str, Any]) -> dict[str, Any]:
    unknown = set(sla) - {"resources", "routes"}
    if unknown:
        raise SLAError(f"SLA: unknown top-level key(s) {sorted(unknown)}; expected resources, routes")
    resources = sla.get("resources") or {}
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            raise SLAError(f"SLA resources.{key}: unknown key; expected one of {sorted(RESOURCE_KEYS)}")
        if key == "advice":
            for name, share in (value or {}).items():
                if name not in ADVICE_KEYS:
                    raise SLAError(f"SLA resources.advice.{name}: unknown key; expected {sorted(ADVICE_KEYS)}")
                _number_or_null(f"SLA resources.advice.{name}", share)
        else:
            _number_or_null(f"SLA resources.{key}", value)
    routes = sla.get("routes") or {}
    if "default" not in routes:
        raise SLAError("SLA routes: a `default` entry is required")
    for route, limits in routes.items():
        if not isinstance(limits, dict):
            raise SLAError(f"SLA routes.{route}: expected a mapping of thresholds")
        for key, value in limits.items():
            if key not in ROUTE_KEYS:
                raise SLAError(f"SLA routes.{route}.{key}: unknown key; expected one of {sorted(ROUTE_KEYS)}")
            _number_or_null(f"SLA routes.{route}.{key}", value)
    return sla


def parse_setting(text: str) -> dict[str, Any]:
    """"routes.POST /act.p95_ms=400" -> {"routes": {"POST /act": {"p95_ms": 400}}} (the value parsed as YAML)."""
    path, raw = text.split("=", 1) if "=" in text else (text, "")
    parts = path.split(".")
    if "=" not in text or len(parts) < 2 or not all(parts):
        raise SLAError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. resources.memory_max=0.8")
    try:
        value: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise SLAError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    for part in reversed(parts):
        value = {part: value}
    result: dict[str, Any] = value
    return result


def load_sla(path: Path | None = None, settings: list[str] | None = None) -> dict[str, Any]:
    sla = _read(DEFAULT_SLA)
    if path is not None:
        sla = _merge(sla, _read(path))
    for setting in settings or []:
        sla = _merge(sla, parse_setting(setting))
    return validate(sla)


def route_thresholds(sla: dict[str, Any], route: str) -> dict[str, Any]:
    routes = sla["routes"]
    return {**routes["default"], **(routes.get(route) or {})}
