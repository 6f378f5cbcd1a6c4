"""The golden case Flagger never finished, ``gatewayapi-v1/canary-mirror``, finishes with flaggerpy.

Flagger 1.44's Gateway API router writes the RequestMirror filter only when
``analysis.iterations`` is set, so a canary analysis with ``mirror: true`` repeats "Advance ...
canary weight 0" forever (the corpus has ``stuck.yaml``). flaggerpy mirrors whenever mirroring is
asked for (docs/compatibility.md, Gateway API router): the same inputs, replayed by the golden
harness, reach Succeeded through one mirror step (100/0 plus a RequestMirror to the canary with
``percent: mirrorWeight``) and the weights 80/20 and 60/40, without the mirror.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.golden import corpus, providers, replay
from e2e.golden.recorder import canary_phase

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]


def _route_states(steps: list[dict[str, Any]]) -> list[tuple[int, int, list[dict[str, Any]]]]:
    """(primary, canary, mirrors) of each step that changed the HTTPRoute."""
    states = []
    for step in steps:
        if not any(str(c).startswith("HTTPRoute") for c in step.get("changed") or ()):
            continue
        [route] = [o for o in step["objects"] if o["kind"] == "HTTPRoute"]
        [rule] = route["spec"]["rules"]
        weights = {b["name"]: b["weight"] for b in rule["backendRefs"]}
        mirrors = [f["requestMirror"] for f in rule.get("filters") or ()
                   if f["type"] == "RequestMirror"]
        states.append((weights["podinfo-primary"], weights["podinfo-canary"], mirrors))
    return states


@pytest.mark.timeout(600)
async def test_canary_mirroring_finishes(cluster: LocalCluster) -> None:
    provider = providers.CATALOGUE["gatewayapi-v1"]
    [case] = [c for c in corpus.cases(provider.directory) if c.name == "canary-mirror"]
    assert not case.replayable  # Flagger's run never ended: the corpus has stuck.yaml

    result = (await replay.replay_provider(cluster, provider, [case])).cases[case.id]

    assert not result.error, f"{result.error}\n{result.log}"
    assert canary_phase(result.snapshots[case.final_name]) == "Succeeded"
    # Initialized exactly as Flagger's (the first route has no mirror in either).
    [ours] = [o for o in result.snapshots["initialized"] if o["kind"] == "HTTPRoute"]
    [flaggers] = [o for o in case.snapshot("initialized") if o["kind"] == "HTTPRoute"]
    assert ours["spec"] == flaggers["spec"]
    mirror = {"backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary",
                             "port": 9898}, "percent": 50}
    assert _route_states(result.steps) == [
        (100, 0, [mirror]), (80, 20, []), (60, 40, []), (100, 0, [])]
    messages = [e.message for e in result.events]
    assert sum("canary weight 0" in m for m in messages) == 1, messages
    assert any("Promotion completed!" in m for m in messages), messages
