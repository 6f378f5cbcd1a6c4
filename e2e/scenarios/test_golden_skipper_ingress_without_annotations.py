"""The golden case where Flagger crashes, ``skipper/ingress-without-annotations-crash``, works with
flaggerpy.

Flagger 1.44's Skipper router writes its annotations into the map of the apex Ingress it copied;
an Ingress without ``metadata.annotations`` has none, and Flagger panics (``assignment to entry
in nil map``) while initializing: the corpus has ``crashed.yaml`` and no Initialized state.
flaggerpy reads missing annotations as none (docs/compatibility.md, Skipper router): replayed by
the golden harness, the same inputs reach Initialized with the canary Ingress Flagger writes for
an annotated apex Ingress, its predicate ``Weight(100)`` alone, and the apex left as it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.golden import corpus, providers, replay
from e2e.golden.recorder import canary_phase

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]


def _ingress(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == "Ingress" and o["metadata"]["name"] == name]
    return found


@pytest.mark.timeout(300)
async def test_an_ingress_without_annotations_initializes(cluster: LocalCluster) -> None:
    provider = providers.CATALOGUE["skipper"]
    cases = {c.name: c for c in corpus.cases(provider.directory)}
    case = cases["ingress-without-annotations-crash"]
    assert not case.replayable  # Flagger exited during initialization: crashed.yaml
    assert case.final_name == "crashed"

    result = (await replay.replay_provider(cluster, provider, [case])).cases[case.id]

    assert not result.error, f"{result.error}\n{result.log}"
    ours = result.snapshots["crashed"]
    assert canary_phase(ours) == "Initialized"
    # The apex Ingress is only read: as the user created it, without annotations.
    assert _ingress(ours, "podinfo") == _ingress(case.snapshot("crashed"), "podinfo")
    # The canary Ingress is the one Flagger writes for an annotated apex, without the user's
    # annotations: same spec, same owner, a 100/0 split and Weight(100) as the whole predicate.
    canary = _ingress(ours, "podinfo-canary")
    annotated = _ingress(cases["canary-stepweight"].snapshot("initialized"), "podinfo-canary")
    assert canary["spec"] == annotated["spec"]
    assert canary["metadata"]["ownerReferences"] == annotated["metadata"]["ownerReferences"]
    assert canary["metadata"]["labels"] == {"app": "podinfo"}
    assert canary["metadata"]["annotations"] == {
        "zalando.org/backend-weights": '{"podinfo-canary":0,"podinfo-primary":100}',
        "zalando.org/skipper-predicate": "Weight(100)",
    }
    messages = [e.message for e in result.events]
    assert f"Initialization done! podinfo.{case.namespace}" in messages, messages
