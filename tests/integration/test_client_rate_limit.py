"""``-kubeconfig-qps`` / ``-kubeconfig-burst`` limit the controller's requests to the API server.

Timings are measured, not pinned: the floor is what the token bucket allows at best, with a little
slack for the clock; the machine may be slower, never faster.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.processes import ControllerProcess
from flaggerpy import app, kube
from flaggerpy.settings import Settings

pytestmark = pytest.mark.integration

SLACK = 0.1  # seconds the clock may be off between the first and the last request


async def test_a_burst_beyond_the_limit_is_spread_at_qps(
        cluster: LocalCluster, namespace: str) -> None:
    settings = Settings.load({"kubeconfig-qps": "5", "kubeconfig-burst": "5"})
    user_agent = f"flaggerpy-qps-test/{secrets.token_hex(4)}"
    async with await kube.KubeClient.connect(
            kubeconfig=cluster.kubeconfig, user_agent=user_agent,
            rate_limiter=app.rate_limit(settings)) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.list(kube.CONFIGMAPS, namespace=namespace)
                               for _ in range(25)))
        took = time.monotonic() - started
    # (25 - 5) / 5 = 4 s at best.
    assert took >= 4.0 - SLACK, f"25 requests at qps=5, burst=5 took {took:.2f} s"

    def seen() -> list[audit.AuditRecord]:
        return [r for r in audit.records(cluster.audit_log) if r.user_agent == user_agent]

    records: list[audit.AuditRecord] = []
    for _ in range(50):  # the audit log is written asynchronously
        records = seen()
        if len(records) == 25:
            break
        await asyncio.sleep(0.2)
    assert len(records) == 25
    received = sorted(r.received for r in records)
    spread = (received[-1] - received[0]).total_seconds()
    assert spread >= 4.0 - SLACK, f"the API server saw 25 requests within {spread:.2f} s"
    # Never more than burst + qps * t requests in any window of t seconds.
    for i, first in enumerate(received):
        for j in range(i + 5, len(received)):
            window = (received[j] - first).total_seconds()
            assert j - i + 1 <= 5 + 5 * (window + SLACK), (i, j, window)


@pytest.fixture
def controller(cluster: LocalCluster, flagger_crds: None) -> Iterator[ControllerProcess]:
    process = ControllerProcess(
        kubeconfig=cluster.kubeconfig, name="qps",
        args=["-kubeconfig-qps=2", "-kubeconfig-burst=1", "-namespace=qps-test-unused"])
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_the_controller_process_applies_its_flags(controller: ControllerProcess) -> None:
    started = time.monotonic()
    controller.wait_ready(timeout=120)
    took = time.monotonic() - started
    listed = [line for line in controller.log_lines() if line.get("msg") == "informer_listed"]
    throttled = [line for line in controller.log_lines()
                 if line.get("msg") == "client_side_throttling"]
    # Every cache lists once before it is ready; at two requests a second after a burst of one
    # that alone takes (lists - 1) / 2 seconds.
    assert len(listed) >= 6
    assert took >= (len(listed) - 1) / 2 - SLACK
    assert throttled, "no wait for a token was logged"
    assert {line["qps"] for line in throttled} == {2.0}
    assert {line["burst"] for line in throttled} == {1}
