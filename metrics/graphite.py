"""Graphite: render API queries, as Flagger's ``providers/graphite.go`` sends them.

This provider answers MetricTemplates with ``provider.type: graphite``.

The request (spec §4.4): ``GET <address>/render?<query>&format=json``. The MetricTemplate's
query is a raw query string, such as ``target=sumSeries(app.*.errors)&from=-2min``; runs of
whitespace in it (newlines included) become one space first, as in Flagger. Then the query is
read and written again exactly as Go's ``url.ParseQuery`` and ``url.Values.Encode`` do, because
that is what reaches Graphite under Flagger:

- parameters are sent sorted by name (the values of one name keep their order), each name and
  value percent-encoded anew (``sumSeries(a.*)`` goes as ``sumSeries%28a.%2A%29``, a space as
  ``+``), and ``format=json`` replaces any ``format`` the query had;
- a pair with a ``;`` in it or a malformed ``%`` escape is dropped (logged at warning level):
  a tagged series such as ``app.latency;env=prod`` must be written ``app.latency%3Benv=prod``;
  a ``#`` ends the query (Go reads the rest as the URL's fragment): write ``%23``.

The address may have a path (``http://gateway/graphite``): ``/render`` is appended to it. From
the ``secretRef``'s data, ``username`` and ``password`` (both required when there is a
``secretRef``) are sent as basic auth when both are non-empty; without them, ``user:password@``
in the address is sent as basic auth, as Go's client does. ``provider.headers`` are not sent
(Flagger does not either); ``insecureSkipVerify`` is honoured.

The answer, a JSON list of ``{"target": ..., "datapoints": [[value, timestamp], ...]}``:

- the **last non-null value over all targets**, in the order Graphite lists them (Flagger's
  loop). Several targets with values are logged at warning level, since only the last counts;
  a value may be a number or a numeric string; NaN counts as null;
- no target, or only null values: :class:`~flaggerpy.errors.NoValuesFoundError` ("no values
  found"). Graphite answers ``[]`` for a target that matches no series;
- an answer that is not such a list: :class:`~flaggerpy.errors.MetricsError` ``error
  unmarshaling result: ...``;
- HTTP 4xx (Graphite's ``Invalid parameters (...)`` for an unknown function or a bad ``from``):
  :class:`~flaggerpy.errors.MetricsError` ``error response: <body>``; 5xx (after the retries of
  :mod:`flaggerpy.metrics._http`) or no answer at all:
  :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`GraphiteProvider.is_online` runs ``target=test``: any answer but an error is online, "no
values" included.

The factory signature is the family's (see :mod:`flaggerpy.metrics.prometheus`); ``region``,
``interval`` and ``headers`` are not used (the query has its own ``from``), and a variant
(``graphite:<something>``) is refused. Never logs or repeats a credential.
"""

from __future__ import annotations

import base64
import json
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote_plus, unquote, unquote_to_bytes, urlsplit

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider, MetricsProviderFactory
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPProvider,
    api_base,
    excerpt,
    secret_text,
)
from flaggerpy.metrics.prometheus import collapse_whitespace

__all__ = ["ONLINE_QUERY", "GraphiteProvider", "render_parameters"]

log = structlog.get_logger(__name__)

ONLINE_QUERY: Final = "target=test"
"""What :meth:`GraphiteProvider.is_online` asks; "no values" is an answer too."""

_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def render_parameters(query: str) -> str:
    """The query string Flagger sends for ``query``: Go's ParseQuery, ``format=json``, Encode.

    Whitespace is collapsed first; see the module docstring for what is dropped and why.
    Raises MetricsError for a control character, which Go's ``url.Parse`` refuses.
    """
    # Flagger parses "./render?<query>" as a URL: whatever follows a "#" is its fragment.
    text = collapse_whitespace(query).partition("#")[0]
    if _CONTROL.search(text):
        raise MetricsError("url.Parse failed: net/url: invalid control character in URL")
    values: dict[bytes, list[bytes]] = {}
    for pair in text.split("&"):
        if ";" in pair:
            log.warning("graphite_query_pair_dropped", pair=pair,
                        reason="a ';' must be written %3B")
            continue
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name, value = _query_unescape(raw_name), _query_unescape(raw_value)
        if name is None or value is None:
            log.warning("graphite_query_pair_dropped", pair=pair,
                        reason="invalid % escape")
            continue
        values.setdefault(name, []).append(value)
    values[b"format"] = [b"json"]
    return "&".join(
        f"{quote_plus(name, safe='')}={quote_plus(value, safe='')}"
        for name in sorted(values) for value in values[name]
    )


def _query_unescape(text: str) -> bytes | None:
    """Go's ``url.QueryUnescape``: ``+`` is a space; None for a ``%`` without two hex digits."""
    if _BAD_ESCAPE.search(text):
        return None
    return unquote_to_bytes(text.replace("+", " "))


class GraphiteProvider(HTTPProvider):
    """Runs render API queries against one graphite-web (or a compatible API)."""

    provider_type = "graphite"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,  # None: no secretRef
            headers: Mapping[str, Sequence[str]] | None = None,  # not sent, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # accepted with every provider; Graphite has none
            interval: str = "",  # accepted with every provider; the query has its own from
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if variant:
            raise MetricsError(f"graphite takes no variant, got graphite:{variant}")
        base, endpoint = api_base(address or "", provider="graphite")
        super().__init__(
            endpoint=endpoint, insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        # "/render" after the address's own path, cleaned as Go's path.Join does.
        parts = urlsplit(base)
        path = posixpath.normpath(posixpath.join("/", parts.path.lstrip("/"), "render"))
        self._render_url = f"{parts.scheme}://{parts.netloc}{path}"
        authorization = ""
        username, password = _credentials(secret)
        if username and password:
            authorization = _basic(username, password)
        else:
            userinfo = urlsplit((address or "").strip())
            if userinfo.username is not None:
                # Go's client turns userinfo in the URL into basic auth. The URL we send has
                # none, so the password never shows up in a log line or an error.
                authorization = _basic(unquote(userinfo.username),
                                       unquote(userinfo.password or ""))
        self._headers: Final = (("Authorization", authorization),) if authorization else ()

    async def run_query(self, query: str) -> float:
        """The last non-null value the render API answers; see the module docstring."""
        url = yarl.URL(f"{self._render_url}?{render_parameters(query)}", encoded=True)
        answer = await self.request("GET", url, headers=self._headers)
        if answer.status >= 500:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        if answer.status >= 400:
            raise MetricsError(f"error response: {excerpt(answer.body)}")
        try:
            targets = json.loads(answer.body)
            value, with_values = _last_value(targets)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        if with_values > 1:
            log.warning("metrics_query_several_series", provider="graphite",
                        endpoint=self.endpoint, series=with_values)
        if value is None:
            raise NoValuesFoundError("no values found")
        return value

    async def is_online(self) -> bool:
        """True when ``target=test`` gets an answer, values or none.

        Raises :class:`ProviderOfflineError` with the reason when it does not answer at all
        (or answers with an error), so that the caller can report why.
        """
        try:
            await self.run_query(ONLINE_QUERY)
        except NoValuesFoundError:
            return True
        except MetricsError as exc:
            raise ProviderOfflineError(f"running query failed: {exc}") from exc
        return True


def _credentials(secret: Mapping[str, bytes] | None) -> tuple[str, str]:
    """``(username, password)`` from Secret data; a Secret must hold both keys."""
    if secret is None:
        return "", ""
    if "username" not in secret:
        raise MetricsError("graphite credentials does not contain a username")
    if "password" not in secret:
        raise MetricsError("graphite credentials does not contain a password")
    return secret_text(secret["username"]), secret_text(secret["password"])


def _basic(username: str, password: str) -> str:
    """Go's ``SetBasicAuth``: ``Basic base64(user:password)`` of the UTF-8 bytes."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _last_value(targets: object) -> tuple[float | None, int]:
    """The last non-null value over all targets, and how many targets had one.

    Raises ValueError for an answer Flagger's decoding refuses (not a list of targets, a point
    that is not ``[value, timestamp]``, a value that is not a number).
    """
    if targets is None:
        return None, 0
    if not isinstance(targets, list):
        raise ValueError(f"expected a list of targets, got {type(targets).__name__}")
    value: float | None = None
    with_values = 0
    for target in targets:
        if target is None:
            continue
        if not isinstance(target, dict):
            raise ValueError(f"expected a target object, got {type(target).__name__}")
        points = target.get("datapoints")
        if points is None:
            continue
        if not isinstance(points, list):
            raise ValueError("datapoints is not a list")
        found = False
        for point in points:
            number = _point_value(point)
            if number is not None:
                value, found = number, True
        with_values += found
    return value, with_values


def _point_value(point: object) -> float | None:
    """``[value, timestamp]``'s value; None for null or NaN."""
    if not isinstance(point, list) or len(point) != 2:
        raise ValueError(f"error unmarshaling data point: {point!r}")
    raw, timestamp = point
    if isinstance(timestamp, str):
        int(timestamp)  # Go's ParseInt: a timestamp string must be an integer
    elif timestamp is not None and (isinstance(timestamp, bool)
                                    or not isinstance(timestamp, int | float)):
        raise ValueError(f"error unmarshaling timestamp: {timestamp!r}")
    if raw is None:
        return None
    if isinstance(raw, str):
        if "_" in raw:  # Python's float() reads 1_000; Go's ParseFloat does not
            raise ValueError(f'strconv.ParseFloat: parsing "{raw}": invalid syntax')
        number = float(raw)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        number = float(raw)
    else:
        raise ValueError(f"error unmarshaling value: {raw!r}")
    return None if math.isnan(number) else number


_factory: MetricsProviderFactory = GraphiteProvider
_: type[MetricsProvider] = GraphiteProvider
