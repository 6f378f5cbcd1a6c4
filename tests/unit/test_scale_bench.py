"""The scale benchmark reads tick lateness quantiles from two scrapes of the controller's page."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from e2e.bench.scale import LATENESS, histogram, histogram_quantile, table
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


def test_the_table_shows_each_level_and_where_the_run_stopped() -> None:
    level = {
        "provider": "kubernetes", "n": 100, "initialise_seconds": 15.7,
        "cpu_ms_per_initialisation": 23.1, "rss_mib": 189.9,
        "idle": {"cpu_percent_of_a_core": 1.43, "requests_per_canary_hour": {}},
        "wave": {"all_progressing_seconds": 0.7, "all_succeeded_seconds": 61.1,
                 "requests_per_revision": {"patch": 9.0},
                 "tick_lateness_seconds": {"p50": 0.003, "p99": 0.02}},
        "detection_seconds": {"p50": 0.05, "p99": 0.11},
        "apiserver_rss_mib": 775.0, "etcd_rss_mib": 99.0,
    }
    stopped = {"provider": "kubernetes", "n": 10000, "stopped": "not all 10000 Initialized"}
    text = table([{"levels": [level, stopped], "stopped_at": [
        {"provider": "kubernetes", "n": 10000, "why": "not all 10000 Initialized"}]}])
    rows = text.splitlines()
    assert rows[2].startswith(
        "| kubernetes | 100 | 2 | 15.7 s | 23.1 ms | 189.9 MiB | 1.43 % | 0 |")
    assert "0.003 s / 0.02 s" in rows[2]
    assert "stopped: not all 10000 Initialized" in rows[3]
    assert rows[-1] == "Stopped at kubernetes N = 10000: not all 10000 Initialized"
