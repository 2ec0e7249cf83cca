"""Plot writing: one readable PNG per workload, with limit lines, events and the RPS panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from load.locust_run import RpsPoint
from load.model import Event, Sample
from load.plots import plot_all, safe_name

MIB = 2**20


def test_one_png_per_workload(tmp_path: Path) -> None:
    samples = [Sample(100.0 + i, w, (50 + i) * MIB, 256 * MIB, 0.1 * i if i else None, 0.5)
               for i in range(10) for w in ("somabrain", "sb_redis")]
    rps = [RpsPoint(100.0 + i, min(i, 4), 3.0 * i, 0.1 if i == 5 else 0.0) for i in range(10)]
    events = [Event(105.0, "somabrain", "oom")]
    paths = plot_all(tmp_path, samples, rps, events, start=100.0, titles={"somabrain": "smoke, 4 users"})
    assert [p.name for p in paths] == ["resources_sb_redis.png", "resources_somabrain.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert (width, height) == (900, 720)  # 10x8 inches at 90 dpi


def test_plot_without_limits_or_rps_still_renders(tmp_path: Path) -> None:
    samples = [Sample(1.0 + i, "opa", 20 * MIB, None, None, None) for i in range(3)]
    (path,) = plot_all(tmp_path, samples, [], [], start=1.0)
    assert path.stat().st_size > 1000


def test_safe_file_names() -> None:
    assert safe_name("somabrain/somabrain-7d9f-x2k8p") == "somabrain_somabrain-7d9f-x2k8p"
    assert safe_name("///") == "workload"
