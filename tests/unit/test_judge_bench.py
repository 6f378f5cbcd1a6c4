"""The judge benchmark's own logic, and a small power check that keeps its numbers honest."""

from __future__ import annotations

import numpy as np

from e2e.bench.judge import simulate, smallest


def test_smallest_size_that_stays_above_the_share() -> None:
    cells = {10: {"seen": 0.9}, 20: {"seen": 0.7}, 30: {"seen": 0.85}, 50: {"seen": 1.0}}

    assert smallest(cells, "seen", 0.8) == 30
    assert smallest(cells, "seen", 0.95) == 50
    assert smallest({10: {"seen": 0.1}}, "seen", 0.8) is None


def test_a_large_regression_is_seen_and_no_regression_is_not_failed() -> None:
    rng = np.random.default_rng(3)

    slower = simulate(regression=0.5, size=100, runs=20, sigma=0.5, rng=rng)
    same = simulate(regression=0.0, size=100, runs=20, sigma=0.5, rng=rng)

    assert slower["fail"] >= 0.9
    assert same["fail"] == 0.0
    assert same["seen"] <= 0.15
