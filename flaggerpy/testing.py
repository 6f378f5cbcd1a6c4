"""A pytest plugin for plugin packages: test a router, metrics provider or notifier for real.

A plugin package loads it from its own ``conftest.py`` (it is not loaded for everyone)::

    pytest_plugins = ["flaggerpy.testing"]

and gets fixtures, all prefixed ``flaggerpy_`` so they clash with nothing of the package's own:

- ``flaggerpy_kubeconfig``: the control plane the tests run against, named by
  ``FLAGGERPY_KUBECONFIG`` (or else ``KUBECONFIG``). Without one, every test that needs it is
  skipped, saying so. The tests create namespaces and install flaggerpy's CRDs there: point it
  at a disposable cluster (this repository's ``e2e/cluster/up`` starts one on loopback);
- ``flaggerpy_client``: a :class:`~flaggerpy.kube.KubeClient` for it;
- ``flaggerpy_crds``: the ``flagger.app`` CRDs of this flaggerpy version, applied and
  Established (once per test process);
- ``flaggerpy_namespace``: a fresh namespace, deleted after the test;
- ``flaggerpy_store``: an :class:`~flaggerpy.kube.ObjectStore` fed by informers on that
  namespace, as the controller hands one to a router (build a context with
  :func:`provider_context`);
- ``flaggerpy_sandbox``: the namespace's verbs for a whole canary run
  (:class:`Sandbox`): apply a Deployment and a Canary from dicts, start the real
  ``flaggerpy controller`` process against the namespace with the flags a test gives, wait for
  a Canary phase (polling the API, bounded, failing with the last status and the controller's
  log tail);
- ``flaggerpy_http``: a local HTTP endpoint that records every request and answers as the test
  says (:class:`WebhookReceiver`), to stand in for a metrics backend or a chat webhook.

The controller runs as a separate process, from the same environment as the tests, so it finds
the plugin through the package's installed entry points exactly as a cluster would: install
the package (``pip install -e .`` or a wheel) before running its tests.

The helpers are importable on their own too (this repository's end-to-end scenarios use
:class:`ControllerProcess`, :class:`WebhookReceiver` and :func:`wait_for_phase`). Nothing here
imports the engine (``flaggerpy.canary``).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
import structlog
from aiohttp import web

from flaggerpy import kube
from flaggerpy.models import crds
from flaggerpy.routing import ProviderContext
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

__all__ = [
    "FIELD_MANAGER",
    "FLAGGERPY",
    "KUBECONFIG_ENV",
    "Call",
    "ControllerProcess",
    "Sandbox",
    "WebhookReceiver",
    "check_plugin_package",
    "deployment",
    "eventually",
    "flaggerpy_client",
    "flaggerpy_crds",
    "flaggerpy_http",
    "flaggerpy_kubeconfig",
    "flaggerpy_namespace",
    "flaggerpy_sandbox",
    "flaggerpy_store",
    "free_port",
    "imported_flaggerpy_modules",
    "install_crds",
    "kubeconfig_from_env",
    "namespace_name",
    "provider_context",
    "receiving",
    "serve",
    "wait_for_phase",
]

KUBECONFIG_ENV: Final = "FLAGGERPY_KUBECONFIG"
"""Names the control plane plugin tests run against; ``KUBECONFIG`` is read when it is unset."""

FIELD_MANAGER: Final = "flaggerpy-testing"
"""The field manager test objects are applied as, distinct from the controller's."""

FLAGGERPY: Final = str(Path(sys.executable).with_name("flaggerpy"))
"""The ``flaggerpy`` console script of the environment the tests run in."""

TEST_LABEL: Final = "flaggerpy.dev/test"
"""Put on every namespace made for a test, so leftovers can be found and removed."""

_KINDS: Final = {
    resource.kind: resource for resource in (
        kube.DEPLOYMENTS, kube.DAEMONSETS, kube.SERVICES, kube.CONFIGMAPS, kube.SECRETS,
        kube.HORIZONTAL_POD_AUTOSCALERS, kube.CANARIES, kube.METRIC_TEMPLATES,
        kube.ALERT_PROVIDERS,
    )
}


# -- the control plane --------------------------------------------------------------------------


def kubeconfig_from_env() -> Path | None:
    """The kubeconfig named by ``FLAGGERPY_KUBECONFIG``, else by ``KUBECONFIG`` (its first file
    that exists, as that variable may list several); None when neither names a file."""
    for variable in (KUBECONFIG_ENV, "KUBECONFIG"):
        for entry in (os.environ.get(variable) or "").split(os.pathsep):
            if entry and Path(entry).expanduser().is_file():
                return Path(entry).expanduser().resolve()
    return None


_installed: set[str] = set()
"""The API servers this process has installed the CRDs on (one install per test run)."""


async def install_crds(client: kube.KubeClient, *, within: float = 60.0) -> None:
    """Server-side applies this version's ``flagger.app`` CRDs and waits until each is
    Established, so a Canary can be created right after."""
    documents = crds.crd_documents()
    for document in documents:
        await client.apply(kube.CUSTOM_RESOURCE_DEFINITIONS, document, force=True,
                           field_manager=FIELD_MANAGER)
    deadline = time.monotonic() + within
    for document in documents:
        name = document["metadata"]["name"]
        while not _established(await client.get(kube.CUSTOM_RESOURCE_DEFINITIONS, name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {within:g}s")
            await asyncio.sleep(0.1)


def _established(crd: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or ())


def namespace_name(test_name: str) -> str:
    """A fresh namespace name that says which test made it: ``t-<test>-<random>``."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


def provider_context(
        store: kube.ObjectStore,
        *,
        settings: Settings | None = None,  # default: Settings() (defaults plus environment)
        mesh_store: kube.ObjectStore | None = None,
        set_owner_refs: bool = True,
) -> ProviderContext:
    """The context the controller builds a router with, around ``store``."""
    return ProviderContext(
        store=store, settings=settings or Settings(), mesh_store=mesh_store,
        set_owner_refs=set_owner_refs, log=structlog.get_logger("flaggerpy.testing"))


def imported_flaggerpy_modules(package: types.ModuleType) -> set[str]:
    """The flaggerpy modules a package's source imports (``from flaggerpy import sdk`` counts
    as ``flaggerpy.sdk``), read from its files: a plugin package asserts it is ``{"flaggerpy.sdk"}``
    (the only module whose names stay put across flaggerpy versions)."""
    found: set[str] = set()
    for path in sorted(Path(package.__path__[0]).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module == "flaggerpy":
                found |= {f"flaggerpy.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return {name for name in found if name == "flaggerpy" or name.startswith("flaggerpy.")}


def check_plugin_package(
        package: types.ModuleType, *, group: str, name: str, contract: type[Any],
) -> object:
    """The packaging checks a plugin package wants, made as flaggerpy loads plugins; returns
    what the entry point loads.

    The entry point ``name`` of ``group`` is installed (the package was ``pip install``-ed after
    its pyproject last changed), loads something of ``package``, a class that satisfies
    ``contract`` (its methods exist; mypy checks their signatures), and ``package`` imports
    nothing of flaggerpy but ``flaggerpy.sdk``.
    """
    found = importlib.metadata.entry_points(group=group, name=name)
    if not found:
        pytest.fail(f"no {group} entry point {name!r} is installed: pip install the package "
                    "again after changing its pyproject.toml")
    plugin = next(iter(found)).load()
    home = getattr(plugin, "__module__", "")
    if home != package.__name__ and not home.startswith(f"{package.__name__}."):
        pytest.fail(f"{group} entry point {name!r} loads {plugin!r} from {home}, "
                    f"not from {package.__name__}")
    if isinstance(plugin, type) and not issubclass(plugin, contract):
        pytest.fail(f"{plugin.__qualname__} does not implement {contract.__qualname__}")
    imported = imported_flaggerpy_modules(package)
    if imported - {"flaggerpy.sdk"}:
        pytest.fail(f"{package.__name__} imports {sorted(imported - {'flaggerpy.sdk'})}: "
                    "a plugin imports flaggerpy.sdk only")
    return plugin


def deployment(name: str, *, image: str, replicas: int = 2, **pod_spec: Any) -> dict[str, Any]:
    """A Deployment selected by ``app=<name>``, its container serving ``http`` on 9898;
    ``pod_spec`` adds to the pod spec."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": name, "image": image,
                                    "ports": [{"name": "http", "containerPort": 9898}]}],
                    **pod_spec,
                },
            },
        },
    }


# -- the controller process ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ControllerProcess:
    """One ``flaggerpy controller`` process with its telemetry port and log file."""

    def __init__(
        self, *, kubeconfig: Path, args: Sequence[str] = (), name: str = "controller"
    ) -> None:
        self.port = free_port()
        self.name = name
        self.kubeconfig = kubeconfig
        self.args = [f"-kubeconfig={kubeconfig}", f"-port={self.port}", "-log-level=debug", *args]
        self._log_file = Path(tempfile.mkstemp(prefix=f"flaggerpy-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControllerProcess:
        with self._log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [FLAGGERPY, "controller", "-zap-encoding=json", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def get(self, path: str) -> tuple[int, str]:
        """Status and body of a GET on the telemetry port (0 when nothing answers)."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""

    def reconciles(self, controller: str = "canary") -> float:
        """How many reconciles ``controller`` has run so far, whatever their result (0 when
        the process does not answer)."""
        pattern = re.compile(
            rf'^controller_runtime_reconcile_total\{{[^}}]*controller="{re.escape(controller)}"'
            r'[^}]*\}\s+(\S+)$', re.MULTILINE)
        return sum(float(value) for value in pattern.findall(self.get("/metrics")[1]))

    def wait_ready(self, *, timeout: float = 90.0) -> None:
        """Until /readyz answers 200 (caches synced); a start on a busy machine takes a while."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise RuntimeError(f"{self.name} exited {self.exit_code()}:\n{self.output()}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def output(self) -> str:
        return self._log_file.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are skipped)."""
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def terminate(self, *, timeout: float = 10.0) -> float:
        """Sends SIGTERM and returns the seconds until the process exited."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        """Ends the process whatever its state (test teardown) and removes its log."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)
        self._log_file.unlink(missing_ok=True)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 60, what: str
) -> None:
    """Polls ``check`` until it is true; fails the test naming ``what`` after ``within`` seconds.

    Tests of a controller wait on real controllers, so they poll for an outcome instead of
    sleeping for a guessed time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.25)


async def wait_for_phase(
        status: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        name: str,
        phases: str | Sequence[str],
        within: float = 120.0,
        seen: list[str] | None = None,  # appended with each phase as it is first seen
        logs: Callable[[], str] | None = None,  # shown on timeout: the controllers' log tails
        poll: float = 0.2,
) -> dict[str, Any]:
    """Polls ``status()`` until the Canary's phase is one of ``phases``; returns that status.

    Raises TimeoutError after ``within`` seconds, with the phase it is in, the phases seen, the
    last status and ``logs()``: what a failing canary test needs to be read without a rerun.
    """
    wanted = {phases} if isinstance(phases, str) else set(phases)
    deadline = time.monotonic() + within
    while True:
        current = dict(await status())
        phase = current.get("phase") or ""
        if seen is not None and (not seen or seen[-1] != phase):
            seen.append(phase)
        if phase in wanted:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"canary {name} is {phase or 'without phase'} after {within:g}s, "
                f"wanted {sorted(wanted)}; seen {seen}; status {current}\n"
                f"{logs() if logs is not None else ''}"
            )
        await asyncio.sleep(poll)


# -- one test's namespace -----------------------------------------------------------------------


@dataclass
class Sandbox:
    """One test's namespace on the control plane, and the verbs a canary test needs there."""

    client: kube.KubeClient
    kubeconfig: Path
    namespace: str
    controllers: list[ControllerProcess] = field(default_factory=list)

    async def apply(self, *objects: Mapping[str, Any]) -> list[kube.JsonObject]:
        """Server-side applies each object in the namespace; returns them as stored.

        The kinds a canary test writes are known (Deployment, Service, ConfigMap, Secret,
        Canary, MetricTemplate, AlertProvider, ...); others raise ValueError.
        """
        stored = []
        for obj in objects:
            stored.append(await self.client.apply(
                _resource_of(obj), {**obj, "metadata": {**obj["metadata"],
                                                        "namespace": self.namespace}},
                force=True, field_manager=FIELD_MANAGER))
        return stored

    async def patch(self, kind: str, name: str, patch: Mapping[str, Any]) -> kube.JsonObject:
        """A strategic merge patch (``kubectl patch``): a new image without touching the
        replicas the controller set."""
        return await self.client.patch(
            _KINDS[kind], name, patch, namespace=self.namespace,
            patch_type=kube.PatchType.STRATEGIC)

    async def get(self, kind: str, name: str) -> kube.JsonObject | None:
        """The object as the API server has it now, or None."""
        return await kube.ignore_not_found(
            self.client.get(_KINDS[kind], name, namespace=self.namespace))

    async def canary_status(self, name: str) -> dict[str, Any]:
        """The Canary's ``status`` (empty before the controller first writes it)."""
        canary = await self.get("Canary", name)
        return dict((canary or {}).get("status") or {})

    async def start_controller(self, *flags: str) -> ControllerProcess:
        """Starts ``flaggerpy controller`` on this namespace and waits until it is ready.

        It watches only this namespace, and its analysis may tick every second
        (``-min-analysis-interval=1s``); ``flags`` come last and win. Stopped at teardown.
        """
        controller = ControllerProcess(
            kubeconfig=self.kubeconfig,
            args=[f"-namespace={self.namespace}", "-min-analysis-interval=1s", *flags],
            name=f"controller-{len(self.controllers)}",
        )
        self.controllers.append(controller.start())
        await asyncio.to_thread(controller.wait_ready)
        return controller

    async def wait_phase(
            self, name: str, phases: str | Sequence[str], *, within: float = 120.0,
            seen: list[str] | None = None,
    ) -> dict[str, Any]:
        """Polls the Canary until its phase is one of ``phases`` (see :func:`wait_for_phase`)."""
        return await wait_for_phase(
            lambda: self.canary_status(name), name=name, phases=phases, within=within,
            seen=seen, logs=self.log_tail)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of each controller's log, for failure messages."""
        return "\n".join(f"--- {c.name} ---\n{c.output()[-chars:]}" for c in self.controllers)

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()


def _resource_of(obj: Mapping[str, Any]) -> kube.Resource:
    kind = str(obj.get("kind") or "")
    resource = _KINDS.get(kind)
    if resource is None or obj.get("apiVersion") != resource.api_version:
        raise ValueError(f"{obj.get('apiVersion')} {kind or '(no kind)'} is not a kind a canary "
                         f"test applies ({', '.join(sorted(_KINDS))})")
    return resource


# -- a local HTTP endpoint ----------------------------------------------------------------------


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on a free loopback port; a slow handler does not delay the shutdown."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, int(getattr(server, "sockets", [])[0].getsockname()[1])


@dataclass(frozen=True)
class Call:
    """One request the endpoint received."""

    path: str
    body: dict[str, Any]
    """The JSON body (``{}`` when empty, ``{"_raw": text}`` when not JSON)."""
    method: str = "POST"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header names in lower case."""


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 whose answers a test sets: ``url(path)`` to hand out,
    ``answer(path, status, json=...)`` to decide what each path returns (200 by default),
    ``calls`` for what arrived, in order."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._answers: dict[str, tuple[int, Any]] = {}
        self._delays: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def answer(self, path: str, status: int = 200, *, json: Any = None,
               delay: float = 0.0) -> None:
        """Answer ``path`` with ``status`` (and ``json`` as the body, if given), after ``delay``
        seconds (a slow or hung endpoint)."""
        self._answers[path] = (status, json)
        self._delays[path] = delay

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [call.body for call in self.calls if call.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"_raw": text}
        self.calls.append(Call(request.path, body, method=request.method,
                               query=dict(request.query),
                               headers={k.lower(): v for k, v in request.headers.items()}))
        await asyncio.sleep(self._delays.get(request.path, 0.0))
        status, answer = self._answers.get(request.path, (200, None))
        if answer is not None:
            return web.json_response(answer, status=status)
        return web.Response(status=status, text="ok" if status < 300 else "refused by the test")

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[WebhookReceiver]:
    """A started :class:`WebhookReceiver`, closed on exit."""
    receiver = await WebhookReceiver().start()
    try:
        yield receiver
    finally:
        await receiver.aclose()


# -- hooks and fixtures -------------------------------------------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    """Declares "no current event loop" before any test runs.

    looptime (a ``flaggerpy[test]`` dependency) asks the event loop policy for the current loop
    before every test, sync ones included; before any loop was set, asyncio answers by making
    one that nobody closes, and a later async test drops it: "ResourceWarning: unclosed event
    loop", an error under ``filterwarnings = error``. With no current loop declared, the
    question raises instead, which looptime expects; pytest-asyncio still sets a loop for every
    async test. (flaggerpy's own ``tests/conftest.py`` does the same.)
    """
    asyncio.set_event_loop(None)


@pytest.fixture(scope="session")
def flaggerpy_kubeconfig() -> Path:
    """The control plane's kubeconfig (``FLAGGERPY_KUBECONFIG``, else ``KUBECONFIG``)."""
    path = kubeconfig_from_env()
    if path is None:
        pytest.skip(f"no control plane: set {KUBECONFIG_ENV} (or KUBECONFIG) to the kubeconfig "
                    "of a disposable cluster; these tests create namespaces and CRDs there")
    return path


@pytest_asyncio.fixture
async def flaggerpy_client(flaggerpy_kubeconfig: Path) -> AsyncIterator[kube.KubeClient]:
    """A client of the control plane, closed after the test."""
    client = await kube.KubeClient.connect(
        kubeconfig=flaggerpy_kubeconfig, user_agent=f"{FIELD_MANAGER}/{secrets.token_hex(4)}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def flaggerpy_crds(flaggerpy_client: kube.KubeClient) -> None:
    """flaggerpy's ``flagger.app`` CRDs, Established (installed once per test process)."""
    if flaggerpy_client.server not in _installed:
        await install_crds(flaggerpy_client)
        _installed.add(flaggerpy_client.server)


@pytest_asyncio.fixture
async def flaggerpy_namespace(
        flaggerpy_client: kube.KubeClient, request: pytest.FixtureRequest,
) -> AsyncIterator[str]:
    """A fresh namespace named after the test; deleted (not waited for) afterwards."""
    name = namespace_name(request.node.name)
    await flaggerpy_client.create(kube.NAMESPACES, {
        "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}})
    try:
        yield name
    finally:
        with contextlib.suppress(kube.NotFoundError):
            await flaggerpy_client.delete(kube.NAMESPACES, name)


@pytest_asyncio.fixture
async def flaggerpy_store(
        flaggerpy_client: kube.KubeClient, flaggerpy_namespace: str,
) -> AsyncIterator[kube.ObjectStore]:
    """An object store whose reads come from informers on the test's namespace, as the
    controller's do; ``provider_context(flaggerpy_store)`` builds a router's context."""
    caches = SharedInformerFactory(flaggerpy_client, namespace=flaggerpy_namespace)
    task = asyncio.create_task(caches.start())
    try:
        yield kube.ObjectStore(flaggerpy_client, caches=caches)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture
async def flaggerpy_sandbox(
        flaggerpy_crds: None, flaggerpy_client: kube.KubeClient, flaggerpy_kubeconfig: Path,
        flaggerpy_namespace: str,
) -> AsyncIterator[Sandbox]:
    """The test's namespace with the CRDs installed: apply objects, start the controller, wait
    for a phase (:class:`Sandbox`). The controllers it started are stopped afterwards."""
    sandbox = Sandbox(client=flaggerpy_client, kubeconfig=flaggerpy_kubeconfig,
                      namespace=flaggerpy_namespace)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest_asyncio.fixture
async def flaggerpy_http() -> AsyncIterator[WebhookReceiver]:
    """A started :class:`WebhookReceiver`: a metrics backend or chat webhook the test scripts."""
    async with receiving() as receiver:
        yield receiver
