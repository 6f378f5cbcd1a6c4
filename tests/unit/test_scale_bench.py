"""The scale benchmark reads tick lateness quantiles from two scrapes of the controller's page."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from e2e.bench.scale import LATENESS, histogram, histogram_quantile
from flaggerpy.telemetry import Recorder


def scrape(recorder: Recorder) -> str:
    return generate_latest(recorder.registry).decode()


def test_quantiles_are_of_what_was_observed_between_the_scrapes() -> None:
    recorder = Recorder(process_collectors=False)
    for _ in range(50):
        recorder.observe_tick_lateness(20.0)  # before the wave: must not count
    before = histogram(scrape(recorder), LATENESS)
    for _ in range(98):
        recorder.observe_tick_lateness(0.003)  # in the first bucket, (0, 0.005]
    for _ in range(2):
        recorder.observe_tick_lateness(3.0)  # in (2.5, 5]
    after = histogram(scrape(recorder), LATENESS)
    assert after[float("inf")] - before[float("inf")] == 100
    median = histogram_quantile(0.5, before, after)
    assert median == pytest.approx(0.005 * 50 / 98)
    p99 = histogram_quantile(0.99, before, after)
    assert p99 is not None
    assert 2.5 < p99 <= 5.0


def test_nothing_observed_has_no_quantile() -> None:
    recorder = Recorder(process_collectors=False)
    page = histogram(scrape(recorder), LATENESS)
    assert page  # the buckets are on the page, at zero
    assert histogram_quantile(0.99, page, page) is None
