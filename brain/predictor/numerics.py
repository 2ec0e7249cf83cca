"""The Mahalanobis numerics, in JAX (served) and plain numpy (the reference the tests compare against).

With a diagonal covariance, d2 = sum((x - mu)^2 / max(var, floor)) and surprise = d2 / (d2 + dim). Running
statistics are exponentially weighted: mu' = mu + a (x - mu); var' = (1 - a) (var + a (x - mu)^2).
"""

from __future__ import annotations

import os
from typing import Any

#: XLA's CPU runtime splits every op over a thread pool as wide as the machine. These batches are at most 64 x 256
#: floats (microseconds of work), so the split costs more than it saves, and under a container's CPU limit the
#: extra threads are throttled with the rest of the process. Measured on our 2-core machine, one 16-row call: 130 us
#: of CPU unpinned, 53 us on one CPU, 37 us single-threaded. Set before jax is imported; an operator's own XLA_FLAGS
#: win.
SINGLE_THREADED_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.setdefault("XLA_FLAGS", SINGLE_THREADED_XLA)

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

VAR_FLOOR = 1e-6

F32 = npt.NDArray[np.float32]


@jax.jit
def _surprise_jax(x: Any, mu: Any, var: Any) -> tuple[Any, Any]:
    diff = x - mu
    d2 = jnp.sum(diff * diff / jnp.maximum(var, VAR_FLOOR), axis=-1)
    return d2, d2 / (d2 + x.shape[-1])


def surprise_batch(x: F32, mu: F32, var: F32) -> tuple[F32, F32]:
    """JAX-jitted batch scoring of [B, D] arrays; returns (d2[B], surprise[B]) as numpy."""
    d2, surprise = _surprise_jax(x, mu, var)
    return np.asarray(d2, dtype=np.float32), np.asarray(surprise, dtype=np.float32)


def surprise_numpy(x: F32, mu: F32, var: F32) -> tuple[F32, F32]:
    """Reference implementation in plain numpy (same formula, no JAX)."""
    diff = x - mu
    d2 = np.asarray(np.sum(diff * diff / np.maximum(var, VAR_FLOOR), axis=-1), dtype=np.float32)
    return d2, (d2 / (d2 + x.shape[-1])).astype(np.float32)


def ewma_update(x: F32, mu: F32, var: F32, alpha: float) -> tuple[F32, F32]:
    """One step of the exponentially weighted mean and variance."""
    diff = x - mu
    new_mu = mu + alpha * diff
    new_var = (1.0 - alpha) * (var + alpha * diff * diff)
    return new_mu.astype(np.float32), new_var.astype(np.float32)


def prior(dim: int) -> tuple[F32, F32]:
    """Statistics before anything is seen: zero mean, and the variance of a random unit vector's component."""
    return np.zeros(dim, dtype=np.float32), np.full(dim, 1.0 / dim, dtype=np.float32)
