"""Keptn: a KeptnMetric's value, or the verdict of a Keptn Analysis, read through the API server.

``provider.type: keptn`` reads Keptn's custom resources (``metrics.keptn.sh/v1beta1``, the
version Flagger's ``providers/keptn.go`` uses) on the controller's own API server, with the
controller's credentials (the ``kube`` keyword, :class:`flaggerpy.sdk.ApiServerAccess`: its
in-cluster service account, or ``-kubeconfig``/``-master``). Keptn's metrics operator does the
querying; Flagger, and this provider, only read what it wrote.

The query (lower-cased, a trailing newline and surrounding spaces dropped, then split at ``/``)::

    <keptnmetric|analysis>/<namespace>/<name>[/<duration>[/<k=v;k2=v2>]]

``keptnmetrics`` and ``analyses`` are accepted too. Fewer than three parts, or another kind, is
a :class:`~flaggerpy.errors.MetricsError` before any request, in Flagger's words.

- ``keptnmetric``: ``GET .../namespaces/<namespace>/keptnmetrics/<name>``; the result is its
  ``status.value`` (a string, parsed as Go's ``strconv.ParseFloat`` does). A KeptnMetric
  without a ``status.value`` string (Keptn has not fetched it yet) is an error, as in Flagger
  ("could not retrieve KeptnMetric - no value found in resource ..."), not "no values found".
- ``analysis``: creates an ``Analysis`` ``<name>-<6 hex chars>`` in the namespace, with
  ``spec: {analysisDefinition: {name}, timeframe: {recent: <duration, default 1m>},
  args: {k: v, ...}}`` (only ``k=v`` pairs with exactly one ``=`` are kept), then reads it back
  every :attr:`KeptnProvider.poll_interval` (1 s, Flagger's) until ``status.state`` is
  ``Completed`` with a boolean ``status.pass``: 1 if it passed, 0 if not. Creating it and
  waiting are bounded by :attr:`KeptnProvider.analysis_timeout` (10 s, Flagger's): after that,
  "encountered timeout while waiting for Keptn Analysis <ns>/<name> to be finished". The
  Analysis is deleted in every outcome (a value, an error, the timeout, a cancelled tick); the
  deletion is shielded from a cancellation, so a cancelled tick still removes it, and
  :meth:`KeptnProvider.aclose` waits for deletions under way. A failed deletion is logged, as
  Flagger logs it; it never changes the result.
- an API error (``Status`` answer) is worded as client-go's: "could not retrieve KeptnMetric
  <ns>/<name>: keptnmetrics.metrics.keptn.sh "<name>" not found". A 4xx is a
  :class:`~flaggerpy.errors.MetricsError`, a 5xx after the retries of
  :mod:`flaggerpy.metrics._http` a :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`KeptnProvider.is_online` is always true (Flagger's).

Factory signature (the ``flaggerpy.metrics`` entry point ``keptn``)::

    KeptnProvider(
        *,
        address=None, secret=None, headers=None, insecure_skip_verify=False,  # unused, as in
        region=None, interval="",                 # Flagger: the API server is the controller's
        variant: str = "",                         # none accepted
        kube: ApiServerAccess | None = None,       # the controller's API server (required)
        timeout: float = 5.0, attempts: int = 3, backoff: float = 0.25,  # per request
        analysis_timeout: float = 10.0, poll_interval: float = 1.0,
    )

RBAC: ``metrics.keptn.sh`` ``keptnmetrics`` get; ``analyses`` create, get, delete. Never logs
or repeats the controller's credentials.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import structlog
import yarl

from flaggerpy import sdk
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPAnswer,
    HTTPProvider,
    endpoint_of,
    excerpt,
)

__all__ = ["API_PATH", "KeptnProvider", "KeptnQuery", "parse_query"]

log = structlog.get_logger(__name__)

GROUP: Final = "metrics.keptn.sh"
VERSION: Final = "v1beta1"
API_PATH: Final = f"/apis/{GROUP}/{VERSION}"
"""Where Keptn's metrics resources are served, under the API server's URL."""

KEPTN_METRICS: Final = "keptnmetrics"
ANALYSES: Final = "analyses"
DEFAULT_DURATION: Final = "1m"
ANALYSIS_TIMEOUT: Final = 10.0
"""Seconds to create an Analysis and see it completed: Flagger's."""
POLL_INTERVAL: Final = 1.0
"""Seconds between two reads of an Analysis: Flagger's."""

_FORMAT_ERROR: Final = ("unexpected query format. query must be in the format "
                        "<keptnmetric|analysis>/<namespace>/<resourceName>/<duration>/<arguments>")
_KIND_ERROR: Final = ("unexpected resource kind provided in the query. must be one of: "
                      "['keptnmetric', 'analysis']")
_KINDS: Final[Mapping[str, str]] = {
    "keptnmetric": KEPTN_METRICS, KEPTN_METRICS: KEPTN_METRICS,
    "analysis": ANALYSES, ANALYSES: ANALYSES,
}


@dataclass(frozen=True, slots=True)
class KeptnQuery:
    """A parsed query: which resource, where, and for an Analysis its timeframe and args."""

    resource: Literal["keptnmetrics", "analyses"]
    namespace: str
    name: str
    duration: str = DEFAULT_DURATION
    args: Mapping[str, str] = field(default_factory=dict)


def parse_query(query: str) -> KeptnQuery:
    """``<keptnmetric|analysis>/<namespace>/<name>[/<duration>[/<args>]]``, as Flagger reads it."""
    parts = query.lower().removesuffix("\n").strip().split("/")
    if len(parts) < 3:
        raise sdk.MetricsError(_FORMAT_ERROR)
    resource = _KINDS.get(parts[0])
    if resource is None:
        raise sdk.MetricsError(_KIND_ERROR)
    namespace, name = parts[1], parts[2]
    if not namespace or not name:
        raise sdk.MetricsError(f"{_FORMAT_ERROR}: namespace and resource name cannot be empty")
    if resource == KEPTN_METRICS:
        return KeptnQuery(KEPTN_METRICS, namespace, name)
    duration = parts[3] if len(parts) >= 4 else DEFAULT_DURATION
    args: dict[str, str] = {}
    if len(parts) >= 5:
        for pair in parts[4].split(";"):
            key_value = pair.split("=")
            if len(key_value) == 2:
                args[key_value[0]] = key_value[1]
    return KeptnQuery(ANALYSES, namespace, name, duration, args)


_GO_FLOAT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE)
_GO_HEX_FLOAT: Final = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")


def parse_go_float(text: str) -> float:
    """``text`` as Go's ``strconv.ParseFloat(text, 64)``: no spaces, no underscores, no overflow."""
    if _GO_HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text)
    elif _GO_FLOAT.fullmatch(text):
        value = float(text)
    else:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    if math.isinf(value) and "inf" not in text.lower():
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": value out of range')
    return value


class KeptnProvider(HTTPProvider):
    """Reads KeptnMetrics and runs Keptn Analyses on the controller's API server."""

    provider_type = "keptn"

    def __init__(
            self,
            *,
            address: str | None = None,  # unused: Flagger asks the controller's API server
            secret: Mapping[str, bytes] | None = None,  # unused
            headers: Mapping[str, Sequence[str]] | None = None,  # unused
            insecure_skip_verify: bool = False,  # unused: the controller's TLS settings apply
            region: str | None = None,  # unused
            interval: str = "",  # unused: the query carries an Analysis's timeframe
            variant: str = "",
            kube: sdk.ApiServerAccess | None = None,
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
            analysis_timeout: float = ANALYSIS_TIMEOUT,
            poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if variant:
            raise sdk.MetricsError(f"keptn takes no variant, got {variant!r}")
        if kube is None:
            raise sdk.MetricsError("could not initialize KeptnProvider: no KubeConfig provided")
        if analysis_timeout <= 0 or poll_interval <= 0:
            raise ValueError("analysis_timeout and poll_interval must be positive")
        super().__init__(
            endpoint=endpoint_of(kube.host), timeout=timeout, attempts=attempts,
            backoff=backoff, ssl_context=kube.ssl_context(),
        )
        self._base = kube.host + API_PATH
        self._kube = kube
        self.analysis_timeout = analysis_timeout
        """Seconds an Analysis may take, from its creation to ``Completed``."""
        self.poll_interval = poll_interval
        """Seconds between two reads of an Analysis."""
        self._deletions: set[asyncio.Task[None]] = set()

    async def run_query(self, query: str) -> float:
        """A KeptnMetric's value, or 1/0 for a passed/failed Analysis; see the module docstring."""
        parsed = parse_query(query)
        if parsed.resource == KEPTN_METRICS:
            return await self._keptn_metric(parsed)
        return await self._analysis(parsed)

    async def is_online(self) -> bool:
        """Always true, as in Flagger: Keptn's operator is not asked."""
        return True

    async def aclose(self) -> None:
        """Waits for the Analysis deletions under way, then closes the connection pool."""
        if self._deletions:
            await asyncio.gather(*self._deletions, return_exceptions=True)
        await super().aclose()

    # -- KeptnMetric ----------------------------------------------------------------------------

    async def _keptn_metric(self, query: KeptnQuery) -> float:
        where = f"{query.namespace}/{query.name}"
        answer = await self._send("GET", self._url(query.namespace, KEPTN_METRICS, query.name))
        body = _object(answer, failure=f"could not retrieve KeptnMetric {where}")
        status = body.get("status")
        value = status.get("value") if isinstance(status, Mapping) else None
        if not isinstance(value, str):
            raise sdk.MetricsError(
                f"could not retrieve KeptnMetric - no value found in resource {where}")
        try:
            return parse_go_float(value)
        except ValueError as exc:
            raise sdk.MetricsError(
                f"could not parse value of KeptnMetric {where} to float: {exc}") from exc

    # -- Analysis -------------------------------------------------------------------------------

    async def _analysis(self, query: KeptnQuery) -> float:
        where = f"{query.namespace}/{query.name}"
        name = f"{query.name}-{uuid.uuid4().hex[:6]}"
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Analysis",
            "metadata": {"name": name, "namespace": query.namespace},
            "spec": {"analysisDefinition": {"name": query.name},
                     "timeframe": {"recent": query.duration},
                     "args": dict(query.args)},
        }
        sent = False
        try:
            async with asyncio.timeout(self.analysis_timeout):
                sent = True
                await self._create(manifest, failure=f"could not create Keptn Analysis {where}")
                while True:
                    await asyncio.sleep(self.poll_interval)
                    passed = await self._verdict(
                        query.namespace, name,
                        failure=f"could not check status of created Keptn Analysis {where}")
                    if passed is not None:
                        return 1.0 if passed else 0.0
        except TimeoutError:
            raise sdk.MetricsError(f"encountered timeout while waiting for Keptn Analysis "
                                   f"{where} to be finished") from None
        finally:
            if sent:
                await self._delete_shielded(query.namespace, name)

    async def _create(self, manifest: Mapping[str, Any], *, failure: str) -> None:
        namespace = manifest["metadata"]["namespace"]
        answer = await self._send("POST", self._url(namespace, ANALYSES),
                                  data=json.dumps(manifest).encode())
        if answer.status == 409:
            # Our name has a random suffix: an Analysis already there is this one, created by
            # an attempt whose answer was lost before a retry.
            return
        _object(answer, failure=failure)

    async def _verdict(self, namespace: str, name: str, *, failure: str) -> bool | None:
        """The Analysis's ``status.pass`` once ``status.state`` is Completed, else None."""
        body = _object(await self._send("GET", self._url(namespace, ANALYSES, name)),
                       failure=failure)
        status = body.get("status")
        if not isinstance(status, Mapping) or status.get("state") != "Completed":
            return None
        passed = status.get("pass")
        if passed is None:
            return None  # Flagger reads again until the verdict is there
        if not isinstance(passed, bool):
            raise sdk.MetricsError(f"{failure}: .status.pass accessor error: {passed!r} is of "
                                   f"the type {type(passed).__name__}, expected bool")
        return passed

    async def _delete_shielded(self, namespace: str, name: str) -> None:
        """Deletes the Analysis; a cancellation of the caller does not stop the deletion."""
        task = asyncio.create_task(self._delete(namespace, name))
        self._deletions.add(task)
        task.add_done_callback(self._deletions.discard)
        await asyncio.shield(task)

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            answer = await self._send("DELETE", self._url(namespace, ANALYSES, name))
        except sdk.MetricsError as exc:
            log.error("keptn_analysis_not_deleted", analysis=f"{namespace}/{name}",
                      error=str(exc))
            return
        if answer.status >= 400 and answer.status != 404:
            log.error("keptn_analysis_not_deleted", analysis=f"{namespace}/{name}",
                      error=_message(answer))

    # -- requests -------------------------------------------------------------------------------

    def _url(self, namespace: str, resource: str, name: str = "") -> yarl.URL:
        url = f"{self._base}/namespaces/{quote(namespace, safe='')}/{resource}"
        if name:
            url += f"/{quote(name, safe='')}"
        return yarl.URL(url, encoded=True)

    async def _send(self, method: str, url: yarl.URL, *, data: bytes | None = None) -> HTTPAnswer:
        headers = [("Accept", "application/json")]
        if data is not None:
            headers.append(("Content-Type", "application/json"))
        authorization = await self._kube.authorization()
        if authorization:
            headers.append(("Authorization", authorization))
        return await self.request(method, url, headers=headers, data=data)


def _object(answer: HTTPAnswer, *, failure: str) -> Mapping[str, Any]:
    """The answer's object, or the API error as ``<failure>: <Status message>``."""
    if answer.status >= 400:
        error = sdk.ProviderOfflineError if answer.status >= 500 else sdk.MetricsError
        raise error(f"{failure}: {_message(answer)}")
    try:
        payload = json.loads(answer.body)
    except ValueError:
        payload = None
    if not isinstance(payload, Mapping):
        raise sdk.MetricsError(f"{failure}: the answer is not an object: {excerpt(answer.body)}")
    return payload


def _message(answer: HTTPAnswer) -> str:
    """A ``Status`` answer's message, as client-go reports an API error."""
    try:
        payload = json.loads(answer.body)
    except ValueError:
        payload = None
    if isinstance(payload, Mapping) and payload.get("kind") == "Status":
        text = str(payload.get("message") or payload.get("reason") or "")
        if text:
            return text
    return excerpt(answer.body) or f"HTTP {answer.status}"


_: type[sdk.MetricsProvider] = KeptnProvider
_factory: sdk.MetricsProviderFactory = KeptnProvider
