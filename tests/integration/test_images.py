"""The container images end to end: built with podman, run as the charts' securityContext asks.

``make image-test`` runs this module (``make test`` skips it: the first build of the Debian base
takes minutes, and CI's time is limited). It builds the images (or reuses podman's layers and the
base cached under ``~/.cache/flaggerpy/images``), installs charts/flaggerpy with the real helm, and
runs the controller image with podman on the host network as the chart's ServiceAccount (a
kubeconfig holding a ``kubectl create token``), non-root, with every capability dropped and a
read-only root filesystem with only /tmp writable (the chart's emptyDir): a blue/green canary goes
from Initialized to Succeeded. The load tester image answers webhooks that run ``hey`` against a
server and ``helm``/``kubectl`` commands, and carries the other tools Flagger's image ships.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import images
from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.processes import ControllerProcess, LoadTesterProcess
from e2e.scenario import Scenario, canary, container_image, deployment

ENABLE_ENV = "FLAGGERPY_IMAGE_TEST"
REUSE_ENV = "FLAGGERPY_IMAGE_REUSE"
CHART = REPO_ROOT / "charts" / "flaggerpy"
UID = "10001"  # the chart's runAsUser and the Dockerfile's USER
CONTAINER_KUBECONFIG = Path("/etc/flaggerpy/kubeconfig")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("flagger_crds"),
    pytest.mark.skipif(os.environ.get(ENABLE_ENV) != "1",
                       reason=f"image tests run with `make image-test` ({ENABLE_ENV}=1)"),
    pytest.mark.timeout(1800),  # a first build makes the Debian base and the Go tools
]

# What the charts' securityContext asks, in podman's words: a numeric non-root user, no
# capabilities, no privilege escalation, a read-only root with a writable /tmp only (the chart's
# emptyDir; podman's own tmpfs for /run and /var/tmp is turned off so nothing else is writable).
HARDENED = (
    f"--user={UID}:{UID}", "--cap-drop=ALL", "--security-opt=no-new-privileges",
    "--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp:rw,mode=1777,size=64m",
)


def _podman_run(name: str, image: str, *args: str, volumes: tuple[str, ...] = ()) -> list[str]:
    return [*images.PODMAN, "run", "--rm", f"--name={name}", *images.RUN_FLAGS, *HARDENED,
            *(f"--volume={volume}" for volume in volumes), image, *args]


def _remove_container(name: str) -> None:
    subprocess.run([*images.PODMAN, "rm", "--force", "--time=2", name],
                   capture_output=True, check=False, timeout=60)


class ContainerController(ControllerProcess):
    """``flaggerpy controller`` in the controller image instead of the test's virtualenv.

    Host network, so its telemetry port and the API server's loopback address are the same as a
    local process's; the kubeconfig is mounted read-only where a Secret volume would put it.
    """

    def __init__(self, *, image: str, kubeconfig: Path, args: list[str]) -> None:
        super().__init__(kubeconfig=CONTAINER_KUBECONFIG, args=args, name="controller-image")
        self.host_kubeconfig = kubeconfig
        self.image = image
        self.container = f"flaggerpy-test-{secrets.token_hex(4)}"

    def start(self) -> ContainerController:
        mount = f"{self.host_kubeconfig}:{CONTAINER_KUBECONFIG}:ro"
        command = _podman_run(self.container, self.image, "controller", "-zap-encoding=json",
                              *self.args, volumes=(mount,))
        with self._log_file.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        _remove_container(self.container)
        super().stop()


class ContainerLoadTester(LoadTesterProcess):
    """``flaggerpy loadtester`` in the load tester image, on a free port of the host network."""

    def __init__(self, image: str, *args: str) -> None:
        super().__init__(*args)
        self.image = image
        self.container = f"flaggerpy-loadtester-test-{secrets.token_hex(4)}"

    def start(self, *, timeout: float = 60.0) -> ContainerLoadTester:
        command = _podman_run(self.container, self.image, "loadtester", *self.args)
        with self._log_file.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"loadtester container exited: {self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise TimeoutError(f"loadtester container not serving after {timeout}s: {self.output()}")

    def stop(self) -> None:
        _remove_container(self.container)
        super().stop()


@pytest.fixture(scope="module")
def built() -> images.Images:
    """The images of this tree: built here, or as `make image` just built them (REUSE_ENV=1)."""
    if not images.podman_available():
        pytest.fail("podman cannot run: `make image-deps` installs it (as root)")
    if os.environ.get(REUSE_ENV) == "1":
        tag = images.project_version()
        reused = images.Images(controller=f"localhost/flaggerpy:{tag}",
                               loadtester=f"localhost/flaggerpy-loadtester:{tag}")
        if images.image_exists(reused.controller) and images.image_exists(reused.loadtester):
            return reused
    return images.build_images()


def _inspect(reference: str) -> dict[str, Any]:
    out = subprocess.run([*images.PODMAN, "image", "inspect", reference], check=True,
                         capture_output=True, text=True).stdout
    [image] = json.loads(out)
    assert isinstance(image, dict)
    return image


def _run_in(image: str, script: str) -> subprocess.CompletedProcess[str]:
    name = f"flaggerpy-probe-{secrets.token_hex(4)}"
    return subprocess.run(
        [*images.PODMAN, "run", "--rm", f"--name={name}", *images.RUN_FLAGS, *HARDENED,
         "--entrypoint=/bin/sh", image, "-c", script],
        capture_output=True, text=True, timeout=120, check=False)


def test_the_controller_image_is_non_root_and_carries_no_build_tools(built: images.Images) -> None:
    config = _inspect(built.controller)["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["flaggerpy"]
    result = _run_in(built.controller, "id -u; flaggerpy controller --help >/dev/null && echo help;"
                     " for t in pip pip3 gcc cc make apt-get; do command -v $t || true; done;"
                     " touch /opt/flaggerpy/x 2>/dev/null || echo read-only")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == UID
    assert "help" in lines
    assert "read-only" in lines
    # apt-get is Debian's (minbase keeps it); pip, compilers and make are not there.
    assert not [line for line in lines if line.endswith(("/pip", "/pip3", "/gcc", "/cc", "/make"))]


def test_the_loadtester_image_carries_flaggers_tools(built: images.Images) -> None:
    result = _run_in(built.loadtester, "hey 2>&1 | head -n 1; ghz --help >/dev/null && echo ghz ok;"
                     " wrk -v 2>&1 | head -n 1; grpc_health_probe -version;"
                     " helm version --short; helmv3 version --short; kubectl version --client;"
                     " curl --version | head -n 1; echo '{\"a\": 1}' | jq .a")
    assert result.returncode == 0, (result.stdout, result.stderr)
    tools = images.GO_TOOLS[2].version.removeprefix("v")  # grpc_health_probe prints its version
    for expected in ("Usage: hey", "ghz ok", "wrk debian/", tools, "v4.", "Client Version: v1.",
                     "curl 7."):
        assert expected in result.stdout, (expected, result.stdout)
    assert result.stdout.count("v4.") == 2, result.stdout  # helm and helmv3
    assert result.stdout.rstrip().endswith("\n1"), result.stdout  # jq




async def _helm(cluster: LocalCluster, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"helm {' '.join(args)}: {stderr.decode()}"
    return stdout.decode()


@pytest.fixture
async def release(cluster: LocalCluster, namespace: str) -> AsyncIterator[str]:
    """charts/flaggerpy installed in the test namespace; yields the release's full name."""
    name = f"fp-{secrets.token_hex(3)}"
    await _helm(cluster, "install", name, str(CHART), "--namespace", namespace, "--wait",
                "--timeout=90s", "--set", "meshProvider=kubernetes", "--set",
                f"namespace={namespace}")
    try:
        yield f"{name}-flagger"
    finally:  # the ClusterRole would outlive the namespace
        await _helm(cluster, "uninstall", name, "--namespace", namespace)


async def _token_kubeconfig(cluster: LocalCluster, namespace: str, account: str,
                            path: Path) -> Path:
    """A kubeconfig with a fresh token of the chart's ServiceAccount and the CA inline (the
    container sees no host path), readable by the container's user only."""
    token = await cluster.akubectl("create", "token", account, "-n", namespace, "--duration=1h")
    ca = base64.b64encode((cluster.pki_dir / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token.stdout.strip()}}],
        "contexts": [{"name": "chart", "context": {
            "cluster": "local", "user": account, "namespace": namespace}}],
        "current-context": "chart",
    }
    await asyncio.to_thread(_write_for_container_user, path, json.dumps(config))
    return path


def _write_for_container_user(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)
    os.chown(path, int(UID), int(UID))  # mounted into the container: its user reads it


async def _chart_args(cluster: LocalCluster, namespace: str, fullname: str) -> list[str]:
    result = await cluster.akubectl("get", "deployment", fullname, "-n", namespace, "-o", "json")
    [container] = json.loads(result.stdout)["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["flaggerpy", "controller"]
    security = container.get("securityContext", {})
    assert security.get("readOnlyRootFilesystem") is True, security
    assert security.get("runAsUser") == int(UID), security
    assert security.get("capabilities", {}).get("drop") == ["ALL"], security
    # The scenario's Prometheus replaces the chart's metrics server.
    return [a for a in container["args"] if not a.startswith(("-metrics-server=", "-log-level="))]


async def test_the_controller_image_takes_a_blue_green_canary_to_succeeded(
        built: images.Images, release: str, scenario: Scenario, cluster: LocalCluster,
        namespace: str, tmp_path: Path) -> None:
    args = await _chart_args(cluster, namespace, release)
    kubeconfig = await _token_kubeconfig(cluster, namespace, release, tmp_path / "sa.kubeconfig")
    controller = ContainerController(image=built.controller, kubeconfig=kubeconfig, args=[
        f"-namespace={namespace}", f"-metrics-server={scenario.prometheus_url}",
        "-min-analysis-interval=1s", *args])
    scenario.controllers.append(controller.start())  # stopped (container removed) by aclose
    await asyncio.to_thread(controller.wait_ready, timeout=120)

    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), canary("podinfo"))
    await scenario.wait_phase("podinfo", "Initialized", within=90)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    seen: list[str] = []
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=180, seen=seen)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    assert "Progressing" in seen
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    # It really was the container, running as the chart's user (10001 is "flaggerpy" in the
    # image's /etc/passwd) with no effective capability.
    top = await asyncio.to_thread(
        subprocess.run, [*images.PODMAN, "top", controller.container, "user", "capeff"],
        capture_output=True, text=True, check=False, timeout=60)
    assert top.returncode == 0, top.stderr
    [_header, process] = top.stdout.strip().splitlines()
    assert process.split() == ["flaggerpy", "none"], top.stdout


@pytest.fixture
def loadtester(built: images.Images) -> Iterator[ContainerLoadTester]:
    tester = ContainerLoadTester(built.loadtester, "-log-level=debug").start()
    try:
        yield tester
    finally:
        tester.stop()


def _webhook(url: str, metadata: dict[str, str]) -> tuple[int, str]:
    """POSTs a Flagger webhook payload to the load tester; its status and body."""
    body = json.dumps({"name": "podinfo", "namespace": "test", "phase": "Progressing",
                       "metadata": metadata}).encode()
    request = urllib.request.Request(url + "/", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_loadtester_image_runs_hey_and_helm_from_webhooks(
        loadtester: ContainerLoadTester) -> None:
    # hey in the container loads the load tester's own /healthz: blocking (bash), and
    # returnCmdOutput (Flagger's flag) puts hey's summary, which counts the answers, in the body.
    status, body = _webhook(loadtester.url, {
        "type": "bash", "cmd": f"hey -n 50 -c 2 {loadtester.url}/healthz",
        "returnCmdOutput": "true"})
    assert status == 200, body
    assert "[200]\t50 responses" in body, body
    # Background, as a Canary's load test runs: accepted at once.
    status, body = _webhook(loadtester.url, {
        "cmd": f"hey -z 2s -q 5 -c 1 {loadtester.url}/healthz"})
    assert status == 202, body
    # A helm-test-style command and kubectl, from webhooks (both blocking).
    status, body = _webhook(loadtester.url, {"type": "helmv3", "cmd": "version --short"})
    assert status == 200, body
    status, body = _webhook(loadtester.url, {"type": "kubectl", "cmd": "version --client"})
    assert status == 200, body
