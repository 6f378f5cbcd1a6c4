"""Each templateRef result and provider problem names its MetricTemplate and what its provider did.

The analyzer against a Prometheus stand-in (aiohttp, the query API's documented answers):
what flaggerpy.canary.template_status turns into the template's ``Answered`` condition.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web

from e2e.cluster.localcluster import free_port
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer, TemplateCause
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

NS = "test"


class Objects:
    """An informer cache stand-in."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, Mapping[str, Any]] = {}

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.objects.get(key)

    def put(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["namespace"] = NS
        self.objects[ObjectKey(NS, obj["metadata"]["name"])] = obj


async def answer(request: web.Request) -> web.Response:
    if "bad" in request.query.get("query", ""):
        return web.json_response({"status": "error", "errorType": "bad_data",
                                  "error": "parse error"}, status=400)
    return web.json_response({"status": "success", "data": {
        "resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})


@pytest.fixture
async def prometheus(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_get("/api/v1/query", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def world(prometheus: str) -> AsyncIterator[tuple[MetricsAnalyzer, Objects, Objects]]:
    templates, secrets = Objects(), Objects()
    analyzer = MetricsAnalyzer(
        templates=templates, secrets=secrets.get,
        settings=Settings(metrics={"server": prometheus}, mesh={"provider": "kubernetes"}),
        telemetry=Recorder(process_collectors=False))
    yield analyzer, templates, secrets
    await analyzer.aclose()


def template(name: str, address: str, *, query: str = "vector(1)", type_: str = "prometheus",
             secret: str | None = None) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": type_, "address": address}
    if secret is not None:
        provider["secretRef"] = {"name": secret}
    return {"metadata": {"name": name}, "spec": {"provider": provider, "query": query}}


def canary(name: str) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "10s", "threshold": 2, "metrics": [
                     {"name": "m", "templateRef": {"name": name},
                      "thresholdRange": {"max": 5}}]}},
    })


@pytest.mark.parametrize(("name", "cause"), [
    ("up", TemplateCause.ANSWERED),
    ("bad-query", TemplateCause.QUERY_FAILED),
    ("render", TemplateCause.RENDER_FAILED),
    ("vm", TemplateCause.NOT_INSTALLED),
    ("no-secret", TemplateCause.SECRET_NOT_FOUND),
    ("bad-secret", TemplateCause.SECRET_INVALID),
    ("missing", TemplateCause.TEMPLATE_NOT_FOUND),
])
async def test_a_ticks_result_names_the_template_and_the_cause(
        world: tuple[MetricsAnalyzer, Objects, Objects], prometheus: str, name: str,
        cause: TemplateCause) -> None:
    analyzer, templates, secrets = world
    templates.put(template("up", prometheus))
    templates.put(template("bad-query", prometheus, query="bad{"))
    templates.put(template("render", prometheus, query="{{ nope"))
    templates.put(template("vm", prometheus, type_="victoriametrics"))
    templates.put(template("no-secret", prometheus, secret="gone"))
    templates.put(template("bad-secret", prometheus, secret="garbled"))
    secrets.put({"metadata": {"name": "garbled"}, "data": {"token": "***not base64***"}})
    outcome = await analyzer.run(canary(name))
    [result] = outcome.results
    assert (result.name, result.template, result.cause) == ("m", ObjectKey(NS, name), cause)
    assert result.passed is (cause is TemplateCause.ANSWERED)


async def test_an_availability_check_names_the_template_that_does_not_answer(
        world: tuple[MetricsAnalyzer, Objects, Objects], prometheus: str) -> None:
    analyzer, templates, secrets = world
    templates.put(template("offline", f"http://127.0.0.1:{free_port()}"))
    templates.put(template("token", prometheus, secret="token"))
    secrets.put({"metadata": {"name": "token"},
                 "data": {"token": base64.b64encode(b"t").decode()}})
    [problem] = await analyzer.provider_problems(canary("offline"))
    assert (problem.template, problem.cause) == (ObjectKey(NS, "offline"),
                                                 TemplateCause.OFFLINE)
    assert await analyzer.provider_problems(canary("token")) == []
