"""SLA loading: defaults, override files, --set, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from load.sla import SLAError, load_sla, parse_setting, route_thresholds


def test_defaults_load_and_have_a_default_route() -> None:
    sla = load_sla()
    assert sla["resources"]["memory_max"] == 0.9
    assert route_thresholds(sla, "POST /unknown") == sla["routes"]["default"]
    act = route_thresholds(sla, "POST /remember")
    assert act["p95_ms"] == 1500 and act["failure_ratio_max"] == sla["routes"]["default"]["failure_ratio_max"]


def test_override_file_merges_key_by_key(tmp_path: Path) -> None:
    override = tmp_path / "sla.yaml"
    override.write_text("resources:\n  memory_max: 0.8\nroutes:\n  POST /act:\n    p99_ms: 300\n")
    sla = load_sla(override)
    assert sla["resources"]["memory_max"] == 0.8
    assert sla["resources"]["oom_kills_max"] == 0  # kept from the defaults
    assert route_thresholds(sla, "POST /act")["p99_ms"] == 300
    assert route_thresholds(sla, "POST /act")["p95_ms"] == 1000


def test_settings_override_last() -> None:
    sla = load_sla(settings=["routes.POST /act.p95_ms=400", "resources.cpu_throttled_max=0.5"])
    assert route_thresholds(sla, "POST /act")["p95_ms"] == 400
    assert sla["resources"]["cpu_throttled_max"] == 0.5


def test_parse_setting() -> None:
    assert parse_setting("resources.memory_max=0.75") == {"resources": {"memory_max": 0.75}}
    assert parse_setting("resources.cpu_throttled_max=null") == {"resources": {"cpu_throttled_max": None}}


@pytest.mark.parametrize(("setting", "message"), [
    ("memory_max=0.5", "expected SECTION.KEY=VALUE"),
    ("resources.memory_max", "expected SECTION.KEY=VALUE"),
    ("resources.memory_max=high", "expected a non-negative number"),
    ("resources.memry_max=0.5", "unknown key"),
    ("routes.POST /act.p95=400", "unknown key"),
    ("limits.x=1", "unknown top-level key"),
    ("resources.memory_max=-1", "non-negative"),
])
def test_bad_settings_are_named(setting: str, message: str) -> None:
    with pytest.raises(SLAError, match=message):
        load_sla(settings=[setting])


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SLAError, match="No such file"):
        load_sla(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [unclosed\n")
    with pytest.raises(SLAError, match="not valid YAML"):
        load_sla(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(SLAError, match="expected a mapping"):
        load_sla(listing)
