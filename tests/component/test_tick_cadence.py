"""A run's ticks keep their cadence, record how late each was, and spread when revised together."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from flaggerpy.canary.lifecycle import Lifecycle
from flaggerpy.models import CanaryPhase
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

INTERVAL = 60.0


def engine(*, jitter: float = 0.1) -> tuple[Lifecycle, CollectorRegistry]:
    telemetry = Recorder(process_collectors=False)
    lifecycle = Lifecycle(store=None, settings=Settings(controller={"analysis_jitter": jitter}),  # type: ignore[arg-type]
                          telemetry=telemetry, events=None, webhooks=None,  # type: ignore[arg-type]
                          analyzer=None, alerter=None)  # type: ignore[arg-type]
    return lifecycle, telemetry.registry


def lateness(registry: CollectorRegistry) -> tuple[float, float]:
    """(count, sum) of the tick lateness histogram."""
    count = registry.get_sample_value("flaggerpy_canary_tick_lateness_seconds_count") or 0.0
    total = registry.get_sample_value("flaggerpy_canary_tick_lateness_seconds_sum") or 0.0
    return count, total


def test_a_late_tick_is_recorded_and_the_next_keeps_the_cadence() -> None:
    lifecycle, registry = engine()
    due = 1000.0
    upcoming = lifecycle._next_tick(CanaryPhase.PROGRESSING, due=due, now=due + 0.3,
                                    interval=INTERVAL)
    assert upcoming == due + INTERVAL  # not 60 s after the late start
    count, total = lateness(registry)
    assert count == 1
    assert abs(total - 0.3) < 1e-9


def test_a_tick_later_than_a_whole_interval_starts_a_new_cadence() -> None:
    lifecycle, registry = engine()
    upcoming = lifecycle._next_tick(CanaryPhase.PROGRESSING, due=1000.0, now=1100.0,
                                    interval=INTERVAL)
    assert upcoming == 1100.0 + INTERVAL  # no burst of ticks to catch up
    assert lateness(registry) == (1, 100.0)


def test_a_runs_first_tick_is_not_late_and_its_second_is_jittered() -> None:
    lifecycle, registry = engine(jitter=0.1)
    now = 5000.0
    upcoming = [lifecycle._next_tick(CanaryPhase.SUCCEEDED, due=0.0, now=now, interval=INTERVAL)
                for _ in range(500)]
    assert lateness(registry) == (0, 0.0)
    assert all(now + INTERVAL <= tick <= now + 1.1 * INTERVAL for tick in upcoming)
    # 500 canaries revised in the same second spread their second ticks over seconds.
    assert max(upcoming) - min(upcoming) > 0.05 * INTERVAL


def test_without_jitter_the_second_tick_is_exactly_one_interval_later() -> None:
    lifecycle, _ = engine(jitter=0.0)
    assert lifecycle._next_tick(CanaryPhase.INITIALIZED, due=0.0, now=10.0,
                                interval=INTERVAL) == 10.0 + INTERVAL


def test_a_paced_tick_after_a_restart_has_no_lateness_to_report() -> None:
    lifecycle, registry = engine(jitter=0.0)
    assert lifecycle._next_tick(CanaryPhase.PROGRESSING, due=0.0, now=10.0,
                                interval=INTERVAL) == 10.0 + INTERVAL
    assert lateness(registry) == (0, 0.0)
