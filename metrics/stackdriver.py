"""Stackdriver: MQL queries to Google Cloud Monitoring, as Flagger's ``providers/stackdriver.go``.

The request (spec §4.4): ``projects.timeSeries.query`` of the Cloud Monitoring v3 API, sent
as its documented REST call (Flagger's Go client sends the same message over gRPC)::

    POST https://monitoring.googleapis.com/v3/projects/<project>/timeSeries:query
    Authorization: Bearer <access token>
    {"query": "<MQL>"}

From the ``secretRef``'s data: ``project`` (required: Flagger refuses a Secret without it)
and ``serviceAccountKey``, the JSON key file of a service account. With a key, the access
token comes from Google's OAuth 2.0 flow for service accounts: a JWT signed with the key's
private key (RS256; ``iss`` the account's e-mail, ``scope`` ``monitoring.read``, ``aud`` the
key's ``token_uri``) is posted to ``token_uri`` with the ``jwt-bearer`` grant. Without a key,
application default credentials: the key file named by ``GOOGLE_APPLICATION_CREDENTIALS``,
else the metadata server of the node (GKE workload identity; ``GCE_METADATA_HOST`` moves it).
A token is reused until shortly before it expires, and dropped when the API answers 401.

``spec.provider.address`` is ignored by Flagger for this type; here, when set, it replaces
``https://monitoring.googleapis.com`` (a private endpoint or a proxy). Without a secretRef
there is no project to ask: building the provider fails (Flagger would send queries with an
empty project name that the API refuses).

The answer (``QueryTimeSeriesResponse``): the first point of the first series,
``timeSeriesData[0].pointData[0].values[0]``. Flagger reads ``doubleValue`` only, so an
``INT64`` series reads as 0 there; here ``int64Value`` is read as its number and ``boolValue``
as 1 or 0. Other series are ignored (logged at warning level). An answer without series
(after following ``nextPageToken`` as the Go iterator does), a series without points or
values, or NaN: :class:`~flaggerpy.errors.NoValuesFoundError`. An error answer (Google's
``{"error": {"code", "message", "status"}}``): :class:`~flaggerpy.errors.MetricsError`
``error requesting stackdriver: <STATUS>: <message>``; 5xx after the retries of
:mod:`flaggerpy.metrics._http`, or no answer: :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`StackdriverProvider.is_online` sends an empty query, which must be refused with
``INVALID_ARGUMENT`` (or answered): any other error, a 403 without the ``monitoring.read``
permission for one, means offline.

The factory is called with the keywords every metrics provider takes (see
:mod:`flaggerpy.metrics.prometheus`); ``region``, ``interval`` and ``headers`` are unused.
The Secret's values, the key and the tokens never appear in errors, logs or ``repr()``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import jwt
import structlog
import yarl
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import (
    MetricsError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPAnswer,
    HTTPProvider,
    api_base,
    excerpt,
    secret_text,
)

__all__ = ["MONITORING_API", "SCOPE", "StackdriverProvider"]

log = structlog.get_logger(__name__)

MONITORING_API: Final = "https://monitoring.googleapis.com"
"""Where the Cloud Monitoring API answers, unless ``spec.provider.address`` says otherwise."""

SCOPE: Final = "https://www.googleapis.com/auth/monitoring.read"
"""The one OAuth scope asked for: reading time series is all the analysis does."""

DEFAULT_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
"""Google's token endpoint, for a key file without ``token_uri``."""

JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME: Final = 3600  # seconds: the longest Google accepts
_REFRESH_MARGIN: Final = 300.0  # seconds before expiry when a token is renewed
_METADATA_HOST: Final = "metadata.google.internal"
_MAX_PAGES: Final = 10  # empty pages followed through nextPageToken before giving up


@dataclass(frozen=True, slots=True)
class _ServiceAccount:
    """What a service-account key file gives: who signs, with which key, for which endpoint."""

    email: str
    key_id: str
    private_key: RSAPrivateKey
    token_uri: str

    def __repr__(self) -> str:  # never the key
        return f"_ServiceAccount({self.email})"


class StackdriverProvider(HTTPProvider):
    """Runs MQL queries against one Google Cloud project's Cloud Monitoring API."""

    provider_type = "stackdriver"

    def __init__(
            self,
            *,
            address: str | None = None,
            secret: Mapping[str, bytes] | None = None,  # None: no secretRef
            headers: Mapping[str, Sequence[str]] | None = None,  # unused, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # unused (CloudWatch's)
            interval: str = "",  # unused: an MQL query has its window
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if variant:
            raise MetricsError(f"stackdriver has no variant {variant!r}")
        api, endpoint = api_base((address or "").strip() or MONITORING_API, provider="stackdriver")
        super().__init__(
            endpoint=endpoint, insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        if secret is None:
            raise MetricsError(
                "stackdriver needs a secretRef whose Secret holds the project id ('project')")
        if "project" not in secret:
            raise MetricsError("stackdriver credentials does not contain a project id")
        project = secret_text(secret["project"]).strip()
        if not project:
            raise MetricsError("stackdriver credentials does not contain a project id")
        self._query_url = yarl.URL(
            f"{api}/v3/projects/{quote(project, safe='')}/timeSeries:query",
            encoded=True,
        )
        self._account: _ServiceAccount | None = None
        self._metadata_url: yarl.URL | None = None
        if "serviceAccountKey" in secret:
            self._account = _service_account(
                secret["serviceAccountKey"], source="serviceAccountKey")
        else:
            self._adc()
        self._token = ""
        self._token_expiry = 0.0  # time.monotonic() after which the token is renewed

    def _adc(self) -> None:
        """Application default credentials: a key file from the environment, else the node's."""
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
        if path:
            try:
                raw = Path(path).read_bytes()
            except OSError as exc:
                raise MetricsError(
                    f"stackdriver: GOOGLE_APPLICATION_CREDENTIALS file cannot be read"
                    f" ({exc.strerror or type(exc).__name__})") from None
            self._account = _service_account(raw, source="GOOGLE_APPLICATION_CREDENTIALS")
            return
        host = os.environ.get("GCE_METADATA_HOST", "").strip() or _METADATA_HOST
        self._metadata_url = yarl.URL(
            f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        ).with_query(scopes=SCOPE)

    async def run_query(self, query: str) -> float:
        """The query's value; see the module docstring for how each answer is read."""
        page_token = ""
        for _ in range(_MAX_PAGES):
            body: dict[str, str] = {"query": query}
            if page_token:
                body["pageToken"] = page_token
            payload = _json_of(await self._query(body))
            series = payload.get("timeSeriesData")
            if isinstance(series, list) and series:
                if len(series) > 1:
                    log.warning("metrics_query_several_series", provider="stackdriver",
                                endpoint=self.endpoint, series=len(series))
                return _first_value(series[0])
            page_token = payload.get("nextPageToken") or ""
            if not isinstance(page_token, str) or not page_token:
                break
        raise NoValuesFoundError("invalid response: no time series: no values found")

    async def is_online(self) -> bool:
        """True when an empty query is refused as INVALID_ARGUMENT (or answered at all).

        Raises :class:`ProviderOfflineError` with the reason otherwise, so that the caller
        can report why.
        """
        answer = await self._query({"query": ""})
        if answer.status < 400:
            return True
        status, message = _google_error(answer)
        if answer.status == 400 and status in ("INVALID_ARGUMENT", ""):
            return True
        raise ProviderOfflineError(f"unexpected status code: {status or answer.status}: {message}")

    async def _query(self, body: Mapping[str, str]) -> HTTPAnswer:
        """One ``timeSeries:query`` call; raises for errors that are not the API's to judge."""
        token = await self._access_token()
        answer = await self.request(
            "POST", self._query_url,
            headers=(("Authorization", f"Bearer {token}"),
                     ("Content-Type", "application/json"),
                     ("Accept", "application/json")),
            data=json.dumps(body).encode(),
        )
        if answer.status == 401:
            self._token_expiry = 0.0  # revoked or expired early: the next call gets another
        if answer.status >= 500 or (answer.status >= 400 and body.get("query")):
            status, message = _google_error(answer)
            error = ProviderOfflineError if answer.status >= 500 else MetricsError
            raise error(f"error requesting stackdriver: {status or answer.status}: {message}")
        return answer

    async def _access_token(self) -> str:
        """The cached access token, or a new one when it is about to expire."""
        if self._token and time.monotonic() < self._token_expiry:
            return self._token
        if self._account is not None:
            answer = await self._exchange(self._account)
        else:
            assert self._metadata_url is not None
            answer = await self.request(
                "GET", self._metadata_url, headers=(("Metadata-Flavor", "Google"),))
        if answer.status >= 500:
            raise ProviderOfflineError(f"stackdriver token request failed: HTTP {answer.status}")
        payload = _json_of(answer) if answer.status < 400 else None
        token = payload.get("access_token") if payload else None
        if not isinstance(token, str) or not token:
            raise MetricsError(f"stackdriver token request failed: {_oauth_error(answer)}")
        expires_in = payload.get("expires_in") if payload else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._token = token
        self._token_expiry = time.monotonic() + lifetime - min(_REFRESH_MARGIN, lifetime / 2)
        return token

    async def _exchange(self, account: _ServiceAccount) -> HTTPAnswer:
        """Google's JWT-bearer grant: a signed assertion posted to the key's ``token_uri``."""
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": account.email, "scope": SCOPE, "aud": account.token_uri,
             "iat": now, "exp": now + _ASSERTION_LIFETIME},
            account.private_key, algorithm="RS256",
            headers={"kid": account.key_id} if account.key_id else None,
        )
        form = urlencode({"grant_type": JWT_BEARER, "assertion": assertion})
        return await self.request(
            "POST", yarl.URL(account.token_uri),
            headers=(("Content-Type", "application/x-www-form-urlencoded"),
                     ("Accept", "application/json")),
            data=form.encode(),
        )


def _service_account(raw: bytes | str, *, source: str) -> _ServiceAccount:
    """A service-account key file's fields; errors name the field, never its value."""
    try:
        info = json.loads(raw)
    except ValueError:
        raise MetricsError(f"stackdriver {source} is not valid JSON") from None
    if not isinstance(info, Mapping):
        raise MetricsError(f"stackdriver {source} is not a JSON object")
    kind = info.get("type")
    if kind != "service_account":
        raise MetricsError(
            f"stackdriver {source} has type {kind!r}; only 'service_account' keys are supported")
    email, pem = info.get("client_email"), info.get("private_key")
    if not isinstance(email, str) or not email:
        raise MetricsError(f"stackdriver {source} has no client_email")
    if not isinstance(pem, str) or not pem:
        raise MetricsError(f"stackdriver {source} has no private_key")
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise MetricsError(f"stackdriver {source} private_key is not a PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise MetricsError(f"stackdriver {source} private_key is not an RSA key")
    token_uri = info.get("token_uri") or DEFAULT_TOKEN_URI
    if not isinstance(token_uri, str) or not _is_http_url(token_uri):
        raise MetricsError(f"stackdriver {source} token_uri is not a valid URL")
    key_id = info.get("private_key_id")
    return _ServiceAccount(email=email, key_id=key_id if isinstance(key_id, str) else "",
                           private_key=key, token_uri=token_uri)


def _first_value(series: Any) -> float:
    """``pointData[0].values[0]`` of a ``TimeSeriesData``, as a number."""
    points = series.get("pointData") if isinstance(series, Mapping) else None
    if not isinstance(points, list) or not points or not isinstance(points[0], Mapping):
        raise NoValuesFoundError("invalid response: series without points: no values found")
    values = points[0].get("values")
    if not isinstance(values, list) or not values or not isinstance(values[0], Mapping):
        raise NoValuesFoundError("invalid response: point without values: no values found")
    typed = values[0]
    if "doubleValue" in typed:
        value = _number(typed["doubleValue"])
    elif "int64Value" in typed:
        value = _number(typed["int64Value"])  # proto3 JSON sends int64 as a string
    elif "boolValue" in typed:
        value = 1.0 if typed["boolValue"] is True else 0.0
    elif typed:
        kind = next(iter(typed))
        raise MetricsError(f"invalid response: a {kind} is not a number")
    else:
        value = 0.0  # every field at its default: a double 0 in proto3 JSON
    if math.isnan(value):
        raise NoValuesFoundError("no values found")
    return value


def _number(raw: object) -> float:
    """A JSON number, or proto3 JSON's string forms (``"12"``, ``"NaN"``, ``"Infinity"``)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise MetricsError(f"invalid response: value {excerpt(str(raw))} is not a number")
    try:
        return float(raw)
    except ValueError:
        raise MetricsError(f"invalid response: value {excerpt(str(raw))} is not a number") from None


def _json_of(answer: HTTPAnswer) -> Mapping[str, Any]:
    try:
        payload = json.loads(answer.body)
    except ValueError as exc:
        raise MetricsError(
            f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
    if not isinstance(payload, Mapping):
        raise MetricsError(f"invalid response: '{excerpt(answer.body)}'")
    return payload


def _google_error(answer: HTTPAnswer) -> tuple[str, str]:
    """``(status, message)`` of Google's error JSON; the body's excerpt if it is not one."""
    try:
        error = json.loads(answer.body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, Mapping):
        status = error.get("status")
        message = error.get("message")
        return (status if isinstance(status, str) else "",
                excerpt(message) if isinstance(message, str) else "")
    return "", excerpt(answer.body)


def _oauth_error(answer: HTTPAnswer) -> str:
    """An OAuth error answer (``error``, ``error_description``) as one line."""
    try:
        payload = json.loads(answer.body)
    except ValueError:
        payload = None
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
        description = payload.get("error_description")
        detail = f": {excerpt(description)}" if isinstance(description, str) else ""
        return f"HTTP {answer.status}: {payload['error']}{detail}"
    if answer.status < 400:
        return "the answer has no access_token"
    return f"HTTP {answer.status}: {excerpt(answer.body)}"


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (
            parts.port is None or parts.port > 0)
    except ValueError:
        return False


_: type[MetricsProvider] = StackdriverProvider
