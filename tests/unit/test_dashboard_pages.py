"""The dashboard's pages (the controller's and ``kubectl flaggerpy dashboard``'s), rendered from
real-shaped objects."""

from __future__ import annotations

import re

from flaggerpy.dashboard import pages
from tests.unit.test_kubectl_view import EVENTS, canary, event


def cells(html: str, table: str) -> list[list[str]]:
    """The text of each row of the table with that id (tags stripped, whitespace collapsed)."""
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr\b.*?</tr>", body, re.S)
    return [[" ".join(re.sub(r"<[^>]+>", " ", cell).split())
             for cell in re.findall(r"<t[dh]\b.*?</t[dh]>", row, re.S)] for row in rows]


def test_index_lists_every_canary_with_phase_and_weight() -> None:
    other = canary("backend", phase="Succeeded", canaryWeight=0, failedChecks=0)
    html = pages.render_index([canary(), other], namespace="test", banner="on https://k8s")

    assert "<h1>Canaries in test</h1>" in html
    assert cells(html, "canaries") == [
        ["Namespace", "Name", "Status", "Weight", "Failed checks", "Step", "Steering",
         "Last transition"],
        ["test", "backend", "Succeeded", "0%", "0", "-", "-", "2026-12-06T10:03:00Z"],
        ["test", "podinfo", "Progressing", "30%", "1", "step 3/5", "-", "2026-12-06T10:03:00Z"],
    ]
    assert '<a href="/canaries/test/podinfo">podinfo</a>' in html
    assert '<span style="width: 30%">' in html
    assert 'data-refresh="5"' in html  # the page's script reloads it every 5 s


def test_canary_page_shows_the_runs_checks_and_timeline_in_order() -> None:
    html = pages.render_canary(canary(), EVENTS, refresh=0)

    assert 'data-refresh="0"' in html
    summary = cells(html, "summary")
    assert ["Weight", "canary 30% / primary 70%"] in summary
    assert ["Run started", "2026-12-06T10:00:00Z"] in summary
    checks = cells(html, "checks")
    assert checks[3] == ["2026-12-06T10:02:00Z", "request-success-rate", "87.25", "&gt;= 99",
                         "Fail", "fail", "request-success-rate 87.25 &lt; 99"]
    assert len(checks) == 5  # the header and this run's four checks
    assert [row[3] for row in cells(html, "timeline")[1:]] == [
        "New revision detected! Scaling up podinfo.test",
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary weight 10",
        "Halt podinfo.test advancement success rate 87.25% &lt; 99%",
    ]


def test_text_from_the_cluster_is_escaped() -> None:
    hostile = event("podinfo.18a0000000000009", "2026-12-06T10:05:00Z",
                    "<script>alert(1)</script>", type_="Warning")
    html = pages.render_canary(canary(), [*EVENTS, hostile])

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
