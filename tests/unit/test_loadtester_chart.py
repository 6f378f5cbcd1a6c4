"""charts/loadtester: lint clean, renders what the CLI accepts, and keeps Flagger's Service name.

Rendered with the real helm binary that ``e2e/cluster/build`` provides; the
container's command line is then run through ``flaggerpy``'s own parser, so a
flag the chart passes and the CLI does not know fails here, not in a pod.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flaggerpy import cli, logs
from flaggerpy.loadtester import app
from flaggerpy.loadtester.config import OPTIONS, LoadTesterSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loadtester"
HELM = ROOT / "e2e" / "cluster" / "bin" / "helm"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="e2e/cluster/build has not built helm")


def render(*sets: str, release: str = "flagger-loadtester") -> dict[str, dict[str, Any]]:
    args = [str(HELM), "template", release, str(CHART), "--namespace", "test"]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def settings_from(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> LoadTesterSettings:
    """Runs the container's command line through the real CLI, with its environment."""
    seen: list[LoadTesterSettings] = []

    def fake_run(settings: LoadTesterSettings) -> int:
        seen.append(settings)
        return 0

    def no_logging(**kwargs: Any) -> None:
        pass

    monkeypatch.setattr(app, "run", fake_run)
    monkeypatch.setattr(logs, "configure", no_logging)
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    for variable in spec.get("env", []):
        if "value" in variable and variable["name"].startswith("FLAGGERPY_LOADTESTER_"):
            monkeypatch.setenv(variable["name"], variable["value"])
    assert spec["command"] == ["flaggerpy", "loadtester"]
    assert cli.main([*spec["command"][1:], *spec["args"]]) == 0
    return seen[0]


def test_lint() -> None:
    for sets in ([], ["auth.token=s3cret", "cmd.allowCommands={hey,helm test}"]):
        args = [str(HELM), "lint", str(CHART), *(f"--set={s}" for s in sets)]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_a_deployment_and_service_that_keep_flaggers_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    assert set(objects) == {"Deployment", "Service", "ServiceAccount"}
    service = objects["Service"]
    assert service["metadata"]["name"] == "flagger-loadtester"  # http://flagger-loadtester.test/
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    spec = container(objects)
    assert spec["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["volumeMounts"]

    settings = settings_from(spec, monkeypatch)
    assert settings.port == 8080
    assert settings.timeout == 3600
    assert settings.token == ""
    assert settings.allow_commands == ()


def test_safety_options_reach_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("auth.token=s3cret", "cmd.allowCommands={hey,helm test}",
                     "cmd.namespaceRegexp=^(test|dev)$", "cmd.timeout=30m",
                     "cmd.helm=/usr/local/bin/helm")
    secret = objects["Secret"]
    assert secret["data"] == {"token": "czNjcmV0"}
    spec = container(objects)
    token = next(v for v in spec["env"] if v["name"] == "FLAGGERPY_LOADTESTER_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"],
                                                  "key": "token"}
    assert "s3cret" not in yaml.safe_dump(objects["Deployment"])

    settings = settings_from(spec, monkeypatch)
    assert settings.allow_commands == ("hey", "helm test")
    assert settings.namespace_regexp == "^(test|dev)$"
    assert settings.timeout == 1800
    assert settings.helm == "/usr/local/bin/helm"


def test_an_existing_secret_is_used_instead_of_creating_one() -> None:
    objects = render("auth.existingSecret=loadtester-token", "auth.secretKey=value",
                     release="canary-tools")
    assert "Secret" not in objects
    assert objects["Service"]["metadata"]["name"] == "canary-tools-loadtester"
    token = next(v for v in container(objects)["env"]
                 if v["name"] == "FLAGGERPY_LOADTESTER_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "loadtester-token", "key": "value"}
