"""Kubernetes external metrics API: a metric value through the API server, as Flagger reads one.

``provider.type: externalmetrics`` asks the aggregated API ``external.metrics.k8s.io/v1beta1``
(served by an adapter such as KEDA's or Datadog's cluster agent, registered with an APIService)
for one metric, as Flagger's ``providers/externalmetrics.go`` does:

- the query is ``<namespace>/<metricName>?labelSelector=<url-encoded selector>``; only the
  metric name is required, the namespace defaults to ``default`` (``metric`` and ``/metric``
  are both the ``default`` namespace's); the selector is parsed as Kubernetes label selectors
  are (``a=b,c in (d,e),!f``) and sent in its canonical form (requirements sorted by key), so
  a malformed one fails here, before any request;
- the request is ``GET <host>/apis/external.metrics.k8s.io/v1beta1/namespaces/<namespace>/
  <metricName>[?labelSelector=<selector>]``; the answer is an ``ExternalMetricValueList``
  whose **first** item's ``value`` (a Kubernetes quantity such as ``250m``, ``1.5k``,
  ``2Ki``, ``1e3``) is the result, as Flagger's ``AsApproximateFloat64``; further items are
  ignored (logged at debug level); no item: :class:`~flaggerpy.errors.NoValuesFoundError`
  ("no external metrics found: no values found");
- the server is the controller's own API server with the controller's credentials (the
  ``kube`` keyword, :class:`flaggerpy.sdk.ApiServerAccess`: Flagger's in-cluster rest config,
  or ``-kubeconfig``/``-master`` outside a cluster); ``provider.address`` replaces the host
  (the CA and client certificate stay, as in Flagger's rest config copy);
  ``insecureSkipVerify`` stops verifying the server's certificate; the ``secretRef``'s
  ``token`` (optional) is sent as ``Authorization: Bearer <token>`` instead of the
  controller's credentials (its token or client certificate: the API server would
  authenticate a certificate first);
- an API error answers a ``Status``: its ``message`` is the error
  ("error querying external metrics API: ..."), a :class:`~flaggerpy.errors.MetricsError`
  for 4xx, :class:`~flaggerpy.errors.ProviderOfflineError` for 5xx after the retries of
  :mod:`flaggerpy.metrics._http` (the aggregator's 503 when the adapter is down);
- :meth:`ExternalMetricsProvider.is_online` lists ``kube-system/dummy-metric``: any answer
  that is not an error (an empty list included) means online.

Factory signature (the ``flaggerpy.metrics`` entry point ``externalmetrics``)::

    ExternalMetricsProvider(
        *,
        address: str | None,                       # spec.provider.address: another API server
        secret: Mapping[str, bytes] | None = None,  # Secret data: optional "token"
        headers=None, region=None, interval="",     # unused, accepted with every provider
        insecure_skip_verify: bool = False,         # spec.provider.insecureSkipVerify
        variant: str = "",                           # none accepted
        kube: ApiServerAccess | None = None,        # the controller's API server (the analysis)
        timeout: float = 5.0, attempts: int = 3, backoff: float = 0.25,
    )

Never logs or repeats the token or the controller's credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider, MetricsProviderFactory
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.kube.config import ApiServerAccess
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPProvider,
    endpoint_of,
    excerpt,
)

__all__ = [
    "API_PATH",
    "ExternalMetricsProvider",
    "ExternalMetricsQuery",
    "parse_label_selector",
    "parse_quantity",
    "parse_query",
]

log = structlog.get_logger(__name__)

API_PATH: Final = "/apis/external.metrics.k8s.io/v1beta1"
"""Where the external metrics API is served, under the API server's URL."""

ONLINE_NAMESPACE: Final = "kube-system"
ONLINE_METRIC: Final = "dummy-metric"
_QUERY_FORMAT: Final = "<namespace>/<metricName>?labelSelector=<urlencoded label selectors>"


@dataclass(frozen=True, slots=True)
class ExternalMetricsQuery:
    """A parsed query: where the metric is and its canonical label selector ("" for all)."""

    namespace: str
    metric: str
    selector: str


def parse_query(query: str) -> ExternalMetricsQuery:
    """``<namespace>/<metricName>?labelSelector=...`` as Flagger's ``parseExternalMetricsQuery``."""
    try:
        parts = urlsplit("dummy:///" + query.strip())
    except ValueError as exc:
        raise MetricsError(f"error parsing metric query: malformed query string, expected "
                           f"{_QUERY_FORMAT}, got {query}") from exc
    segments = unquote(parts.path).removeprefix("/").split("/")
    if len(segments) > 2:
        raise MetricsError(f"error parsing metric query: malformed query string, too many "
                           f"slashes, expected {_QUERY_FORMAT}, got {query}")
    namespace = "default"
    if len(segments) == 2 and segments[0]:
        namespace = segments[0]
    metric = segments[-1]
    if not metric:
        raise MetricsError("error parsing metric query: metric name cannot be empty")
    raw = (parse_qs(parts.query, keep_blank_values=True).get("labelSelector") or [""])[0]
    try:
        selector = parse_label_selector(raw)
    except ValueError as exc:
        raise MetricsError(f"error parsing metric query: error parsing label selector from "
                           f"string {raw}: {exc}") from exc
    return ExternalMetricsQuery(namespace=namespace, metric=metric, selector=selector)


# --- label selectors (apimachinery's labels.Parse, then String()) -------------------------------

_TOKEN: Final = re.compile(r"\s*(!=|==|=|!|\(|\)|,|>|<|[^\s!=(),<>]+)")
_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY: Final = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$")
_VALUE: Final = re.compile(rf"^({_NAME})?$")
_OPERATORS: Final = {"=", "==", "!=", ">", "<"}


def parse_label_selector(text: str) -> str:
    """A label selector in canonical form (sorted by key, sets sorted), or ValueError.

    The grammar is Kubernetes': ``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``,
    ``key in (v1,v2)``, ``key notin (v1)``, ``key>1``, ``key<1``, joined by commas.
    """
    tokens = [m.group(1) for m in _TOKEN.finditer(text)]
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise ValueError(f"unable to parse requirement: {text!r}")
    if not tokens:
        return ""
    requirements: list[tuple[str, str]] = []
    position = 0

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise ValueError("unexpected end of selector")
        position += 1
        return tokens[position - 1]

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    while True:
        token = take()
        if token == "!":
            key = _checked_key(take())
            requirements.append((key, f"!{key}"))
        else:
            key = _checked_key(token)
            operator = peek()
            if operator is None or operator == ",":
                requirements.append((key, key))
            elif operator in ("in", "notin"):
                take()
                if take() != "(":
                    raise ValueError(f"found '{tokens[position - 1]}', expected: '('")
                values: set[str] = set()
                while True:
                    item = take()
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    values.add(_checked_value(item))
                if not values:
                    raise ValueError("for 'in', 'notin' operators, values set can't be empty")
                requirements.append((key, f"{key} {operator} ({','.join(sorted(values))})"))
            elif operator in _OPERATORS:
                take()
                following = peek()
                value = "" if following in (None, ",") else _checked_value(take())
                if operator in (">", "<") and not re.fullmatch(r"-?[0-9]+", value):
                    raise ValueError(f"for 'Gt', 'Lt' operators, the value must be an integer: "
                                     f"{value!r}")
                requirements.append((key, f"{key}{operator}{value}"))
            else:
                raise ValueError(f"found '{operator}', expected: in, notin, =, ==, !=, gt, lt")
        following = peek()
        if following is None:
            break
        if take() != ",":
            raise ValueError(f"found '{following}', expected: ',' or 'end of string'")
    requirements.sort(key=lambda requirement: requirement[0])
    return ",".join(text for _, text in requirements)


def _checked_key(key: str) -> str:
    if len(key.rsplit("/", 1)[-1]) > 63 or not _KEY.match(key):
        raise ValueError(f"invalid label key {key!r}")
    return key


def _checked_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise ValueError(f"invalid label value: {value!r}")
    return value


# --- quantities (apimachinery's resource.Quantity) ----------------------------------------------

_QUANTITY: Final = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]*|[eE][+-]?[0-9]+)$")
_SUFFIXES: Final = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``250m``, ``1.5k``, ``2Ki``, ``1e3``, ``-4``) as a float."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression: {text!r}")
    number, suffix = match.groups()
    try:
        exponent = suffix[:1] in ("e", "E")
        scale = Decimal(10) ** int(suffix[1:]) if exponent else _SUFFIXES[suffix]
        return float(Decimal(number) * scale)
    except (KeyError, InvalidOperation, ValueError):
        raise ValueError(f"unable to parse quantity's suffix: {text!r}") from None


# --- the provider ------------------------------------------------------------------------------


class ExternalMetricsProvider(HTTPProvider):
    """Reads metric values from the external metrics API of the controller's API server."""

    provider_type = "externalmetrics"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,
            headers: Mapping[str, Sequence[str]] | None = None,  # unused, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # unused
            interval: str = "",  # unused: the adapter decides the window
            variant: str = "",
            kube: ApiServerAccess | None = None,
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if variant:
            raise MetricsError(f"externalmetrics takes no variant, got {variant!r}")
        host = (address or "").strip().rstrip("/")
        if host:
            parts = urlsplit(host)
            try:
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
                _ = parts.port
            except ValueError:
                valid = False
            if not valid:
                shown = endpoint_of(host)
                raise MetricsError(f"externalmetrics address {shown} is not a valid URL")
        elif kube is not None:
            host = kube.host
        else:
            raise MetricsError("externalmetrics has no API server: no address, and not given "
                               "the controller's")
        token = _token(secret)
        ssl_context = None
        if kube is not None:
            # A token from the Secret is the caller, as in Flagger's in-cluster config (whose
            # only credential is the token it replaces): the controller's certificate stays out.
            ssl_context = kube.ssl_context(verify=not insecure_skip_verify,
                                           client_certificate=not token)
        super().__init__(
            endpoint=endpoint_of(host), insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff, ssl_context=ssl_context,
        )
        self._base = host + API_PATH
        self._kube = kube
        self._token = token

    async def run_query(self, query: str) -> float:
        """The first item's value; see the module docstring."""
        parsed = parse_query(query)
        items = await self._list(parsed)
        if not items:
            raise NoValuesFoundError("no external metrics found: no values found")
        if len(items) > 1:
            log.debug("external_metrics_several_items", metric=parsed.metric,
                      namespace=parsed.namespace, items=len(items))
        first = items[0]
        raw = first.get("value") if isinstance(first, Mapping) else None
        if not isinstance(raw, str):
            raise MetricsError("error querying external metrics API: an item has no value")
        try:
            return parse_quantity(raw)
        except ValueError as exc:
            raise MetricsError(f"error querying external metrics API: {exc}") from exc

    async def is_online(self) -> bool:
        """True when listing ``kube-system/dummy-metric`` does not fail, as in Flagger."""
        try:
            await self._list(ExternalMetricsQuery(ONLINE_NAMESPACE, ONLINE_METRIC, ""))
        except MetricsError as exc:
            raise ProviderOfflineError(f"external metrics service unavailable: {exc}") from exc
        return True

    async def _list(self, query: ExternalMetricsQuery) -> list[Any]:
        url = (f"{self._base}/namespaces/{quote(query.namespace, safe='')}/"
               f"{quote(query.metric, safe='')}")
        if query.selector:
            url += f"?labelSelector={quote_plus(query.selector, safe='')}"
        headers = [("Accept", "application/json")]
        authorization = f"Bearer {self._token}" if self._token else None
        if authorization is None and self._kube is not None:
            authorization = await self._kube.authorization()
        if authorization:
            headers.append(("Authorization", authorization))
        answer = await self.request("GET", yarl.URL(url, encoded=True), headers=headers)
        try:
            payload = json.loads(answer.body)
        except ValueError:
            payload = None
        if answer.status >= 400:
            message = _status_message(payload) or excerpt(answer.body) or f"HTTP {answer.status}"
            error = ProviderOfflineError if answer.status >= 500 else MetricsError
            raise error(f"error querying external metrics API: {message}")
        if not isinstance(payload, Mapping) or not isinstance(payload.get("items"), list | None):
            raise MetricsError("error querying external metrics API: the answer is not an "
                               f"ExternalMetricValueList: {excerpt(answer.body)}")
        return list(payload.get("items") or [])


def _status_message(payload: object) -> str:
    """A ``Status`` answer's message, as client-go reports an API error."""
    if isinstance(payload, Mapping) and payload.get("kind") == "Status":
        return str(payload.get("message") or payload.get("reason") or "")
    return ""


def _token(secret: Mapping[str, bytes] | None) -> str:
    value = (secret or {}).get("token")
    if value is None:
        return ""
    token = value if isinstance(value, str) else value.decode("utf-8", errors="replace")
    if "\r" in token or "\n" in token:
        raise MetricsError("externalmetrics credentials token holds a line break, which "
                           "cannot be sent in a header")
    return token


_: type[MetricsProvider] = ExternalMetricsProvider
_factory: MetricsProviderFactory = ExternalMetricsProvider
