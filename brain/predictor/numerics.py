"""The Mahalanobis numerics, in JAX (served) and plain numpy (the reference the tests compare against).

With a diagonal covariance, d2 = sum((x - mu)^2 / max(var, floor)) and surprise = d2 / (d2 + dim). Running
statistics are exponentially weighted: mu' = mu + a (x - mu); var' = (1 - a) (var + a (x - mu)^2).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

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
