"""Run locust headless in a child process and read back its CSV statistics."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOMABRAIN_USERS = ("ReaderUser", "WriterUser", "ActorUser", "HealthPoller")


class LocustFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class RouteStats:
    route: str  # "POST /recall"
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failure_ratio": self.failure_ratio}


@dataclass(frozen=True)
class RpsPoint:
    t: float
    users: int
    rps: float
    failures_per_s: float


def _number(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def read_stats(path: Path) -> tuple[list[RouteStats], RouteStats | None]:
    """Per-route rows and the Aggregated row of a locust `*_stats.csv`."""
    routes, total = [], None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            stats = RouteStats(
                route=f"{row['Type']} {row['Name']}".strip(), requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]), rps=float(row["Requests/s"]), p50_ms=_number(row["50%"]),
                p95_ms=_number(row["95%"]), p99_ms=_number(row["99%"]))
            if row["Name"] == "Aggregated":
                total = stats
            else:
                routes.append(stats)
    return routes, total


def read_history(path: Path) -> list[RpsPoint]:
    """Aggregated requests/s over time from a locust `*_stats_history.csv`."""
    points: list[RpsPoint] = []
    if not path.exists():
        return points
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                points.append(RpsPoint(float(row["Timestamp"]), int(row["User Count"]),
                                       float(row["Requests/s"]), float(row["Failures/s"])))
    return points


def run_locust(*, locustfile: Path, host: str, user_classes: tuple[str, ...], options: list[str], csv_prefix: Path,
               html: Path, timeout: float, log: Path) -> int:
    """Run locust to completion (the shape ends it); return its exit code (1 = some requests failed)."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", host,
            "--csv", str(csv_prefix), "--csv-full-history", "--html", str(html), "--only-summary",
            "--loglevel", "WARNING", *options, *user_classes]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            raise LocustFailed(f"locust did not finish within {timeout:.0f} s; its log: {log}") from None
    stats = Path(f"{csv_prefix}_stats.csv")
    if not stats.exists() or code not in (0, 1):
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise LocustFailed(f"locust exited with {code} and no statistics ({log}):\n{tail}")
    return code
