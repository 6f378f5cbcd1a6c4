"""The chart's web dashboard: off by default; when enabled, the flag, the port and exactly the
rights the dashboard uses (docs/dashboard.md)."""

from __future__ import annotations

import pytest

from tests.unit.test_chart import (
    cluster_role_grants,
    container,
    grants,
    kinds,
    one,
    render,
    settings_from,
)

REVIEWS = {("authentication.k8s.io", "tokenreviews", "create"),
           ("authorization.k8s.io", "subjectaccessreviews", "create")}
STEERING = {("flaggerpy.dev", "canarycommands", "create"), ("", "events", "list")}


def test_the_dashboard_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    assert settings_from(container(objects), monkeypatch).telemetry.dashboard_listen_address == ""
    assert [p["name"] for p in container(objects)["ports"]] == ["http"]
    assert [p["name"] for p in one(objects, "Service")["spec"]["ports"]] == ["http"]
    assert not cluster_role_grants(objects) & (REVIEWS | STEERING)
    assert not any(o["metadata"]["name"].endswith("-dashboard") for o in objects
                   if o["kind"] in ("ClusterRole", "ClusterRoleBinding"))


@pytest.mark.parametrize("namespace", ["", "apps"])
def test_enabled_it_listens_and_may_review_tokens_and_rights(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("webDashboard.enabled=true", "webDashboard.port=9000",
                     f"namespace={namespace}")
    settings = settings_from(container(objects), monkeypatch)
    assert settings.telemetry.dashboard_listen_address == ":9000"
    assert {"name": "dashboard", "containerPort": 9000, "protocol": "TCP"} in \
        container(objects)["ports"]
    assert {"name": "dashboard", "port": 9000, "targetPort": "dashboard", "protocol": "TCP"} in \
        one(objects, "Service")["spec"]["ports"]
    assert cluster_role_grants(objects) >= STEERING
    # Reviews are cluster-scoped: bound cluster-wide even when -namespace binds the rest there.
    assert set(grants(one(objects, "ClusterRole", "flagger-dashboard")["rules"])) == REVIEWS
    binding = one(objects, "ClusterRoleBinding", "flagger-dashboard")
    assert binding["roleRef"]["name"] == "flagger-dashboard"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flagger",
                                    "namespace": "istio-system"}]
    assert ("RoleBinding" in kinds(objects)) == bool(namespace)
