"""The transport HTTP metric providers share: one session, a timeout, retries in one place.

A provider such as :class:`~flaggerpy.metrics.prometheus.PrometheusProvider` only says which
request to send and how to read the answer; this base sends it. What it does, and why:

- **One connection pool per provider.** Each provider owns one ``aiohttp.ClientSession``,
  opened on first use (inside the running event loop, where aiohttp wants it) and closed by
  :meth:`HTTPProvider.aclose` or ``async with``. The analysis caches providers per
  MetricTemplate and Secret version, so a tick reuses warm connections instead of paying a
  TLS handshake per query.
- **Retries, in this layer only** (design rule 4). A request is repeated, with jittered
  exponential backoff, when it got no answer (connection refused or reset, timeout) or a 5xx
  answer: the failures a second attempt may fix within one analysis tick. A 4xx answer (a bad
  query, wrong credentials) is final at once, and so is a TLS certificate that does not verify.
  Nothing above a provider retries a query; a check that still fails counts as a failed check
  and the next tick tries again.
- **A timeout per attempt.** Flagger gives each query 5 s; so do we, per attempt.
- **TLS verification can be turned off** per provider (``insecureSkipVerify``), as Flagger's
  ``InsecureSkipVerify`` transport does; nothing else changes.
- **Proxies from the environment.** ``HTTP(S)_PROXY``/``NO_PROXY`` apply (``trust_env``), as
  they do for Go's default transport under Flagger.
- **Credentials never leave in a message.** Errors, log lines and ``repr()`` name the endpoint
  as ``scheme://host:port`` only: an address may carry ``user:password@`` or a key in its path,
  and headers are never logged.

Library errors are converted here and chained (style.md §9.7): a request that never got an
answer raises :class:`~flaggerpy.errors.ProviderOfflineError`; an answer, whatever its status,
is returned as an :class:`HTTPAnswer` for the provider to judge.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Self
from urllib.parse import urlsplit

import aiohttp
import structlog
import tenacity
import yarl

from flaggerpy.errors import MetricsError, ProviderOfflineError

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF",
    "DEFAULT_TIMEOUT",
    "HTTPAnswer",
    "HTTPProvider",
    "api_base",
    "endpoint_of",
    "excerpt",
    "header_pairs",
    "header_secret",
    "secret_text",
]

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one attempt may take, connecting included: Flagger's query timeout."""

DEFAULT_ATTEMPTS: Final = 3
"""Requests per query at most: the first and two retries (no answer or 5xx only)."""

DEFAULT_BACKOFF: Final = 0.25
"""Seconds before the first retry, doubled for each further one, plus up to as much jitter."""

_BACKOFF_MAX: Final = 2.0
_EXCERPT_LIMIT: Final = 500  # characters of an answer's body kept in an error message

Headers = Iterable[tuple[str, str]]
"""Request headers as pairs, so one name may be sent several times (Go's ``http.Header``)."""


@dataclass(frozen=True, slots=True)
class HTTPAnswer:
    """What the server answered: status and body (decoded leniently as UTF-8)."""

    status: int
    body: str


class _NoAnswer(Exception):
    """An attempt that got no answer; carries the reason for the final error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HTTPProvider:
    """Base of the HTTP metric providers: sends requests, retries what is worth retrying.

    Subclasses set :attr:`provider_type` and call :meth:`request`. Constructor arguments are
    keyword-only and the same for every HTTP provider; the provider's own factory documents
    the rest.
    """

    provider_type: str = "http"
    """The MetricTemplate ``provider.type`` this class serves, for messages ("prometheus")."""

    def __init__(
            self,
            *,
            endpoint: str,  # scheme://host[:port] of the server, for messages only
            insecure_skip_verify: bool = False,
            timeout: float = DEFAULT_TIMEOUT,  # seconds, per attempt
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,  # seconds before the first retry
            ssl_context: ssl.SSLContext | None = None,  # a CA or client certificate of its own
    ) -> None:
        if timeout <= 0 or attempts < 1 or backoff < 0:
            raise ValueError("timeout must be positive, attempts at least 1, backoff not negative")
        self.endpoint = endpoint
        """``scheme://host:port``: how this provider is named in errors and logs."""
        self.insecure_skip_verify = insecure_skip_verify
        self._ssl_context = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint})"

    async def request(
            self,
            method: str,
            url: yarl.URL,
            *,
            headers: Headers = (),
            data: bytes | None = None,  # the request body; sent again with each retry
    ) -> HTTPAnswer:
        """Sends one request, retrying while there is no answer or a 5xx one.

        Returns the last answer, whatever its status: a 5xx that outlived its retries is
        returned too, so the provider words the error as its backend's API does. Raises
        :class:`ProviderOfflineError` if no attempt got an answer.
        """
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=(tenacity.wait_exponential(multiplier=self._backoff, max=_BACKOFF_MAX)
                  + tenacity.wait_random(0, self._backoff)),
            retry=(tenacity.retry_if_exception_type(_NoAnswer)
                   | tenacity.retry_if_result(lambda answer: answer.status >= 500)),
            retry_error_callback=_last_outcome,
            before_sleep=self._log_retry,
            reraise=True,
        )
        pairs = list(headers)
        try:
            answer: HTTPAnswer = await retrying(self._once, method, url, pairs, data)
        except _NoAnswer as exc:
            raise ProviderOfflineError(f"request failed: {exc.reason}") from exc
        return answer

    async def _once(
            self,
            method: str,
            url: yarl.URL,
            headers: list[tuple[str, str]],
            data: bytes | None = None,
    ) -> HTTPAnswer:
        """One attempt. Raises _NoAnswer for what a retry may fix."""
        session = self._session_for_request()
        try:
            async with session.request(
                method, url, headers=headers, data=data, timeout=self._timeout,
                allow_redirects=True,
            ) as response:
                status = response.status
                body = await response.text(errors="replace")
        except TimeoutError as exc:
            raise _NoAnswer(
                f"{self.endpoint} did not answer within {self._timeout.total:g}s") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # Not worth repeating: the certificate will not verify on a second attempt.
            raise ProviderOfflineError(
                f"request failed: TLS certificate of {self.endpoint} not verified"
                " (set insecureSkipVerify to accept it)") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _NoAnswer(
                f"cannot connect to {self.endpoint} ({exc.strerror or type(exc).__name__})"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _NoAnswer(
                f"connection to {self.endpoint} failed ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:  # e.g. too many redirects, an invalid header
            raise ProviderOfflineError(
                f"request to {self.endpoint} failed: {type(exc).__name__}") from exc
        return HTTPAnswer(status=status, body=body)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        if outcome is None:
            return
        if outcome.failed:
            exc = outcome.exception()
            reason = exc.reason if isinstance(exc, _NoAnswer) else type(exc).__name__
        else:
            reason = f"HTTP {outcome.result().status}"
        log.debug("metrics_request_retrying", provider=self.provider_type,
                  endpoint=self.endpoint, attempt=state.attempt_number, reason=reason)

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ProviderOfflineError(f"{self.provider_type} provider {self.endpoint} is closed")
        if self._session is None:
            # ssl=False skips certificate verification only; TLS is still used for https.
            tls: ssl.SSLContext | bool = not self.insecure_skip_verify
            if self._ssl_context is not None:
                tls = self._ssl_context
            connector = aiohttp.TCPConnector(ssl=tls)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=True)
        return self._session

    async def aclose(self) -> None:
        """Closes the connection pool; later queries fail with ProviderOfflineError."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _last_outcome(state: tenacity.RetryCallState) -> HTTPAnswer:
    """After the last attempt: its answer (a 5xx) is returned, its exception raised."""
    assert state.outcome is not None
    result: HTTPAnswer = state.outcome.result()  # re-raises the last exception, if any
    return result


def endpoint_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: how an address that may hold credentials is named."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def excerpt(text: str) -> str:
    """An answer's body for an error message: on one line, at most a few hundred characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_LIMIT else flat[:_EXCERPT_LIMIT] + "…"


def header_pairs(headers: Mapping[str, Iterable[str]] | None) -> list[tuple[str, str]]:
    """``provider.headers`` (a name to its values, Go's ``http.Header``) as request pairs."""
    if not headers:
        return []
    return [(name, value) for name, values in headers.items() for value in values]


def api_base(address: str, *, provider: str) -> tuple[str, str]:
    """``(base, endpoint)`` of a SaaS provider's address: the URL its API paths are appended to.

    The address must be an absolute http(s) URL; it may have a path (a proxy's prefix), and a
    trailing ``/`` is dropped so that ``<base>/api/...`` has one slash (Flagger concatenates, so
    ``https://api.datadoghq.com/`` would ask for ``//api/...``). Credentials in the URL are not
    sent and never repeated: the error names the address as :func:`endpoint_of` does.
    """
    address = address.strip()
    parts = urlsplit(address)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        port = parts.port
    except ValueError:
        valid, port = False, None
    if not valid:
        shown = endpoint_of(address) if address else '""'
        raise MetricsError(f"{provider} address {shown} is not a valid URL")
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else str(parts.hostname)
    netloc = f"{host}:{port}" if port else host
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return base, endpoint_of(address)


def secret_text(value: bytes | str) -> str:
    """A Secret's value as text (UTF-8; an undecodable byte is replaced, never echoed)."""
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def header_secret(secret: Mapping[str, bytes | str], key: str, *, provider: str) -> str:
    """The Secret's ``key`` as a header value, refused (without quoting it) if it has a line break.

    A key written with ``echo`` often ends in a newline; Go's client refuses such a header, and
    aiohttp's error would quote the value.
    """
    value = secret_text(secret[key])
    if "\r" in value or "\n" in value:
        raise MetricsError(f"{provider} credentials {key} holds a line break,"
                           " which cannot be sent in a header")
    return value
