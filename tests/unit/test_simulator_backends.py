"""Backends: behaviour from the pod template, readiness from the status, and the backend server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from e2e.simulator.backend import BackendBehaviour, make_app
from e2e.simulator.backends import BackendSpec, backend_spec, ready_replicas


def deployment(*, env: dict[str, str] | None = None, image: str = "podinfo:6.0.1",
               replicas: int | None = 2, ready: int | None = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [
        {"name": "app", "image": image,
         "env": [{"name": k, "value": v} for k, v in (env or {}).items()]},
        {"name": "sidecar", "image": "other:1", "env": [{"name": "FAULT_RATE", "value": "1"}]},
    ]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec,
            "status": {} if ready is None else {"readyReplicas": ready}}


def test_spec_from_pod_template_env() -> None:
    spec = backend_spec(deployment(env={"FAULT_RATE": "0.25", "LATENCY_MS": "40",
                                        "LATENCY_JITTER_MS": "10"}))
    assert spec == BackendSpec(version="podinfo:6.0.1", fault_rate=0.25, latency_ms=40,
                               latency_jitter_ms=10)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, BackendSpec("podinfo:6.0.1", 1.0), id="first-container-wins-env-order"),
        pytest.param({"FAULT_RATE": "2"}, BackendSpec("podinfo:6.0.1", 1.0), id="clamped"),
        pytest.param({"FAULT_RATE": "-1"}, BackendSpec("podinfo:6.0.1", 0.0), id="negative"),
        pytest.param({"FAULT_RATE": "lots"}, BackendSpec("podinfo:6.0.1", 0.0), id="invalid"),
        pytest.param({"FAULT_RATE": "0", "LATENCY_MS": "nan"}, BackendSpec("podinfo:6.0.1"),
                     id="nan"),
    ],
)
def test_spec_edge_cases(env: dict[str, str], expected: BackendSpec) -> None:
    assert backend_spec(deployment(env=env)) == expected


def test_a_changed_image_or_env_is_a_different_spec() -> None:
    before = backend_spec(deployment(env={"FAULT_RATE": "0"}))
    assert backend_spec(deployment(env={"FAULT_RATE": "0"}, image="podinfo:6.0.2")) != before
    assert backend_spec(deployment(env={"FAULT_RATE": "0.1"})) != before


@pytest.mark.parametrize(
    ("replicas", "ready", "expected"),
    [
        pytest.param(2, 2, 2, id="ready"),
        pytest.param(2, None, 0, id="not-ready-yet"),
        pytest.param(0, 2, 0, id="scaled-to-zero-while-pods-terminate"),
        pytest.param(None, 1, 1, id="default-replicas"),
    ],
)
def test_ready_replicas(replicas: int | None, ready: int | None, expected: int) -> None:
    assert ready_replicas(deployment(replicas=replicas, ready=ready)) == expected


async def test_backend_answers_as_configured(aiohttp_client: Any) -> None:
    failing = await aiohttp_client(make_app(BackendBehaviour(version="v2", fault_rate=1.0)))
    response = await failing.get("/any/path?x=1")
    assert response.status == 500
    assert response.headers["X-Version"] == "v2"
    assert (await response.json())["path"] == "/any/path?x=1"
    healthy = await aiohttp_client(make_app(BackendBehaviour(version="v1")))
    assert (await healthy.post("/", data=b"body")).status == 200


def test_behaviour_delay_and_fault_share() -> None:
    behaviour = BackendBehaviour(version="v", fault_rate=0.3, latency_ms=20,
                                 latency_jitter_ms=10, rng=random.Random(1))
    delays = [behaviour.delay() for _ in range(1000)]
    assert min(delays) >= 0.020
    assert max(delays) <= 0.030
    fails = sum(behaviour.fails() for _ in range(10_000))
    assert 2700 < fails < 3300
