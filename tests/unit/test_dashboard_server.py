"""The dashboard's HTTP answers: who gets in, what they may see and steer, forged forms refused.

The API server's TokenReview and SubjectAccessReview answers are stood in for by a table here
(tests/integration/test_dashboard_browser.py asks the real API server); what is tested is what
the dashboard does with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from flaggerpy import kube
from flaggerpy.dashboard import auth, commands, controller, history, server
from flaggerpy.models.canary_command import Action
from tests.unit.test_kubectl_view import EVENTS, canary

BOT = auth.User(name="system:serviceaccount:test:bot", groups=("system:serviceaccounts",))
VIEWER = auth.User(name="viewer")
NOBODY = auth.User(name="nobody")
TOKENS = {"bot-token": BOT, "viewer-token": VIEWER, "nobody-token": NOBODY}
RIGHTS = {
    BOT: {("list", "canaries", "test"), ("get", "canaries", "test"),
          ("create", "canarycommands", "test")},
    VIEWER: {("list", "canaries", "test"), ("get", "canaries", "test")},
    NOBODY: set(),
}


class TableReviewer(auth.Reviewer):
    """The API server's answers, from the tables above; counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def authenticate(self, token: str) -> auth.User | None:
        self.asked.append(token)
        return TOKENS.get(token)

    async def allowed(self, user: auth.User, access: auth.Access) -> bool:
        self.asked.append(access)
        return (access.verb, access.resource, access.namespace) in RIGHTS[user]


class Canaries:
    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects = list(objects)

    async def canaries(self, namespace: str | None) -> Sequence[Mapping[str, Any]]:
        return [c for c in self.objects
                if namespace is None or c["metadata"]["namespace"] == namespace]

    async def canary(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return next((c for c in self.objects if c["metadata"]["name"] == name
                     and c["metadata"]["namespace"] == namespace), None)

    async def events(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        return EVENTS


@pytest.fixture
async def dashboard() -> Any:
    steered: list[tuple[str, Action, str | None]] = []

    async def steer(obj: Mapping[str, Any], action: Action, user: auth.User | None) -> str:
        steered.append((obj["metadata"]["name"], action, user.name if user else None))
        return "podinfo-promote-x1"

    other = canary("elsewhere")
    other["metadata"]["namespace"] = "secret-team"
    app = server.build_app(Canaries(canary(), other), steer=steer, reviewer=TableReviewer())
    client = TestClient(TestServer(app))
    await client.start_server()
    client.steered = steered  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_without_a_token_every_page_is_the_login_page_with_401(dashboard: TestClient) -> None:
    for path in ("/", "/canaries/test/podinfo", "/api/canaries/test/podinfo/timeline"):
        response = await dashboard.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    page = await (await dashboard.get("/canaries/test/podinfo")).text()
    assert '<form id="login"' in page
    assert 'value="/canaries/test/podinfo"' in page
    refused = await dashboard.get("/", headers=bearer("stolen"))
    assert refused.status == 401
    assert (await dashboard.get("/static/uPlot.iife.min.js")).status == 200  # no secrets there


async def test_rights_decide_what_is_listed_shown_and_steered(dashboard: TestClient) -> None:
    listed = await (await dashboard.get("/", headers=bearer("viewer-token"))).text()
    assert 'data-canary="test/podinfo"' in listed
    assert "secret-team" not in listed  # no list right there: filtered out, not shown
    assert (await dashboard.get("/", headers=bearer("nobody-token"))).status == 403
    assert (await dashboard.get("/canaries/secret-team/elsewhere",
                                headers=bearer("viewer-token"))).status == 403

    viewer_page = await (await dashboard.get("/canaries/test/podinfo",
                                             headers=bearer("viewer-token"))).text()
    assert 'id="action-promote"' not in viewer_page  # may look, not steer
    refused = await dashboard.post("/canaries/test/podinfo/promote",
                                   headers=bearer("viewer-token"))
    assert refused.status == 403
    bot_page = await (await dashboard.get("/canaries/test/podinfo",
                                          headers=bearer("bot-token"))).text()
    assert all(f'id="action-{a.value}"' in bot_page for a in Action)

    done = await dashboard.post("/canaries/test/podinfo/promote", headers=bearer("bot-token"),
                                allow_redirects=False)
    assert done.status == 303
    after = done.headers["Location"]
    assert after == "/canaries/test/podinfo?command=podinfo-promote-x1&action=promote"
    shown = await (await dashboard.get(after, headers=bearer("bot-token"))).text()
    assert "canarycommand podinfo-promote-x1 created (promote podinfo)" in shown
    crafted = await (await dashboard.get(
        "/canaries/test/podinfo?command=Send+your+token+to+evil.example&action=promote",
        headers=bearer("bot-token"))).text()
    assert 'id="notice"' not in crafted  # a link cannot make the page say anything
    assert dashboard.steered == [("podinfo", Action.PROMOTE, BOT.name)]  # type: ignore[attr-defined]


async def test_login_keeps_the_token_in_a_strict_http_only_cookie(dashboard: TestClient) -> None:
    bad = await dashboard.post("/login", data={"token": "stolen", "next": "/"})
    assert bad.status == 401
    response = await dashboard.post("/login", data={"token": "bot-token",
                                                    "next": "//evil.example/"},
                                    allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"  # never off-site
    cookie = response.cookies[server.COOKIE]
    assert cookie.value == "bot-token"
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"

    page = await (await dashboard.get("/canaries/test/podinfo")).text()  # the cookie signs in
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert csrf == auth.csrf_token(dashboard.app[server.KEY], auth.session_of("bot-token"))
    forged = await dashboard.post("/canaries/test/podinfo/abort", data={"csrf": "guess"})
    assert forged.status == 403
    elsewhere = await dashboard.post("/canaries/test/podinfo/abort", data={"csrf": csrf},
                                     headers={"Origin": "http://evil.example"})
    assert elsewhere.status == 403
    assert dashboard.steered == []  # type: ignore[attr-defined]
    ok = await dashboard.post("/canaries/test/podinfo/abort", data={"csrf": csrf},
                              allow_redirects=False)
    assert ok.status == 303
    assert dashboard.steered == [("podinfo", Action.ABORT, BOT.name)]  # type: ignore[attr-defined]


async def test_the_timeline_has_the_checks_and_the_observed_weights(
        dashboard: TestClient) -> None:
    response = await dashboard.get("/api/canaries/test/podinfo/timeline",
                                   headers=bearer("viewer-token"))
    assert response.status == 200
    body = await response.json()
    assert body["phase"] == "Progressing"
    assert body["weight"] == 30
    assert body["weights"][-1][1] == 30  # seen on this read
    assert set(body["metrics"]) == {"request-success-rate", "request-duration"}
    assert "<td>step 3/5</td>" in body["summary"]  # the page's parts, as the page renders them
    since_start = await (await dashboard.get(
        "/api/canaries/test/podinfo/timeline?since=2026-12-06T10:00:00Z",
        headers=bearer("viewer-token"))).json()
    assert check_rows(since_start["details"]) == 4  # the run's checks, as the page shows them
    assert check_rows(body["details"]) > 4  # without the run's start: every check kept


def check_rows(html: str) -> int:
    return html.split('<table id="checks">', 1)[1].split("</table>", 1)[0].count("<tr>") - 1


class RecordingClient:
    """Answers reviews as an API server would, and counts them."""

    def __init__(self) -> None:
        self.created: list[tuple[kube.Resource, dict[str, Any]]] = []

    async def create(self, resource: kube.Resource, body: dict[str, Any], **_: Any
                     ) -> dict[str, Any]:
        self.created.append((resource, body))
        if resource == auth.TOKEN_REVIEWS:
            ok = body["spec"]["token"] == "good"
            return {"status": {"authenticated": ok, "user": {"username": "alice",
                                                             "groups": ["dev"]}}}
        return {"status": {"allowed": body["spec"]["user"] == "alice"}}


async def test_review_answers_are_reused_for_a_few_seconds() -> None:
    now = [0.0]
    client = RecordingClient()
    reviewer = auth.Reviewer(client, ttl=10, clock=lambda: now[0])  # type: ignore[arg-type]
    access = auth.Access(verb="get", resource="canaries", group="flagger.app", namespace="test")

    user = await reviewer.authenticate("good")
    assert user == auth.User(name="alice", groups=("dev",))
    assert await reviewer.authenticate("bad") is None
    assert await reviewer.allowed(user, access)
    for _ in range(5):
        await reviewer.authenticate("good")
        await reviewer.allowed(user, access)
    assert len(client.created) == 3
    review = client.created[2][1]["spec"]
    assert review["resourceAttributes"] == {"verb": "get", "resource": "canaries",
                                            "group": "flagger.app", "namespace": "test"}
    assert "good" not in repr(reviewer.__dict__)  # cached under its hash only
    now[0] = 10.5
    await reviewer.authenticate("good")
    assert len(client.created) == 4


def test_weights_are_recorded_when_they_change() -> None:
    now = [100.0]
    weights = history.WeightHistory(clock=lambda: now[0])
    for weight in (0, 10, 10, 20):
        now[0] += 2
        weights.observe(canary(canaryWeight=weight))
    assert weights.points("test", "podinfo") == [(102.0, 0.0), (104.0, 10.0), (108.0, 20.0)]
    assert history.weights_from_events(EVENTS) == [(1796551260.0, 10.0)]


def test_the_command_names_who_asked() -> None:
    body = commands.command_body(canary="podinfo", action=Action.PROMOTE, revision="r1",
                                 reason="by alice from the dashboard", requested_by="alice")
    assert body["metadata"]["annotations"] == {commands.REQUESTED_BY: "alice"}
    assert body["spec"] == {"canary": "podinfo", "action": "promote", "revision": "r1",
                            "reason": "by alice from the dashboard"}


@pytest.mark.parametrize(("address", "expected"), [
    (":8421", ("0.0.0.0", 8421)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_listen_addresses_are_gos(address: str, expected: tuple[str, int]) -> None:
    assert controller.parse_address(address) == expected


@pytest.mark.parametrize("address", ["8421", "localhost", "host:port"])
def test_a_listen_address_without_a_port_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        controller.parse_address(address)


class ListCache:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = objects

    def get(self, key: Any) -> dict[str, Any] | None:
        wanted = (key.namespace, key.name)
        return next((o for o in self.objects
                     if (o["metadata"]["namespace"], o["metadata"]["name"]) == wanted), None)

    def list(self, *, namespace: str | None = None) -> list[Any]:
        return [o for o in self.objects
                if namespace is None or o["metadata"]["namespace"] == namespace]


async def test_with_several_namespaces_only_theirs_are_shown() -> None:
    """-namespace=a,b caches every namespace; the dashboard shows the served ones only."""
    other = canary("elsewhere")
    other["metadata"]["namespace"] = "not-served"
    cache = ListCache(canary(), other)
    source = controller.CacheSource(cache, client=None,  # type: ignore[arg-type]
                                    namespaces=frozenset({"test", "team-b"}))
    assert [c["metadata"]["name"] for c in await source.canaries(None)] == ["podinfo"]
    assert await source.canary("not-served", "elsewhere") is None
    assert await source.canary("test", "podinfo") is not None
    everything = controller.CacheSource(cache, client=None)  # type: ignore[arg-type]
    assert len(await everything.canaries(None)) == 2
