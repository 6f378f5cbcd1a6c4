"""``kubectl flaggerpy dashboard``: the canaries as a web page, served on localhost.

The page is read-only and is served by the user's own process through the user's kubeconfig,
so it shows exactly what the user may read and nothing more: there is no second identity to
authenticate and nothing to authorise beyond what the API server already does for each read.
It listens on loopback only (the page acts with the user's credentials), and answers only
requests addressed to a loopback name (a page elsewhere cannot reach it through DNS
rebinding). Each request reads the API server afresh (a list of canaries, or one canary and
its Events): one person's dashboard costs a few reads every refresh, and needs no cache to go
stale.

Pages are rendered with Jinja2 (autoescaped: Event messages and condition texts come from
whoever can write them) from the same summaries ``kubectl flaggerpy status`` prints
(:mod:`flaggerpy.kubectl.view`), so the two never disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2
from aiohttp import web

from flaggerpy import kube
from flaggerpy.kubectl import view

__all__ = [
    "TEMPLATES",
    "CanaryRow",
    "build_app",
    "register",
    "render_canary",
    "render_index",
    "serve",
]

DEFAULT_PORT: Final = 8421
DEFAULT_REFRESH: Final = 5
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})

TEMPLATES: Final[Mapping[str, str]] = {
    "base.html": """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<title>{% block title %}flaggerpy{% endblock %}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { text-align: left; padding: .25rem .75rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
.bar { display: inline-block; width: 12rem; height: .8rem; background: #cfe3ff;
       vertical-align: middle; }
.bar span { display: block; height: 100%; background: #f0a030; }
.Succeeded { color: #167a2c; } .Failed, .Warning, .Fail, .Error { color: #b3261e; }
.muted { color: #777; }
</style>
</head>
<body>
<p class="muted"><a href="/">canaries</a> &middot; read-only, as {{ server }}</p>
{% block body %}{% endblock %}
</body>
</html>
""",
    "index.html": """{% extends "base.html" %}
{% block title %}Canaries{% endblock %}
{% block body %}
<h1>Canaries {% if namespace %}in {{ namespace }}{% else %}in every namespace{% endif %}</h1>
{% if rows %}
<table id="canaries">
<tr><th>Namespace</th><th>Name</th><th>Status</th><th>Weight</th><th>Failed checks</th>
<th>Step</th><th>Steering</th><th>Last transition</th></tr>
{% for row in rows %}
<tr data-canary="{{ row.namespace }}/{{ row.name }}">
<td>{{ row.namespace }}</td>
<td><a href="/canaries/{{ row.namespace | urlencode }}/{{ row.name | urlencode }}">
{{- row.name }}</a></td>
<td class="{{ row.phase }}">{{ row.phase }}</td>
<td><span class="bar" title="canary {{ row.weight }}%">
<span style="width: {{ row.weight }}%"></span></span> {{ row.weight }}%</td>
<td>{{ row.failed_checks }}</td><td>{{ row.step }}</td><td>{{ row.steering }}</td>
<td>{{ row.last_transition }}</td>
</tr>
{% endfor %}
</table>
{% else %}
<p>No canaries.</p>
{% endif %}
{% endblock %}
""",
    "canary.html": """{% extends "base.html" %}
{% block title %}{{ row.name }}.{{ row.namespace }}{% endblock %}
{% block body %}
<h1>{{ row.name }} <span class="muted">in {{ row.namespace }}</span></h1>
<table id="summary">
<tr><th>Phase</th><td class="{{ row.phase }}">{{ row.phase or "(not yet reconciled)" }}</td></tr>
<tr><th>Step</th><td>{{ row.step }}</td></tr>
<tr><th>Weight</th><td><span class="bar"><span style="width: {{ row.weight }}%"></span></span>
 canary {{ row.weight }}% / primary {{ 100 - row.weight }}%</td></tr>
<tr><th>Failed checks</th><td>{{ row.failed_checks or 0 }}</td></tr>
<tr><th>Steering</th><td>{{ row.steering }}</td></tr>
{% if started %}<tr><th>Run started</th><td>{{ started }}</td></tr>{% endif %}
</table>
<h2>Checks</h2>
{% if checks %}
<table id="checks">
<tr><th>Time</th><th>Metric</th><th>Value</th><th>Threshold</th><th>Verdict</th><th>Action</th>
<th>Message</th></tr>
{% for check in checks %}
<tr><td>{{ check.time }}</td><td>{{ check.metric }}</td><td>{{ check.value }}</td>
<td>{{ check.threshold }}</td><td class="{{ check.verdict }}">{{ check.verdict }}</td>
<td>{{ check.action }}</td><td>{{ check.message }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="muted">None in this run.</p>{% endif %}
<h2>Conditions</h2>
<table id="conditions">
<tr><th>Type</th><th>Status</th><th>Reason</th><th>Last transition</th><th>Message</th></tr>
{% for c in conditions %}
<tr><td>{{ c.type }}</td><td>{{ c.status }}</td><td>{{ c.reason }}</td>
<td>{{ c.lastTransitionTime }}</td><td>{{ c.message }}</td></tr>
{% endfor %}
</table>
<h2>Timeline</h2>
{% if timeline %}
<table id="timeline">
<tr><th>Time</th><th>Type</th><th>Reason</th><th>Message</th></tr>
{% for e in timeline %}
<tr><td>{{ e.time }}</td><td class="{{ e.type }}">{{ e.type }}</td><td>{{ e.reason }}</td>
<td>{{ e.message }}{% if e.count > 1 %} (x{{ e.count }}){% endif %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="muted">No events.</p>{% endif %}
{% endblock %}
""",
    "error.html": """{% extends "base.html" %}
{% block title %}{{ title }}{% endblock %}
{% block body %}<h1>{{ title }}</h1><p>{{ message }}</p>{% endblock %}
""",
}
"""The pages, kept beside the code that fills them (one module, nothing to package apart)."""

_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.DictLoader(dict(TEMPLATES)), autoescape=True,
    undefined=jinja2.StrictUndefined)


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """One canary as the pages show it; the same values ``kubectl flaggerpy list`` prints."""

    namespace: str
    name: str
    phase: str
    weight: int
    failed_checks: str
    step: str
    steering: str
    last_transition: str

    @classmethod
    def of(cls, canary: Mapping[str, Any]) -> CanaryRow:
        meta = canary.get("metadata") or {}
        status = canary.get("status") or {}
        weight = status.get("canaryWeight")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            phase=str(status.get("phase") or ""),
            weight=max(0, min(100, round(weight))) if isinstance(weight, int | float) else 0,
            failed_checks=str(status.get("failedChecks") if "failedChecks" in status else ""),
            step=view.step(canary),
            steering=view.steering_state(canary),
            last_transition=str(status.get("lastTransitionTime") or ""),
        )


def _render(template: str, **context: Any) -> str:
    return _ENVIRONMENT.get_template(template).render(**context)


def render_index(
        canaries: Sequence[Mapping[str, Any]],
        *,
        namespace: str | None,
        server: str = "",
        refresh: int = DEFAULT_REFRESH,
) -> str:
    """The list page: every canary (sorted by namespace, then name) with phase and weight."""
    rows = sorted((CanaryRow.of(c) for c in canaries), key=lambda r: (r.namespace, r.name))
    return _render("index.html", rows=rows, namespace=namespace, server=server, refresh=refresh)


def _check_row(entry: Mapping[str, Any]) -> dict[str, str]:
    value = entry.get("value")
    return {
        "time": str(entry.get("time") or ""),
        "metric": str(entry.get("metric") or ""),
        "value": f"{value:g}" if isinstance(value, int | float) else "-",
        "threshold": view.threshold_text(entry),
        "verdict": str(entry.get("verdict") or ""),
        "action": str(entry.get("action") or ""),
        "message": str(entry.get("message") or ""),
    }


def render_canary(
        canary: Mapping[str, Any],
        events: Iterable[Mapping[str, Any]],
        *,
        server: str = "",
        refresh: int = DEFAULT_REFRESH,
) -> str:
    """One canary's page: summary, the run's checks, the conditions and the run's timeline."""
    timeline, started = view.current_run(events)
    conditions = [c for c in (canary.get("status") or {}).get("conditions") or ()
                  if isinstance(c, Mapping)]
    return _render(
        "canary.html", row=CanaryRow.of(canary), started=started,
        checks=[_check_row(c) for c in view.checks(canary, since=started)],
        conditions=[{key: c.get(key, "") for key in
                     ("type", "status", "reason", "lastTransitionTime", "message")}
                    for c in conditions],
        timeline=timeline, server=server, refresh=refresh)


def _html(text: str, *, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def build_app(
        client: kube.KubeClient,
        *,
        namespace: str | None,
        refresh: int = DEFAULT_REFRESH,
) -> web.Application:
    """The dashboard: ``/`` lists canaries (of ``namespace``, or all when None),
    ``/canaries/{namespace}/{name}`` shows one. Only GET, only to a loopback host name."""
    @web.middleware
    async def loopback_only(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.url.host not in LOOPBACK_NAMES:
            return web.Response(status=421, text="this dashboard answers on localhost only\n")
        response: web.StreamResponse = await handler(request)
        return response

    async def error_page(title: str, message: str, status: int) -> web.Response:
        return _html(_render("error.html", title=title, message=message, server=client.server,
                             refresh=0), status=status)

    async def index(request: web.Request) -> web.Response:
        try:
            canaries = await client.list(kube.CANARIES, namespace=namespace)
        except kube.KubeError as exc:
            return await error_page("Cannot list canaries", str(exc), 502)
        return _html(render_index(canaries.items, namespace=namespace, server=client.server,
                                  refresh=refresh))

    async def one(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        if namespace is not None and ns != namespace:
            return await error_page("Not served", f"this dashboard serves {namespace} only", 404)
        try:
            canary = await client.get(kube.CANARIES, name, namespace=ns)
            events = await client.list(
                kube.EVENTS, namespace=ns, field_selector=view.events_selector(name))
        except kube.NotFoundError:
            return await error_page("Not found", f"Canary {name} not found in {ns}", 404)
        except kube.KubeError as exc:
            return await error_page("Cannot read the canary", str(exc), 502)
        return _html(render_canary(canary, events.items, server=client.server, refresh=refresh))

    app = web.Application(middlewares=[loopback_only])
    app.router.add_get("/", index)
    app.router.add_get("/canaries/{namespace}/{name}", one)
    return app


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dashboard`` to the ``kubectl flaggerpy`` parser."""
    parser = commands.add_parser(
        "dashboard", help="serve a read-only web page of the canaries on localhost")
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="show canaries of every namespace")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--refresh", type=int, default=DEFAULT_REFRESH,
                        help="seconds between page reloads (0: never)")
    parser.set_defaults(handler=serve)


async def serve(args: argparse.Namespace, client: kube.KubeClient) -> int:
    """Serves the dashboard until Ctrl-C."""
    namespace = None if args.all_namespaces else args.namespace
    app = build_app(client, namespace=namespace, refresh=args.refresh)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(f"Serving the canaries of {namespace or 'every namespace'} on "
              f"http://localhost:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0
