"""The JAX Mahalanobis scoring matches the plain numpy reference; the EWMA update behaves as documented."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brain.predictor.numerics import SINGLE_THREADED_XLA, ewma_update, prior, surprise_batch, surprise_numpy


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_jax_matches_numpy_reference(batch: int) -> None:
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 256)).astype(np.float32)
    mu = rng.normal(size=(batch, 256)).astype(np.float32)
    var = rng.uniform(0.01, 2.0, size=(batch, 256)).astype(np.float32)
    d2_jax, s_jax = surprise_batch(x, mu, var)
    d2_np, s_np = surprise_numpy(x, mu, var)
    np.testing.assert_allclose(d2_jax, d2_np, rtol=1e-4)
    np.testing.assert_allclose(s_jax, s_np, rtol=1e-5)
    assert np.all((s_jax >= 0) & (s_jax < 1))


def test_surprise_formula_by_hand() -> None:
    x = np.array([[2.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    mu = np.zeros((1, 4), dtype=np.float32)
    var = np.array([[4.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    d2, s = surprise_batch(x, mu, var)
    assert d2[0] == pytest.approx(1.0)  # (2-0)^2 / 4
    assert s[0] == pytest.approx(1.0 / (1.0 + 4))


def test_prior_gives_one_half_for_a_unit_vector() -> None:
    mu, var = prior(256)
    x = np.zeros(256, dtype=np.float32)
    x[3] = 1.0
    _, s = surprise_numpy(x[None], mu[None], var[None])
    assert s[0] == pytest.approx(0.5)


def test_ewma_converges_and_repeated_input_grows_less_surprising() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=16).astype(np.float32)
    x /= np.linalg.norm(x)
    mu, var = prior(16)
    seen = []
    for _ in range(30):
        seen.append(float(surprise_numpy(x[None], mu[None], var[None])[1][0]))
        mu, var = ewma_update(x, mu, var, 0.2)
    assert all(later < earlier for earlier, later in itertools.pairwise(seen))
    np.testing.assert_allclose(mu, x, atol=0.01)


_SCORE_ONE = (
    "import os, numpy as np\n"
    "from brain.predictor.numerics import surprise_batch\n"
    "x = np.ones((2, 8), dtype=np.float32)\n"
    "print(os.environ['XLA_FLAGS'], '|', surprise_batch(x, 0 * x, x)[0].tolist())\n"
)


@pytest.mark.parametrize("operator_flags", [None, "--xla_cpu_multi_thread_eigen=true"])
def test_xla_runs_single_threaded_unless_the_operator_says_otherwise(operator_flags: str | None) -> None:
    """A fresh process: the default flags are set before jax starts, and XLA accepts them (it aborts on an unknown
    flag at the first computation); XLA_FLAGS from the environment is left as it is."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if operator_flags is not None:
        env["XLA_FLAGS"] = operator_flags
    done = subprocess.run([sys.executable, "-c", _SCORE_ONE], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    flags, scores = done.stdout.strip().split(" | ")
    assert flags == (operator_flags or SINGLE_THREADED_XLA)
    assert scores == "[8.0, 8.0]"
