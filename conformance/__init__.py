"""SomaBrain conformance: the compose <-> Kubernetes parity gate and the shared NetworkPolicy evaluator.

`python -m conformance parity` compares compose/ against k8s/ point by point; `python -m conformance diff`
compares two live conformance reports. Neither imports the service (`brain`): they read manifests only.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
