"""The controller's dashboard (``-dashboard-listen-address``) in a real headless browser.

A live ``flaggerpy controller`` on the local control plane serves it, as the chart's
ServiceAccount with the chart's RBAC (``webDashboard.enabled``): its TokenReviews,
SubjectAccessReviews, Event lists and CanaryCommands are what the chart grants. Debian's
Chromium, driven by Selenium through ChromeDriver, signs in with a ServiceAccount token
(``kubectl create token``) bound only to the chart's steering ClusterRole, sees the canary
listed, watches the weight chart gain points while the canary progresses, and clicks promote.
The API server decides every answer: a request without a token gets 401 (and the login page),
a token whose ServiceAccount has no rights gets 403 for the list, the canary, its timeline and
a promote.

Chromium runs with a fresh profile and without any background networking: this machine has no
outside network, and lookups would stall it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from e2e.cluster.localcluster import LocalCluster
from e2e.scenario import Scenario, canary, deployment
from flaggerpy.dashboard import commands
from flaggerpy.testing import free_port
from tests.integration import test_chart
from tests.integration.test_chart import Release

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds"),
              pytest.mark.timeout(300)]

CHART = Path(__file__).resolve().parents[2] / "charts" / "flaggerpy"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1400")
SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "dashboard.png"
"""Where each run leaves its screenshot (docs/dashboard.png is one of them, kept)."""
release = test_chart.release
"""The chart installed in the test's namespace (and uninstalled after)."""
SLOW_RUN = {"interval": "2s", "threshold": 2, "stepWeight": 2, "maxWeight": 60,
            "metrics": [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                         "thresholdRange": {"min": 90}, "interval": "30s"}]}
"""Thirty weight steps of 2 s: the chart moves for a minute unless a promote ends it."""




@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


async def service_account(scenario: Scenario, name: str, cluster_role: str | None) -> str:
    """A ServiceAccount of the test's namespace, bound to ``cluster_role`` there; its token."""
    await scenario.kubectl("create", "serviceaccount", name)
    if cluster_role:
        await scenario.kubectl("create", "rolebinding", name, f"--clusterrole={cluster_role}",
                               f"--serviceaccount={scenario.namespace}:{name}")
    return (await scenario.kubectl("create", "token", name)).strip()


async def steering_role(cluster: LocalCluster) -> str:
    """The chart's steering ClusterRole under a name of this test's own, without the edit
    aggregation (the other tests' users must not gain it)."""
    release = f"dash-{secrets.token_hex(3)}"
    rendered = await asyncio.to_thread(subprocess.run, [
        str(cluster.bin_dir / "helm"), "template", release, str(CHART),
        "-s", "templates/steering-rbac.yaml"], capture_output=True, text=True, check=True)
    [role] = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    del role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"]
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(role))
    return str(role["metadata"]["name"])


async def status_of(http: aiohttp.ClientSession, url: str, token: str | None = None,
                    *, method: str = "GET", data: dict[str, str] | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, headers=headers, data=data,
                            allow_redirects=False) as response:
        await response.read()
        return response.status


def wait(driver: WebDriver, condition: Any, *, seconds: float = 60) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(condition)


def chart_points(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "charts").get_attribute("data-points") or 0)


async def test_the_dashboard_lists_charts_refuses_and_promotes(
        scenario: Scenario, release: Release, browser: WebDriver, tmp_path: Path) -> None:
    cluster, ns = scenario.cluster, scenario.namespace
    role = await steering_role(cluster)
    try:
        bot = await service_account(scenario, "release-bot", role)
        nobody = await service_account(scenario, "nobody", None)
        await release.install("meshProvider=istio", "webDashboard.enabled=true")
        args = await release.controller_args()
        assert "-dashboard-listen-address=:8421" in args
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        controller = await scenario.start_controller(
            *(a for a in args if not a.startswith(
                ("-metrics-server=", "-log-level=", "-dashboard-listen-address="))),
            f"-dashboard-listen-address=127.0.0.1:{port}",
            kubeconfig=await release.token_kubeconfig(tmp_path / "chart.kubeconfig"))
        await scenario.set_success_rate("podinfo", 99)
        await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                             canary("podinfo", provider="istio", analysis=SLOW_RUN))
        await scenario.wait_phase("podinfo", "Initialized", within=90)

        # Refused by the API server's answers: no token, a token it does not know, a
        # ServiceAccount without rights. Allowed: the steering role's ServiceAccount.
        page = f"{base}/canaries/{ns}/podinfo"
        async with aiohttp.ClientSession() as http:
            assert await status_of(http, f"{base}/") == 401
            assert await status_of(http, page) == 401
            assert await status_of(http, f"{base}/", "not-a-token") == 401
            for url in (f"{base}/", page, f"{base}/api/canaries/{ns}/podinfo/timeline"):
                assert await status_of(http, url, nobody) == 403, url
            assert await status_of(http, f"{page}/promote", nobody, method="POST") == 403
            assert await status_of(http, f"{base}/", bot) == 200
            # A form posted from another site is refused, whoever's cookie it rides on.
            async with http.post(f"{page}/promote", headers={
                    "Cookie": f"flaggerpy_token={bot}", "Origin": "http://evil.example"},
                    allow_redirects=False) as response:
                assert response.status == 403
            async with http.post(f"{page}/promote", headers={
                    "Cookie": f"flaggerpy_token={bot}"}, data={"csrf": "forged"},
                    allow_redirects=False) as response:
                assert response.status == 403

        # The browser: the login form, then the list.
        def sign_in() -> str:
            browser.get(f"{base}/")
            browser.find_element(By.ID, "token").send_keys(bot)
            browser.find_element(By.ID, "sign-in").click()
            wait(browser, lambda d: d.find_elements(By.ID, "canaries"))
            return browser.find_element(By.ID, "canaries").text

        listed = await asyncio.to_thread(sign_in)
        assert "podinfo" in listed
        assert ns in listed
        cookie = await asyncio.to_thread(browser.get_cookie, "flaggerpy_token")
        assert cookie is not None
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"

        # A new revision: the weight climbs, and the chart gains points while it does.
        await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
        await scenario.wait_phase("podinfo", "Progressing", within=60)

        def open_canary() -> int:
            browser.find_element(By.LINK_TEXT, "podinfo").click()
            wait(browser, lambda d: chart_points(d) > 0)
            return chart_points(browser)

        first = await asyncio.to_thread(open_canary)
        grown = await asyncio.to_thread(wait, browser, lambda d: chart_points(d) > first + 3)
        assert grown
        # The checks of the run fill in as they happen, without reloading the page.
        await asyncio.to_thread(wait, browser, lambda d: d.find_elements(By.ID, "checks"))
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await asyncio.to_thread(
            browser.execute_script, "document.getElementById('actions').scrollIntoView();"
            "window.scrollTo(0, 0);")
        await asyncio.to_thread(browser.save_screenshot, str(SCREENSHOT))
        assert (await scenario.status("podinfo"))["phase"] == "Progressing"

        def promote() -> str:
            browser.find_element(By.ID, "action-promote").click()
            wait(browser, lambda d: d.find_elements(By.ID, "notice"))
            return browser.find_element(By.ID, "notice").text

        notice = await asyncio.to_thread(promote)
        assert "promote podinfo" in notice
        await scenario.wait_phase("podinfo", "Succeeded", within=90)
        created = json.loads(await scenario.kubectl("get", "canarycommands", "-o", "json"))
        [command] = created["items"]
        who = f"system:serviceaccount:{ns}:release-bot"
        assert command["spec"]["action"] == "promote"
        assert command["metadata"]["annotations"][commands.REQUESTED_BY] == who
        assert who in command["spec"]["reason"]
        assert "promote applied" in "\n".join(
            str(e.get("message")) for e in await scenario.events("podinfo"))
        assert "dashboard_started" in controller.output()
    finally:
        await cluster.akubectl("delete", "clusterrole", role, check=False)
