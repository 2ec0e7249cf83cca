"""One PNG per workload: memory and CPU over time against their limit lines, requests/s underneath."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from load.locust_run import RpsPoint
from load.model import Event, Sample

MIB = 2**20


def safe_name(workload: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", workload).strip("_") or "workload"


def plot_workload(path: Path, workload: str, samples: Sequence[Sample], rps: Sequence[RpsPoint],
                  events: Sequence[Event], start: float, title: str = "") -> Path:
    samples = sorted(samples, key=lambda s: s.t)
    fig, (ax_mem, ax_cpu, ax_rps) = plt.subplots(3, 1, figsize=(10, 8), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 3, 2]})
    fig.suptitle(f"{workload}: {title}" if title else workload)

    mem = [(s.t - start, s.memory_bytes / MIB) for s in samples if s.memory_bytes is not None]
    if mem:
        ax_mem.plot(*zip(*mem, strict=True), color="tab:blue", label="working set")
    memory_limit = next((s.memory_limit for s in samples if s.memory_limit), None)
    if memory_limit:
        ax_mem.axhline(memory_limit / MIB, color="tab:red", linestyle="--", label=f"limit {memory_limit / MIB:.0f} MiB")
        ax_mem.set_ylim(0, memory_limit / MIB * 1.1)
    ax_mem.set_ylabel("memory (MiB)")

    cpu = [(s.t - start, s.cpu_cores) for s in samples if s.cpu_cores is not None]
    if cpu:
        ax_cpu.plot(*zip(*cpu, strict=True), color="tab:green", label="CPU used")
    cpu_limit = next((s.cpu_limit for s in samples if s.cpu_limit), None)
    if cpu_limit:
        ax_cpu.axhline(cpu_limit, color="tab:red", linestyle="--", label=f"limit {cpu_limit:g} cores")
        top = max([cpu_limit] + [c for _, c in cpu])
        ax_cpu.set_ylim(0, top * 1.15)
    ax_cpu.set_ylabel("CPU (cores)")

    for event in events:
        if event.kind in ("oom", "restart", "die", "missing"):
            for ax in (ax_mem, ax_cpu):
                ax.axvline(event.t - start, color="black", linestyle=":", linewidth=1)
            ax_mem.annotate(event.kind.upper(), (event.t - start, ax_mem.get_ylim()[1] * 0.95), fontsize=8)

    if rps:
        times = [p.t - start for p in rps]
        ax_rps.plot(times, [p.rps for p in rps], color="tab:purple", label="requests/s (all routes)")
        if any(p.failures_per_s for p in rps):
            ax_rps.plot(times, [p.failures_per_s for p in rps], color="tab:red", label="failures/s")
        users = ax_rps.twinx()
        users.step(times, [p.users for p in rps], color="tab:gray", where="post", alpha=0.5, label="users")
        users.set_ylabel("users")
        handles, labels = ax_rps.get_legend_handles_labels()
        extra_handles, extra_labels = users.get_legend_handles_labels()
        ax_rps.legend(handles + extra_handles, labels + extra_labels, loc="upper left", fontsize=8)
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_xlabel("seconds since the run started")
    for ax in (ax_mem, ax_cpu, ax_rps):
        ax.grid(alpha=0.3)
        if ax is not ax_rps and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(report_dir: Path, samples: Sequence[Sample], rps: Sequence[RpsPoint], events: Sequence[Event],
             start: float, titles: dict[str, str] | None = None) -> list[Path]:
    paths = []
    for workload in sorted({s.workload for s in samples}):
        mine = [s for s in samples if s.workload == workload]
        path = report_dir / f"resources_{safe_name(workload)}.png"
        paths.append(plot_workload(path, workload, mine, rps, [e for e in events if e.workload == workload], start,
                                   (titles or {}).get(workload, "")))
    return paths
