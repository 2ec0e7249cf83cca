"""compose/prometheus/prometheus.yml: promtool-valid and scraping both apps by service name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conformance.inventory import SCRAPED
from tests.deploy.repo import run

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install -y prometheus; .ci/run installs it)"
)


@needs_promtool
def test_promtool_check_config_passes(repo: Path) -> None:
    result = run([str(PROMTOOL), "check", "config", str(repo / "compose" / "prometheus" / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_catches_a_broken_config(tmp_path: Path, repo: Path) -> None:
    config = yaml.safe_load((repo / "compose" / "prometheus" / "prometheus.yml").read_text())
    config["scrape_configs"][0]["scrape_interval"] = "fifteen seconds"
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config))
    result = run([str(PROMTOOL), "check", "config", str(broken)])
    assert result.returncode != 0


def test_scrapes_somabrain_and_somamemory(repo: Path) -> None:
    config = yaml.safe_load((repo / "compose" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert {f"{s.compose}:{s.metrics_port}" for s in SCRAPED} <= targets  # the metrics ports (SOMABRAIN_METRICS_PORT)
