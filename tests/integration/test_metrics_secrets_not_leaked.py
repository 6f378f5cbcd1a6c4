"""The Secrets of metrics providers never leave the controller (design rule 6).

``flaggerpy controller`` runs as a process on the local control plane, at debug level, with two
canaries whose MetricTemplates (``type: prometheus``) take their credentials from Secrets that
hold distinctive values: a bearer ``token``, and a ``username``/``password`` pair. The server
behind both is a Prometheus stand-in that checks the credentials and refuses the queries:

- the token is accepted for ``vector(1)`` (so the run starts and moves on to its metric
  checks), then its first query gets a 503 (retried) and every later one a 401;
- the username/password pair is refused (401) for everything, at initialisation and at the
  start of the run.

Both canaries fail, and every place the controller reports to is then searched for the
credentials, raw and base64-encoded (as the Secret's ``data`` and a Basic header carry them):
the controller's whole log, the namespace's Events, the Canary and MetricTemplate objects
with their status, and the ``/metrics`` page. The stand-in's record shows the credentials did
reach the server, so their absence elsewhere is not an accident of a run that never used them.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from e2e.scenario import Scenario, canary, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

TOKEN = "tok-" + secrets.token_hex(12)
USERNAME = "flagger-" + secrets.token_hex(4)
PASSWORD = "pw-" + secrets.token_hex(12)
BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

FORBIDDEN = {
    "token": TOKEN,
    "token, base64": base64.b64encode(TOKEN.encode()).decode(),
    "password": PASSWORD,
    "password, base64": base64.b64encode(PASSWORD.encode()).decode(),
    "basic credentials, base64": BASIC.removeprefix("Basic "),
}

UNAUTHORIZED = {"status": "error", "errorType": "unauthorized", "error": "authentication failed"}


@dataclass
class GuardedPrometheus:
    """``/api/v1/query`` behind credentials; records (Authorization, query) of each request."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        query = request.query.get("query", "")
        self.seen.append((authorization, query))
        if authorization == f"Bearer {TOKEN}" and query == "vector(1)":
            return web.json_response({"status": "success", "data": {
                "resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})
        if authorization == f"Bearer {TOKEN}" and self._first_query():
            return web.json_response({"status": "error", "errorType": "unavailable",
                                      "error": "storage unavailable"}, status=503)
        return web.json_response(UNAUTHORIZED, status=401)

    def _first_query(self) -> bool:
        queries = [q for a, q in self.seen if a == f"Bearer {TOKEN}" and q != "vector(1)"]
        return len(queries) == 1

    async def start(self) -> GuardedPrometheus:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()




@pytest.fixture
async def guarded() -> AsyncIterator[GuardedPrometheus]:
    server = await GuardedPrometheus().start()
    try:
        yield server
    finally:
        await server.aclose()


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def template(name: str, *, address: str, secret_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": name},
        "spec": {"provider": {"type": "prometheus", "address": address,
                              "secretRef": {"name": secret_name}},
                 "query": 'errors{namespace="{{ namespace }}",target="{{ target }}"}'},
    }


def guarded_canary(name: str, template_name: str) -> dict[str, Any]:
    return canary(name, analysis={
        "interval": "1s", "threshold": 2, "iterations": 2,
        "metrics": [{"name": "errors", "templateRef": {"name": template_name},
                     "thresholdRange": {"max": 1}, "interval": "30s"}],
    })


async def test_provider_secrets_never_reach_logs_events_status_or_errors(
    scenario: Scenario, guarded: GuardedPrometheus,
) -> None:
    controller = await scenario.start_controller()
    await scenario.apply(
        secret("prom-token", token=TOKEN),
        secret("prom-basic", username=USERNAME, password=PASSWORD),
        template("token-errors", address=guarded.url, secret_name="prom-token"),
        template("basic-errors", address=guarded.url, secret_name="prom-basic"),
        deployment("tokened", image="podinfo:6.0.0"),
        deployment("basic", image="podinfo:6.0.0"),
        guarded_canary("tokened", "token-errors"),
        guarded_canary("basic", "basic-errors"),
    )
    for name in ("tokened", "basic"):
        await scenario.wait_phase(name, "Initialized", within=60)
    for name in ("tokened", "basic"):
        await scenario.kubectl("set", "image", f"deployment/{name}", f"{name}=podinfo:6.0.1")
    statuses = {name: await scenario.wait_phase(name, ("Failed", "Succeeded"), within=90)
                for name in ("tokened", "basic")}

    # The run used the credentials, and failed for the server's answers.
    authorizations = {authorization for authorization, _ in guarded.seen}
    assert authorizations == {f"Bearer {TOKEN}", BASIC}, authorizations
    assert any(q.startswith("errors{") for a, q in guarded.seen if a == f"Bearer {TOKEN}")
    assert {name: s["phase"] for name, s in statuses.items()} == {
        "tokened": "Failed", "basic": "Failed"}
    events = json.loads(await scenario.kubectl("get", "events", "-o", "json"))["items"]
    messages = [e["message"] for e in events]
    assert any("error response: " in m and "authentication failed" in m for m in messages), \
        messages
    assert any(m.startswith("Error checking metric providers: prometheus in metric template "
                            "basic-errors.") for m in messages), messages
    log = controller.output()
    assert "metrics_request_retrying" in log  # the 503 was retried, at debug level

    reported = {
        "controller log": log,
        "Events": json.dumps(events),
        "Canaries": await scenario.kubectl("get", "canaries", "-o", "json"),
        "MetricTemplates": await scenario.kubectl("get", "metrictemplates", "-o", "json"),
        "/metrics": controller.get("/metrics")[1],
    }
    leaks = [f"{what} in {where}" for where, text in reported.items()
             for what, value in FORBIDDEN.items() if value in text]
    assert leaks == []
    # The search finds them where they are: in the Secrets themselves.
    stored = await scenario.kubectl("get", "secrets", "prom-token", "prom-basic", "-o", "json")
    assert FORBIDDEN["token, base64"] in stored
    assert FORBIDDEN["password, base64"] in stored
