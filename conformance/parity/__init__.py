"""The parity gate: compose/ against k8s/, point by point (see engine.run_parity)."""

from __future__ import annotations

from conformance.parity.engine import ParityReport, run_parity
from conformance.parity.findings import DIMENSIONS, Finding, Status

__all__ = ["DIMENSIONS", "Finding", "ParityReport", "Status", "run_parity"]
