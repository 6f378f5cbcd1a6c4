"""The Canary the routers see: `service.apex` labels as Flagger's Kubernetes router leaves them."""

from __future__ import annotations

from typing import Any

from flaggerpy.canary.lifecycle import as_routers_see_it
from flaggerpy.models import Canary


def make_canary(**service: Any) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898, **service},
                 "analysis": {"interval": "10s", "threshold": 5, "iterations": 2}},
    })


def apex_labels(canary: Canary) -> dict[str, str] | None:
    assert canary.spec.service is not None
    apex = canary.spec.service.apex
    return None if apex is None else apex.labels


def test_without_service_apex_nothing_is_added() -> None:
    canary = make_canary()
    assert as_routers_see_it(canary, "app") is canary


def test_the_selector_label_names_the_apex_service() -> None:
    canary = make_canary(name="shop", apex={"labels": {"team": "checkout"}})
    seen = as_routers_see_it(canary, "app.kubernetes.io/name")
    assert apex_labels(seen) == {"team": "checkout", "app.kubernetes.io/name": "shop"}
    assert apex_labels(canary) == {"team": "checkout"}  # the cached Canary is left alone


def test_apex_annotations_alone_are_enough_and_the_label_wins() -> None:
    assert apex_labels(as_routers_see_it(make_canary(apex={"annotations": {"a": "b"}}),
                                         "app")) == {"app": "podinfo"}
    assert apex_labels(as_routers_see_it(make_canary(apex={"labels": {"app": "mine"}}),
                                         "app")) == {"app": "podinfo"}


def test_no_selector_label_no_services_nothing_is_added() -> None:
    canary = make_canary(apex={"labels": {"team": "checkout"}})
    assert as_routers_see_it(canary, "") is canary
