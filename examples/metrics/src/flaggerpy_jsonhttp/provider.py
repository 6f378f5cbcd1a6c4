"""The ``jsonhttp`` provider: one GET per query, one JSON number per answer.

The answer is read by :func:`read_value`, a pure function, so what counts as "no values" or
"several values" is tested without a server. :class:`JsonHttpProvider` does the HTTP: one
``aiohttp.ClientSession`` per provider (flaggerpy keeps a provider per MetricTemplate and closes
it with :meth:`~JsonHttpProvider.aclose` when the template changes), errors turned into the
SDK's ``MetricsError`` family, and the credential kept out of every message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from flaggerpy import sdk

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one query may take."""


def read_value(answer: Any) -> float:
    """The number a JSON answer carries: ``1.5``, ``{"value": 1.5}`` or ``[1.5]``.

    ``null``, ``{"value": null}``, ``[]`` or NaN is no value (``NoValuesFoundError``: flaggerpy
    reports "no values found" and, like Flagger, fails the check); a list of several numbers is
    several series (``MultipleValuesError``); anything else is a ``MetricsError``.
    """
    if isinstance(answer, Mapping):
        answer = answer.get("value")
    if isinstance(answer, list):
        if len(answer) > 1:
            raise sdk.MultipleValuesError(f"jsonhttp: the query returned {len(answer)} values")
        answer = answer[0] if answer else None
    if answer is None:
        raise sdk.NoValuesFoundError("jsonhttp: the query returned no value")
    if isinstance(answer, bool) or not isinstance(answer, int | float | str):
        raise sdk.MetricsError(f"jsonhttp: the answer is a {type(answer).__name__}, "
                               "not a number")
    try:
        value = float(answer)
    except ValueError as exc:
        raise sdk.MetricsError(f"jsonhttp: the answer {answer!r} is not a number") from exc
    if math.isnan(value):
        raise sdk.NoValuesFoundError("jsonhttp: the query returned NaN")
    return value


class JsonHttpProvider:
    """Runs queries against a JSON HTTP API: ``GET <address>?query=<query>``.

    Built by flaggerpy with the MetricTemplate's provider settings (the
    ``MetricsProviderFactory`` keywords): ``address`` is required; a ``token`` in the Secret
    named by ``secretRef`` is sent as a bearer token; ``headers`` are sent as they are;
    ``insecureSkipVerify`` turns off TLS verification. ``region`` and ``interval`` are not
    used. No retries: a failed query fails this check, and the next tick asks again.
    """

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,
            headers: Mapping[str, list[str]] | None = None,
            insecure_skip_verify: bool = False,
            region: str | None = None,
            interval: str = "",
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not address or urlsplit(address).scheme not in ("http", "https"):
            raise sdk.MetricsError("jsonhttp: spec.provider.address must be an http(s) URL")
        if variant:
            raise sdk.MetricsError(f"jsonhttp takes no variant, got 'jsonhttp:{variant}'")
        self._address = address
        self._headers = [(name, value) for name, values in (headers or {}).items()
                         for value in values]
        token = (secret or {}).get("token")
        if token:
            bearer = token.decode(errors="replace").strip()  # an error would quote the bytes
            self._headers.append(("Authorization", f"Bearer {bearer}"))
        self._verify_tls = not insecure_skip_verify
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"JsonHttpProvider({_endpoint(self._address)!r})"

    async def run_query(self, query: str) -> float:
        """The query's value; see :func:`read_value` for how the answer is read."""
        status, text = await self._get({"query": query})
        if status >= 400:
            raise sdk.ProviderOfflineError(
                f"jsonhttp {_endpoint(self._address)} answered HTTP {status}")
        try:
            answer = json.loads(text)
        except ValueError as exc:
            raise sdk.MetricsError(f"jsonhttp {_endpoint(self._address)} answered something "
                                   "that is not JSON") from exc
        return read_value(answer)

    async def is_online(self) -> bool:
        """Whether the API answers at all (a GET without a query, anything below 500)."""
        try:
            status, _ = await self._get({})
        except sdk.MetricsError:
            return False
        return status < 500

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JsonHttpProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _get(self, params: Mapping[str, str]) -> tuple[int, str]:
        """One GET: the status and the body. Transport failures are ``ProviderOfflineError``
        naming the endpoint only (the address may carry a credential)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(self._address, params=params, headers=self._headers,
                                         ssl=self._verify_tls) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise sdk.ProviderOfflineError(f"jsonhttp {_endpoint(self._address)} unreachable: "
                                           f"{type(exc).__name__}") from exc


def _endpoint(address: str) -> str:
    """The address without credentials or query: what messages and logs may show."""
    parts = urlsplit(address)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_factory: sdk.MetricsProviderFactory = JsonHttpProvider
_: type[sdk.MetricsProvider] = JsonHttpProvider
