"""``kubectl flaggerpy dashboard`` over HTTP, reading and steering on the local control plane as
its user."""

from __future__ import annotations

import aiohttp
import pytest

from e2e.scenario import Scenario, canary, deployment
from flaggerpy import kube, testing
from flaggerpy.kubectl import dashboard

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]




async def test_the_dashboard_lists_canaries_and_shows_one(scenario: Scenario) -> None:
    ns = scenario.namespace
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), canary("podinfo"))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    client = await kube.KubeClient.connect(kubeconfig=scenario.cluster.kubeconfig)
    async with client:
        runner, port = await testing.serve(dashboard.build_app(client, namespace=ns))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/") as response:
                    assert response.status == 200
                    index = await response.text()
                async with http.get(f"{base}/canaries/{ns}/podinfo") as response:
                    assert response.status == 200
                    page = await response.text()
                async with http.get(f"{base}/canaries/{ns}/ghost") as response:
                    assert response.status == 404
                async with http.get(f"{base}/canaries/kube-system/podinfo") as response:
                    assert response.status == 404  # only the namespace it was started for
                async with http.get(f"{base}/", headers={"Host": "evil.example"}) as response:
                    assert response.status == 421  # DNS rebinding: not a loopback name
                async with http.post(f"{base}/canaries/{ns}/podinfo/pause") as response:
                    assert response.status == 403  # a form without this page's CSRF token
                csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                async with http.post(f"{base}/canaries/{ns}/podinfo/pause",
                                     data={"csrf": csrf}, allow_redirects=False) as response:
                    assert response.status == 303
                    assert "?command=podinfo-pause-" in response.headers["Location"]
            made = await client.list(kube.CANARY_COMMANDS, namespace=ns)
        finally:
            await runner.cleanup()

    assert f"<h1>Canaries in {ns}</h1>" in index
    assert f'<tr data-canary="{ns}/podinfo">' in index
    assert '<td class="Initialized">Initialized</td>' in index
    assert f'<a href="/canaries/{ns}/podinfo">podinfo</a>' in index
    assert '<td id="phase" class="Initialized">Initialized</td>' in page
    assert f"Initialization done! podinfo.{ns}" in page
    assert "canary 0% / primary 100%" in page
    [command] = made.items  # created as the kubeconfig's user, whom the API server authorised
    assert command["spec"]["action"] == "pause"
    assert command["spec"]["reason"] == "from kubectl flaggerpy dashboard"
