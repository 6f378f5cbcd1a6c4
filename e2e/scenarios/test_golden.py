"""Flagger's golden corpus replayed with flaggerpy: the same inputs must give the same objects.

``../shared/reference/golden`` holds what Flagger 1.44 wrote for a catalogue of inputs per router
(snapshots at Initialized and at the end, every distinct step state, the Canary's Events). Each
case of an enabled provider (``e2e/golden/providers.py``) is replayed on the local control plane
and compared field by field; the differences flaggerpy makes on purpose, or by a known bug, are
listed in ``e2e/golden/differences.yaml`` and nothing else is tolerated.

All cases of a provider run at once against one controller process (the first case's test pays
for the provider's whole replay; the others read its result). The tests without the cluster check
the harness itself on the corpus: its normalization, its step states, and that it can fail.
"""

from __future__ import annotations

import copy
import fnmatch
import time
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.golden import compare, corpus, differences, providers, replay
from e2e.golden.normalize import label, normalize
from e2e.golden.steps import step_state

ENABLED = providers.enabled()


def replayable(provider: providers.GoldenProvider) -> list[corpus.Case]:
    return [case for case in corpus.cases(provider.directory) if case.replayable]


CASES = [pytest.param(p, case, id=case.id) for p in ENABLED for case in replayable(p)]
ALL_CASES = [pytest.param(p, case, id=case.id) for p in providers.CATALOGUE.values()
             for case in corpus.cases(p.directory)]
ALL_REPLAYABLE = [pytest.param(p, case, id=case.id) for p in providers.CATALOGUE.values()
                  for case in replayable(p)]
ALLOWED = differences.load()
GOLDEN_TESTS = {"test_replay_matches_flagger", "test_every_listed_difference_still_exists"}


@pytest.fixture(scope="session")
def replays() -> dict[str, replay.ProviderReplay]:
    """Each provider's replay, filled by the first test that needs one."""
    return {}


async def replayed(cluster: LocalCluster, provider: providers.GoldenProvider,
                   cache: dict[str, replay.ProviderReplay],
                   request: pytest.FixtureRequest) -> replay.ProviderReplay:
    """The provider's replay; the first call replays every provider the run selected, at once."""
    if provider.directory not in cache:
        selected = {param.directory for item in request.session.items
                    if isinstance(item, pytest.Function) and item.originalname in GOLDEN_TESTS
                    and isinstance(param := item.callspec.params["provider"],
                                   providers.GoldenProvider)}
        work = [(p, replayable(p)) for p in ENABLED
                if p.directory in selected | {provider.directory} and p.directory not in cache]
        started = time.monotonic()
        cache.update(await replay.replay_providers(cluster, work))
        print(f"\ngolden replay: {sum(len(c) for _, c in work)} cases of "
              f"{len(work)} provider(s) in {time.monotonic() - started:.0f}s wall time")
        for p, _ in work:
            result = cache[p.directory]
            slowest = max((r.seconds for r in result.cases.values()), default=0)
            print(f"  {p.directory}: {len(result.cases)} cases, {len(result.groups)} controller "
                  f"process(es), {result.seconds:.0f}s (slowest case {slowest:.0f}s)")
    return cache[provider.directory]


# -- the replay ----------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.timeout(1800)  # the first test pays for the whole replay (replay.REPLAY_WITHIN)
@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize(("provider", "case"), CASES)
async def test_replay_matches_flagger(
    cluster: LocalCluster, replays: dict[str, replay.ProviderReplay],
    request: pytest.FixtureRequest, provider: providers.GoldenProvider, case: corpus.Case,
) -> None:
    result = (await replayed(cluster, provider, replays, request)).cases[case.id]
    report = compare.compare_case(case, result, ALLOWED)
    assert not report.failed, report.render()


@pytest.mark.e2e
@pytest.mark.timeout(1800)  # the first test pays for the whole replay (replay.REPLAY_WITHIN)
@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize("provider", ENABLED, ids=[p.directory for p in ENABLED])
async def test_every_listed_difference_still_exists(
    cluster: LocalCluster, replays: dict[str, replay.ProviderReplay],
    request: pytest.FixtureRequest, provider: providers.GoldenProvider,
) -> None:
    """An entry that hid nothing is stale (the behaviour was aligned, the bug fixed): it must go,
    or it would hide the difference coming back. An entry naming cases must hide something in
    each of them; one with a pattern (``ab-*``, ``*``) in at least one case it matches."""
    result = await replayed(cluster, provider, replays, request)
    used = {case.name: compare.compare_case(case, result.cases[case.id], ALLOWED).used
            for case in replayable(provider)}
    stale = []
    for index, entry in enumerate(ALLOWED):
        cases = [name for name in used if entry.applies(provider.directory, name)]
        hid = [name for name in cases if index in used[name]]
        named = not any(c in pattern for pattern in entry.cases for c in "*?[")
        if cases and (len(hid) < len(cases) if named else not hid):
            stale.append(f"{entry.describe()} (hid nothing in {sorted(set(cases) - set(hid))})")
    assert not stale, "allow-list entries that matched no difference:\n" + "\n".join(stale)


# -- the harness, checked on the corpus itself (no cluster) --------------------------------------
@pytest.mark.parametrize(("provider", "case"), ALL_CASES)
def test_normalization_leaves_the_corpus_as_it_is(
    provider: providers.GoldenProvider, case: corpus.Case,
) -> None:
    """The corpus is normalized already: the harness's normalization must agree with it, or our
    side would be compared in another form than Flagger's."""
    for name in ("initialized", "succeeded", "failed", "deleted", "stuck"):
        if case.has(name):
            objects = case.snapshot(name)
            assert [normalize(o) for o in objects] == objects, name
    for step in case.steps:
        assert [normalize(o) for o in step["objects"]] == step["objects"], step["step"]


@pytest.mark.parametrize(("provider", "case"), ALL_REPLAYABLE)
def test_step_state_of_the_snapshots_is_the_first_and_last_step(
    provider: providers.GoldenProvider, case: corpus.Case,
) -> None:
    """The harness's step state of ``initialized.yaml`` is the corpus's step 0, and that of the
    final snapshot its last step: the catalogue's kinds and the state's fields are right."""
    def state(step: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in step.items() if k not in ("step", "changed")}

    assert step_state(case.snapshot("initialized"), provider) == state(case.steps[0])
    assert step_state(case.snapshot(case.final_name), provider) == state(case.steps[-1])


def _recorded(case: corpus.Case) -> replay.Replayed:
    """A replay that produced exactly what Flagger did."""
    out = replay.Replayed(case)
    for name in ("initialized", case.final_name, "deleted"):
        if case.has(name):
            out.snapshots[name] = case.snapshot(name)
    out.steps = copy.deepcopy(case.steps)
    out.events = list(case.events)
    return out


def _istio_case(name: str) -> corpus.Case:
    [case] = [c for c in corpus.cases("istio") if c.name == name]
    return case


def test_the_same_objects_compare_equal() -> None:
    case = _istio_case("ab-header")
    report = compare.compare_case(case, _recorded(case), [])
    assert not report.failed, report.render()


def test_a_changed_field_is_reported_with_kind_name_path_and_both_values() -> None:
    case = _istio_case("ab-header")
    ours = _recorded(case)
    [vs] = [o for o in ours.snapshots["succeeded"] if o["kind"] == "VirtualService"]
    vs["spec"]["http"][1]["route"][0]["weight"] = 90

    report = compare.compare_case(case, ours, [])

    assert [(d.where, d.object, d.path, d.flagger, d.ours) for d in report.differences] == [
        ("succeeded", "VirtualService.networking.istio.io/podinfo",
         "spec.http[1].route[0].weight", 100, 90)]
    assert "spec.http[1].route[0].weight" in report.render()
    listed = differences.Allowed("istio", ("ab-header",), "test", object=label(vs),
                                 paths=("spec.http[*].route[0].weight",), where=("succeeded",))
    assert not compare.compare_case(case, ours, [listed]).failed
    elsewhere = differences.Allowed("istio", ("ab-header",), "test", object=label(vs),
                                    paths=("spec.http[*].route[1].weight",))
    assert compare.compare_case(case, ours, [elsewhere]).failed


def test_a_missing_step_and_a_step_of_our_own_are_reported() -> None:
    case = _istio_case("rollback-failing-webhook")
    ours = _recorded(case)
    removed = ours.steps.pop(4)  # the first weight shift
    ours.steps.append(copy.deepcopy(ours.steps[-1]))
    ours.steps[-1]["canary"]["phase"] = "Initializing"

    report = compare.compare_case(case, ours, [])

    sequence = [d for d in report.differences if d.object == "(sequence)"]
    assert len(sequence) == 2, report.render()
    assert "VirtualService" in str(removed["changed"])
    assert sequence[0].at == "Flagger step 4 has no counterpart in ours"
    assert sequence[1].at.startswith("our step")


def test_events_are_a_multiset_with_initializing_ticks_counted_by_presence() -> None:
    case = _istio_case("ab-header")
    ours = _recorded(case)
    waiting = [e for e in ours.events if "waiting for rollout" in e.message]
    ours.events += waiting * 2  # more Initializing ticks: timing, not a difference
    assert not compare.compare_case(case, ours, []).failed
    advance = next(e for e in ours.events if e.message.startswith("Advance"))
    ours.events.remove(advance)
    report = compare.compare_case(case, ours, [])
    assert [(d.where, d.at) for d in report.differences] == [("events", "missing in ours")]


def test_the_allow_list_names_real_providers_cases_and_reasons() -> None:
    for entry in ALLOWED:
        # The provider is a glob too ("gatewayapi-*" for both API versions).
        folders = fnmatch.filter(providers.CATALOGUE, entry.provider)
        assert folders, entry
        if entry.provider != "*":
            names = {c.name for folder in folders for c in corpus.cases(folder)}
            for pattern in entry.cases:
                assert fnmatch.filter(names, pattern), (pattern, entry)
        assert len(entry.reason) > 20, entry


def test_flagger_flags_become_controller_flags() -> None:
    case = _istio_case("ab-header")
    assert replay.controller_args(case) == (
        "-mesh-provider=istio", "-metrics-server=http://127.0.0.1:1",
        "-control-loop-interval=2s")
    ingress_class = [c for c in corpus.cases("contour") if "-ingress-class=contour" in
                     c.flagger_args]
    assert len(replay.groups(providers.CATALOGUE["contour"], corpus.cases("contour"))) == (
        2 if ingress_class else 1)
    assert [len(g) for g in replay.groups(providers.CATALOGUE["kuma"],
                                          corpus.cases("kuma"))] == [1, 1, 1]


def test_an_unordered_entry_ignores_the_order_and_nothing_else() -> None:
    case = _istio_case("delegation")
    ours = _recorded(case)
    [service] = [o for o in ours.snapshots["succeeded"] if label(o) == "Service/podinfo"]
    service["spec"]["ports"].reverse()
    entry = differences.Allowed("istio", ("delegation",), "test", object="Service/podinfo",
                                paths=("spec.ports",), unordered=True, where=("succeeded",))

    reordered = compare.compare_case(case, ours, [entry])
    assert not reordered.failed, reordered.render()
    assert reordered.used == {0}
    service["spec"]["ports"][0]["targetPort"] = 1234
    assert compare.compare_case(case, ours, [entry]).failed


def test_an_entry_is_used_only_where_it_hides_a_difference() -> None:
    case = _istio_case("ab-header")
    ours = _recorded(case)
    hash_entry = differences.Allowed("*", ("*",), "test", object="Canary.flagger.app/podinfo",
                                     paths=("status.lastAppliedSpec",))
    assert compare.compare_case(case, ours, [hash_entry]).used == set()
    for obj in ours.snapshots["succeeded"]:
        if obj["kind"] == "Canary":
            obj["status"]["lastAppliedSpec"] = "0123456789abcdef"
    assert compare.compare_case(case, ours, [hash_entry]).used == {0}
