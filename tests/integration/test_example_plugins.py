"""Third-party plugins, as a user installs them: the three example packages under ``examples/``.

Each example is a pip-installable project of its own (pyproject, entry points) written against
``flaggerpy.sdk`` only: a router (``splitmap``: the split is a ConfigMap it owns), a metrics
provider (``jsonhttp``: a number from a JSON HTTP API) and a notifier (``jsonhook``: a JSON
webhook). Here they are installed into this environment the way ``pip install`` would, then:

- each package's own tests run, with the ``flaggerpy.testing`` fixtures pointed at the local
  control plane, as a plugin author runs them;
- one canary runs from Initialized to Succeeded on the real ``flaggerpy controller`` process
  with ``provider: splitmap``, a MetricTemplate ``type: jsonhttp`` and an alert to an
  AlertProvider ``type: jsonhook``, checked by its effects: the weights the ConfigMap carried,
  the queries the metrics server answered, the messages the webhook received.

The packages are uninstalled again afterwards unless they were installed before, so the rest of
the run sees the plugin families it was collected with.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.scenario import canary
from flaggerpy import kube, sdk, testing

EXAMPLES = REPO_ROOT / "examples"
PACKAGES = {"router": "flaggerpy-splitmap", "metrics": "flaggerpy-jsonhttp",
            "notifier": "flaggerpy-jsonhook"}
"""Example folder -> distribution name."""


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def example_plugins() -> Iterator[None]:
    """The three packages built from this checkout and installed (without their dependencies:
    flaggerpy and aiohttp are here already, and nothing is fetched)."""
    before = {name for name in PACKAGES.values() if installed(name)}
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
        *(str(EXAMPLES / folder) for folder in PACKAGES))
    try:
        yield
    finally:
        added = sorted(set(PACKAGES.values()) - before)
        if added:
            pip("uninstall", "--yes", "--quiet", *added)


@pytest.mark.integration
@pytest.mark.usefixtures("flagger_crds", "example_plugins")
@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_the_example_package_passes_its_own_tests(folder: str, cluster: LocalCluster) -> None:
    """``pytest`` in the package's folder, as its author runs it: nothing may be skipped (the
    ``flaggerpy_*`` fixtures skip without a control plane; here they have one)."""
    env = {**os.environ, testing.KUBECONFIG_ENV: str(cluster.kubeconfig)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=EXAMPLES / folder, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary, summary
    assert "skipped" not in summary, result.stdout[-3000:]


# -- one canary on all three ----------------------------------------------------------------------

QUERY = 'errors{namespace="{{ namespace }}",target="{{ target }}"}[{{ interval }}]'


def manifests(*, metrics_url: str, hook_url: str) -> list[dict[str, Any]]:
    """A MetricTemplate of the example metrics type, an AlertProvider of the example notifier
    type, and a Canary routed by the example router that uses both."""
    return [
        {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
         "metadata": {"name": "errors"},
         "spec": {"provider": {"type": "jsonhttp", "address": metrics_url}, "query": QUERY}},
        {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
         "metadata": {"name": "team-chat"},
         "spec": {"type": "jsonhook", "address": hook_url, "channel": "deployments",
                  "username": "flaggerpy"}},
        canary("podinfo", provider="splitmap", analysis={
            "interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 25,
            "metrics": [{"name": "error-rate", "templateRef": {"name": "errors"},
                         "thresholdRange": {"max": 1}, "interval": "30s"}],
            "alerts": [{"name": "team", "severity": "info", "providerRef": {"name": "team-chat"}}],
        }),
    ]


@contextlib.asynccontextmanager
async def watched_splits(client: kube.KubeClient, namespace: str,
                         name: str) -> AsyncIterator[list[tuple[int, int]]]:
    """Every (primary, canary) weight pair the ConfigMap ``name`` carries, as the watch
    delivers each version of it."""
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        while True:  # the server ends a watch after its timeout: watch again
            async with contextlib.aclosing(client.watch(
                    kube.CONFIGMAPS, namespace=namespace, field_selector=f"metadata.name={name}",
                    timeout_seconds=60)) as events:
                async for event in events:
                    data = event.object.get("data") or {}
                    if "primaryWeight" in data:
                        pair = (int(data["primaryWeight"]), int(data["canaryWeight"]))
                        if not seen or seen[-1] != pair:
                            seen.append(pair)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.integration
@pytest.mark.usefixtures("flagger_crds", "example_plugins")
async def test_a_canary_runs_on_the_example_router_metrics_and_notifier(
        cluster: LocalCluster, namespace: str, counted_client: kube.KubeClient,
) -> None:
    sandbox = testing.Sandbox(client=counted_client, kubeconfig=cluster.kubeconfig,
                              namespace=namespace)
    async with (testing.receiving() as metrics, testing.receiving() as chat,
                watched_splits(counted_client, namespace, "podinfo-split") as splits):
        metrics.answer("/api/value", 200, json={"value": 0.5})
        try:
            await sandbox.start_controller()
            await sandbox.apply(
                testing.deployment("podinfo", image="podinfo:6.0.0"),
                *manifests(metrics_url=metrics.url("/api/value"),
                           hook_url=chat.url("/hooks/team")))
            await sandbox.wait_phase("podinfo", "Initialized", within=60)
            await sandbox.patch("Deployment", "podinfo", {"spec": {"template": {"spec": {
                "containers": [{"name": "podinfo", "image": "podinfo:6.0.1"}]}}}})
            seen: list[str] = []
            status = await sandbox.wait_phase("podinfo", ("Succeeded", "Failed"), within=90,
                                              seen=seen)

            assert status["phase"] == "Succeeded", (status, sandbox.log_tail())
            assert seen[-4:] == ["Progressing", "Promoting", "Finalising", "Succeeded"], seen
            await testing.eventually(lambda: _settled(splits), within=10,
                                     what="the split back at 100/0")
            await testing.eventually(lambda: _announced(chat), within=10,
                                     what="the promotion alert")
        finally:
            sandbox.stop()

    assert splits == [(100, 0), (75, 25), (50, 50), (100, 0)], splits
    queries = [call.query["query"] for call in metrics.calls if "query" in call.query]
    assert len(queries) >= 2, queries  # a check before each of the two steps at least
    assert set(queries) == {f'errors{{namespace="{namespace}",target="podinfo"}}[30s]'}
    bodies = chat.bodies("/hooks/team")
    texts = [b["attachments"][0]["text"] for b in bodies]
    assert texts == [
        "New Deployment detected, initialization completed.",
        "New revision detected, progressing canary analysis.",
        "Canary analysis completed successfully, promotion finished.",
    ], texts
    assert {(b["username"], b["channel"], b["text"]) for b in bodies} == {
        ("flaggerpy", "deployments", f"**podinfo.{namespace}**")}


async def _settled(splits: list[tuple[int, int]]) -> bool:
    return len(splits) > 1 and splits[-1] == (100, 0)


async def _announced(chat: testing.WebhookReceiver) -> bool:
    return any(b["attachments"][0]["text"].startswith("Canary analysis completed")
               for b in chat.bodies("/hooks/team"))


# -- docs/plugins.md shows this code, as it is ---------------------------------------------------

DOCS = REPO_ROOT / "docs" / "plugins.md"
QUOTE = re.compile(r"<!-- (from|runs): (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def quoted_blocks(kind: str) -> list[tuple[str, str]]:
    return [(where, code) for found, where, code in QUOTE.findall(DOCS.read_text())
            if found == kind]


def test_every_block_the_docs_quote_is_in_the_file_they_name() -> None:
    blocks = quoted_blocks("from")
    assert len(blocks) >= 8
    for where, code in blocks:
        assert code in (REPO_ROOT / where).read_text(), f"docs/plugins.md quotes {where}:\n{code}"


def test_the_observer_the_docs_show_is_one_and_renders() -> None:
    [(_, code)] = quoted_blocks("runs")
    namespace: dict[str, Any] = {"sdk": sdk}
    exec(compile(code, str(DOCS), "exec"), namespace)  # the docs' own example, as written
    observer_class = namespace["MeshyObserver"]
    observer = observer_class(client=None, render=sdk.render)
    assert isinstance(observer, sdk.Observer)
    model = sdk.MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                                    service="podinfo", ingress="podinfo", route="podinfo",
                                    interval="1m")
    assert observer.render_success_rate(model) == (
        'sum(rate(meshy_requests_total{namespace="test",service="podinfo-canary",'
        'code!~"5.."}[1m])) / sum(rate(meshy_requests_total{namespace="test",'
        'service="podinfo-canary"}[1m])) * 100')
    assert "meshy_request_duration_ms_bucket" in observer.render_duration(model)


def test_the_docs_list_the_sdk_exactly() -> None:
    text = DOCS.read_text()
    table = text[text.index("| family | from `flaggerpy.sdk` |"):]
    table = table[:table.index("\n\n")]
    listed = {name for row in table.splitlines()[2:]
              for name in re.findall(r"`(\w+)`", row.split("|")[2])}
    assert listed == set(sdk.__all__)
