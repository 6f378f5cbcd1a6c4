"""A local external metrics adapter, served through the real kube-apiserver's aggregation layer.

Written from Kubernetes' documentation of the external metrics API (the design proposal
"External Metrics API", ``k8s.io/metrics/pkg/apis/external_metrics/v1beta1``) and of the
aggregation layer ("Configure the Aggregation Layer", "Authentication Flow"), not from
flaggerpy's client:

- ``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<namespace>/<metricName>`` with the
  optional query parameter ``labelSelector`` answers an ``ExternalMetricValueList``
  (``kind``, ``apiVersion: external.metrics.k8s.io/v1beta1``, ``metadata: {}``, ``items``), each
  item ``{metricName, metricLabels, timestamp, value}`` where ``value`` is a quantity string;
  only the items whose labels match the selector; a metric with no value answers an empty
  list. The API is read-only: any other verb is 405.
- discovery: ``/apis``, ``/apis/external.metrics.k8s.io`` (``APIGroup``) and
  ``/apis/external.metrics.k8s.io/v1beta1`` (``APIResourceList``, one resource per metric name
  known, ``namespaced: true``, ``verbs: [get]``), which the aggregator's availability check asks.
- errors are ``Status`` objects (``kind: Status``, ``status: Failure``, ``message``,
  ``reason``, ``code``).
- authentication as an extension API server does it: the kube-apiserver proxies with its
  front-proxy client certificate (``--proxy-client-cert-file``) and names the caller in
  ``X-Remote-User`` / ``X-Remote-Group`` (the header names and trusted CA are published in
  ``kube-system/extension-apiserver-authentication``). With ``front_proxy_ca`` given, a
  request without a client certificate from that CA whose CN is in ``allowed_names`` is
  answered 401, and the X-Remote headers are believed only from such a peer. Without it (a
  control plane started before it had the front-proxy flags), the headers are recorded as
  they came and :attr:`FakeExternalMetrics.verified_front_proxy` stays False.

Values are set per metric name with :meth:`FakeExternalMetrics.set_metric`, for every
namespace or one (the fake serves every namespace, because the APIService is cluster-wide);
:meth:`FakeExternalMetrics.fail_next` scripts error answers or a hang. Every request is
recorded. :func:`registered` registers it with the API server (Service of type ExternalName
pointing at 127.0.0.1, APIService ``v1beta1.external.metrics.k8s.io`` with its CA) for the
length of a ``with`` block, holding a Lease so two test processes never register it at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from e2e.cluster import pki
from e2e.cluster.localcluster import LocalCluster

__all__ = ["FakeExternalMetrics", "Recorded", "registered"]

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
API_SERVICE = f"{VERSION}.{GROUP}"
SERVICE_NAMESPACE = "flaggerpy-external-metrics"
SERVICE_NAME = "external-metrics"
LOCK_NAME = "flaggerpy-tests-external-metrics-apiservice"
ANY_NAMESPACE = "*"
STALE_LOCK = 900.0


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    query: Mapping[str, str]
    user: str
    """``X-Remote-User`` (the caller the API server authenticated)."""
    groups: tuple[str, ...]
    front_proxy: str
    """CN of the verified client certificate ("" when none was presented)."""
    headers: Mapping[str, str]


@dataclass(slots=True)
class _Item:
    labels: dict[str, str]
    value: str


@dataclass(slots=True)
class _Failure:
    status: int
    message: str
    hang: float = 0.0


@dataclass(slots=True)
class FakeExternalMetrics:
    """The adapter: HTTPS on 127.0.0.1, a certificate for ``<service>.<namespace>.svc``."""

    front_proxy_ca: str | None = None
    """PEM of the CA whose client certificates may proxy (requestheader-client-ca-file)."""
    allowed_names: tuple[str, ...] = ()
    """CNs allowed to proxy (requestheader-allowed-names); empty: any from the CA."""
    user_header: str = "X-Remote-User"
    group_header: str = "X-Remote-Group"
    requests: list[Recorded] = field(default_factory=list)
    verified_front_proxy: bool = False
    """Set once a request came with a verified front-proxy certificate."""
    port: int = 0
    ca_pem: bytes = b""
    _metrics: dict[tuple[str, str], list[_Item]] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def set_metric(self, name: str, *values: tuple[Mapping[str, str], str] | str,
                   namespace: str = ANY_NAMESPACE) -> None:
        """The values of ``name``: quantity strings, or ``(labels, quantity)`` pairs."""
        items = []
        for value in values:
            labels, quantity = ({}, value) if isinstance(value, str) else value
            items.append(_Item(labels=dict(labels), value=quantity))
        self._metrics[(namespace, name)] = items

    def fail_next(self, status: int, message: str = "", *, hang: float = 0.0) -> None:
        """The next metric request answers ``status`` with a Status (after ``hang`` seconds)."""
        self._failures.append(_Failure(status, message or _reason(status), hang))

    def metric_requests(self) -> list[Recorded]:
        """The requests for metric values (not discovery)."""
        return [r for r in self.requests if "/namespaces/" in r.path]

    async def __aenter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="external-metrics-")
        directory = Path(self._tmp.name)
        ca = pki.serving_certificate(
            directory, stem="external-metrics",
            dns_names=(f"{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc",
                       f"{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc.cluster.local", "localhost"))
        self.ca_pem = ca.read_bytes()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "external-metrics.crt",
                                directory / "external-metrics.key")
        if self.front_proxy_ca:
            context.load_verify_locations(cadata=self.front_proxy_ca)
            context.verify_mode = ssl.CERT_OPTIONAL  # verified when presented
        app = web.Application(middlewares=[self._authenticate])
        prefix = f"/apis/{GROUP}/{VERSION}"
        app.router.add_route("*", "/apis", self._groups)
        app.router.add_route("*", f"/apis/{GROUP}", self._group)
        app.router.add_route("*", prefix, self._resources)
        app.router.add_route("*", prefix + "/namespaces/{namespace}/{metric}", self._list)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- authentication ----------------------------------------------------------------------

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        common_name = ""
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common_name = value
        if self.front_proxy_ca:
            if not common_name:
                return _status(401, "Unauthorized", "Unauthorized")
            if self.allowed_names and common_name not in self.allowed_names:
                return _status(401, "Unauthorized",
                               f"client certificate {common_name} is not an allowed front proxy")
            self.verified_front_proxy = True
        self.requests.append(Recorded(
            method=request.method, path=request.path, query=dict(request.query),
            user=request.headers.get(self.user_header, ""),
            groups=tuple(request.headers.getall(self.group_header, ())),
            front_proxy=common_name, headers=dict(request.headers),
        ))
        if request.method != "GET":
            return _status(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        result: web.StreamResponse = await handler(request)
        return result

    # -- discovery ---------------------------------------------------------------------------

    async def _groups(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [_api_group()]})

    async def _group(self, request: web.Request) -> web.Response:
        return web.json_response(_api_group())

    async def _resources(self, request: web.Request) -> web.Response:
        names = sorted({name for _, name in self._metrics})
        return web.json_response({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
            "resources": [{"name": name, "singularName": "", "namespaced": True,
                           "kind": "ExternalMetricValueList", "verbs": ["get"]}
                          for name in names],
        })

    async def _not_found(self, request: web.Request) -> web.Response:
        return _status(404, "NotFound", "the server could not find the requested resource")

    # -- values ------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        metric = request.match_info["metric"]
        if self._failures:
            failure = self._failures.pop(0)
            if failure.hang:
                await asyncio.sleep(failure.hang)
            return _status(failure.status, _reason(failure.status), failure.message)
        try:
            selector = _Selector.parse(request.query.get("labelSelector", ""))
        except ValueError as exc:
            return _status(400, "BadRequest", f"unable to parse labelSelector: {exc}")
        items = self._metrics.get((namespace, metric), self._metrics.get((ANY_NAMESPACE, metric)))
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({
            "kind": "ExternalMetricValueList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "items": [{"metricName": metric, "metricLabels": item.labels, "timestamp": now,
                       "value": item.value}
                      for item in items or () if selector.matches(item.labels)],
        })


def _api_group() -> dict[str, Any]:
    version = {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version],
            "preferredVersion": version}


def _reason(status: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable"}.get(status, "Unknown")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


class _Selector:
    """A label selector as the Kubernetes documentation describes it ("Labels and Selectors"):
    equality-based (``=``, ``==``, ``!=``) and set-based (``in``, ``notin``, ``key``,
    ``!key``) requirements, comma-separated, all of which must hold."""

    _REQUIREMENT = re.compile(
        r"^\s*(?:(?P<not>!)\s*(?P<absent>[^\s!=,()]+)"
        r"|(?P<key>[^\s!=<>,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
        r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")

    def __init__(self, checks: Sequence[Any]) -> None:
        self._checks = checks

    @classmethod
    def parse(cls, text: str) -> _Selector:
        parts = re.findall(r"(?:[^,(]|\([^)]*\))+", text)
        checks = []
        for part in parts:
            match = cls._REQUIREMENT.match(part)
            if match is None:
                raise ValueError(f"invalid requirement {part.strip()!r}")
            checks.append(match.groupdict())
        return cls(checks)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for check in self._checks:
            if check["absent"] is not None:
                if check["absent"] in labels:
                    return False
                continue
            key = check["key"]
            if check["op"] is not None:
                equal = labels.get(key) == check["value"]
                if (check["op"] == "!=") == equal:
                    return False
            elif check["setop"] is not None:
                values = {v.strip() for v in check["values"].split(",")}
                inside = key in labels and labels[key] in values
                if (check["setop"] == "in") != inside:
                    return False
            elif key not in labels:
                return False
        return True


@contextlib.asynccontextmanager
async def registered(cluster: LocalCluster, *, lock_wait: float = 300.0
                     ) -> AsyncIterator[FakeExternalMetrics]:
    """The fake, registered as the cluster's external metrics API while the block runs.

    The APIService's name is fixed by its group and version, so it is cluster-wide: a Lease
    in kube-system is held meanwhile, and a second test process waits for it. Trust for the
    front proxy is read from ``kube-system/extension-apiserver-authentication``, as a real
    adapter reads it.
    """
    await _lock(cluster, wait=lock_wait)
    try:
        found = await cluster.akubectl("get", "configmap", "-n", "kube-system",
                                       "extension-apiserver-authentication", "-o", "json")
        data = json.loads(found.stdout).get("data") or {}
        allowed = tuple(json.loads(data.get("requestheader-allowed-names") or "[]"))
        users = json.loads(data.get("requestheader-username-headers") or "[]")
        groups = json.loads(data.get("requestheader-group-headers") or "[]")
        fake = FakeExternalMetrics(
            front_proxy_ca=data.get("requestheader-client-ca-file") or None,
            allowed_names=allowed,
            user_header=users[0] if users else "X-Remote-User",
            group_header=groups[0] if groups else "X-Remote-Group",
        )
        async with fake:
            await _apply(cluster, fake)
            try:
                await cluster.akubectl("wait", "--for=condition=Available", "apiservice",
                                       API_SERVICE, "--timeout=60s")
                yield fake
            finally:
                await cluster.akubectl("delete", "apiservice", API_SERVICE,
                                       "--ignore-not-found", check=False)
                await cluster.akubectl("delete", "namespace", SERVICE_NAMESPACE,
                                       "--wait=false", "--ignore-not-found", check=False)
    finally:
        await cluster.akubectl("delete", "lease", "-n", "kube-system", LOCK_NAME,
                               "--ignore-not-found", check=False)


async def _apply(cluster: LocalCluster, fake: FakeExternalMetrics) -> None:
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVICE_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE},
         # ExternalName: the aggregator dials <externalName>:<APIService port> and checks the
         # certificate for <service>.<namespace>.svc; no kube-proxy is needed.
         "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": API_SERVICE, "labels": {"app.kubernetes.io/managed-by": LOCK_NAME}},
         "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100,
                  "versionPriority": 100,
                  "service": {"namespace": SERVICE_NAMESPACE, "name": SERVICE_NAME,
                              "port": fake.port},
                  "caBundle": base64.b64encode(fake.ca_pem).decode()}},
    ]
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(listing))


async def _lock(cluster: LocalCluster, *, wait: float) -> None:
    """Creates the Lease; while another process holds it, waits (a Lease older than
    :data:`STALE_LOCK` seconds is from a process that died holding it, and is removed)."""
    lease = json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": LOCK_NAME, "namespace": "kube-system"},
                        "spec": {"holderIdentity": f"pid-{os.getpid()}"}})
    deadline = time.monotonic() + wait
    while True:
        result = await cluster.akubectl("create", "-f", "-", input=lease, check=False)
        if result.returncode == 0:
            return
        held = await cluster.akubectl("get", "lease", "-n", "kube-system", LOCK_NAME,
                                      "-o", "jsonpath={.metadata.creationTimestamp}", check=False)
        since = held.stdout.strip()
        if since:
            created = datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
            age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
            if age > STALE_LOCK:
                await cluster.akubectl("delete", "lease", "-n", "kube-system", LOCK_NAME,
                                       "--ignore-not-found", check=False)
                continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"Lease kube-system/{LOCK_NAME} still held after {wait}s "
                               "(another test process has the external metrics APIService)")
        await asyncio.sleep(2)
