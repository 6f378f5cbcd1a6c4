"""Mesh adapters: the exposition carries exactly the series and labels Flagger's queries read."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from e2e.simulator.metrics import (
    ISTIO_DURATION_BUCKETS,
    Exchange,
    IstioAdapter,
    LinkerdAdapter,
    Peer,
    make_adapter,
)
from e2e.simulator.routing import ServiceKey

SOURCE = Peer("loadtester", "test", {"app": "loadtester"})
CANARY = Peer("podinfo", "test", {"app": "podinfo", "version": "2"})


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_istio_series_match_flaggers_selectors() -> None:
    registry = CollectorRegistry()
    adapter = IstioAdapter(registry)
    adapter.observe(Exchange(SOURCE, "podinfo", ServiceKey("test", "podinfo-canary"), CANARY,
                             500, 12.0))
    text = exposition(registry)
    destination = next(line for line in text.splitlines()
                       if line.startswith("istio_requests_total{")
                       and 'reporter="destination"' in line)
    for label in ('destination_workload="podinfo"', 'destination_workload_namespace="test"',
                  'response_code="500"', 'request_protocol="http"',
                  'destination_service="podinfo-canary.test.svc.cluster.local"',
                  'destination_service_name="podinfo-canary"', 'source_workload="loadtester"',
                  'destination_version="2"', 'connection_security_policy="mutual_tls"'):
        assert label in destination
    assert 'reporter="source"' in text
    assert 'istio_request_duration_milliseconds_bucket{' in text
    assert 'le="25.0"' in text
    assert "istio_request_duration_milliseconds_sum{" in text
    assert "istio_request_duration_milliseconds_count{" in text
    assert ISTIO_DURATION_BUCKETS[:4] == (0.5, 1, 5, 10)


def test_istio_without_destination_pod_only_the_source_reports() -> None:
    registry = CollectorRegistry()
    IstioAdapter(registry).observe(Exchange(SOURCE, "podinfo", ServiceKey("test", "podinfo"),
                                            None, 503, 0.0, "UH"))
    text = exposition(registry)
    assert 'reporter="destination"' not in text
    assert 'destination_workload="unknown"' in text
    assert 'response_flags="UH"' in text


def test_linkerd_series_match_flaggers_selectors() -> None:
    registry = CollectorRegistry()
    LinkerdAdapter(registry).observe(Exchange(SOURCE, "podinfo", ServiceKey("test", "podinfo"),
                                              CANARY, 200, 3.0))
    text = exposition(registry)
    inbound = [line for line in text.splitlines()
               if line.startswith("response_total{") and 'direction="inbound"' in line]
    assert len(inbound) == 1
    for label in ('namespace="test"', 'deployment="podinfo"', 'classification="success"',
                  'status_code="200"'):
        assert label in inbound[0]
    assert "response_latency_ms_bucket{" in text
    assert "request_total{" in text


def test_make_adapter_names_known_meshes() -> None:
    assert make_adapter("istio", registry=CollectorRegistry()).name == "istio"
    with pytest.raises(ValueError, match="gatewayapi, istio, kuma, linkerd, osm"):
        make_adapter("consul", registry=CollectorRegistry())
