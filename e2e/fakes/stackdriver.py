"""A local Google Cloud Monitoring: the OAuth token endpoint and ``projects.timeSeries.query``.

Written from Google's documentation:

- **OAuth 2.0 for server-to-server applications** (service accounts). ``POST <token_uri>``,
  ``Content-Type: application/x-www-form-urlencoded``, ``grant_type`` =
  ``urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion`` = a JWT whose header is
  ``{"alg": "RS256", "typ": "JWT"}`` (``kid`` the key's id, optional) and whose claims are
  ``iss`` (the service account's e-mail), ``scope`` (space-separated), ``aud`` (the token
  endpoint's URL), ``iat`` and ``exp`` (at most one hour after ``iat``), signed with the key's
  private key. It answers ``{"access_token", "expires_in", "token_type": "Bearer"}``, or 400
  with ``{"error": "invalid_grant" | "invalid_scope" | "unsupported_grant_type" |
  "invalid_request", "error_description": ...}``.
- **The metadata server** (Compute Engine, GKE workload identity): ``GET
  /computeMetadata/v1/instance/service-accounts/default/token?scopes=<comma-separated>`` with
  the header ``Metadata-Flavor: Google`` (403 without it) answers the same token JSON.
- **Cloud Monitoring API v3**, ``POST /v3/{name=projects/*}/timeSeries:query`` with the JSON
  body ``QueryTimeSeriesRequest`` ``{"query": <MQL>, "pageSize"?, "pageToken"?}`` and
  ``Authorization: Bearer <token>`` of a token with the scope ``monitoring.read``,
  ``monitoring`` or ``cloud-platform``. It answers ``QueryTimeSeriesResponse``
  ``{"timeSeriesDescriptor": {"labelDescriptors": [...], "pointDescriptors": [...]},
  "timeSeriesData": [{"labelValues": [...], "pointData": [{"values": [<TypedValue>],
  "timeInterval": {"startTime", "endTime"}}]}], "nextPageToken"?}``, newest point first; an
  empty result has no ``timeSeriesData`` (proto3 JSON leaves empty fields out). A
  ``TypedValue`` holds one of ``doubleValue`` (a number), ``int64Value`` (a string, as proto3
  JSON writes 64-bit integers), ``boolValue``, ``stringValue``, ``distributionValue``. Errors
  are Google's ``{"error": {"code", "message", "status"}}``: 400 ``INVALID_ARGUMENT`` (an empty
  query, an unknown field), 401 ``UNAUTHENTICATED`` (no token, an unknown or expired one), 403
  ``PERMISSION_DENIED`` (another project, or a token without a monitoring scope).

Use: ``async with FakeCloudMonitoring(project="my-project") as fake:``, then
``fake.service_account_key()`` makes an RSA key and returns its key file (JSON) whose
``token_uri`` is this server's, so a client authenticates exactly as against Google.
:meth:`FakeCloudMonitoring.set_series` scripts a query's answer, :meth:`FakeCloudMonitoring.fail`
makes the next answers errors. Every request is recorded, tokens and assertions included.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self
from urllib.parse import parse_qs

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["FakeCloudMonitoring", "RecordedRequest", "Series"]

JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MONITORING_SCOPES: Final = frozenset({
    "https://www.googleapis.com/auth/monitoring.read",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/cloud-platform",
})
_QUERY_PATH: Final = re.compile(r"^/v3/projects/(?P<project>[^/]+)/timeSeries:query$")
_METADATA_TOKEN: Final = "/computeMetadata/v1/instance/service-accounts/default/token"
_REQUEST_FIELDS: Final = frozenset({"query", "pageSize", "pageToken"})
_UNAUTHENTICATED: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login"
    " cookie or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project.")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]  # the JSON body, or the form's fields (one value each)


@dataclass(frozen=True, slots=True)
class Series:
    """One time series of a scripted answer: its labels and its points, newest first."""

    points: Sequence[float | int | bool | None]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Token:
    email: str
    scopes: frozenset[str]
    expires: float  # time.time()


def _google_error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} \
        if status == 401 else None
    return web.json_response(
        {"error": {"code": status, "message": message, "status": code}},
        status=status, headers=headers)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _typed(value: float | int | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"int64Value": str(value)}
    if value != value:  # NaN, written as proto3 JSON writes it
        return {"doubleValue": "NaN"}
    return {"doubleValue": value}


def _value_type(series: Sequence[Series]) -> str:
    for one in series:
        for point in one.points:
            if isinstance(point, bool):
                return "BOOL"
            if isinstance(point, int):
                return "INT64"
    return "DOUBLE"


class FakeCloudMonitoring:
    """The stand-in; see the module docstring."""

    def __init__(self, *, project: str, host: str = "127.0.0.1", expires_in: int = 3600) -> None:
        self.project = project
        self.host = host
        self.expires_in = expires_in
        """Seconds a new access token lives (``expires_in`` of the token answer)."""
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.assertions: list[dict[str, Any]] = []
        """The verified claims of every assertion the token endpoint accepted."""
        self.delay = 0.0
        """Seconds every query waits before answering (a slow API)."""
        self.granted_scopes: frozenset[str] | None = None
        """When set, tokens carry these scopes instead of the requested ones."""
        self._keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}  # e-mail -> (kid, key)
        self._tokens: dict[str, _Token] = {}
        self._answers: dict[str, tuple[list[Series], int]] = {}  # query -> (series, empty pages)
        self._failures: list[tuple[int, str, str]] = []
        self._runner: web.AppRunner | None = None

    # -- scripting ------------------------------------------------------------------------------

    def service_account_key(self, *, email: str = "flagger@my-project.iam.gserviceaccount.com",
                            token_uri: str | None = None) -> str:
        """A new service account's key file (JSON), its public key known to this server."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_hex(20)
        self._keys[email] = (kid, key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        return json.dumps({
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": kid,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**21)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri or f"{self.url}/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
            "universe_domain": "googleapis.com",
        })

    def set_series(self, query: str, *series: Series, empty_pages: int = 0) -> None:
        """What ``query`` answers: these series (none: an empty result), after ``empty_pages``
        pages without data that point to the next one with ``nextPageToken``."""
        self._answers[query] = (list(series), empty_pages)

    def fail(self, status: int, code: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` queries are answered with this Google error."""
        self._failures.extend([(status, code, message)] * times)

    def revoke_tokens(self) -> None:
        """Every access token handed out so far stops working (401)."""
        self._tokens.clear()

    @property
    def queries(self) -> list[str]:
        """The ``query`` of every timeSeries:query request, in order."""
        return [r.body.get("query", "") for r in self.requests if r.path.startswith("/v3/")]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/token"]

    # -- serving --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get(_METADATA_TOKEN, self._metadata_token)
        app.router.add_route("*", "/{tail:.*}", self._api)
        return app

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.requests.append(RecordedRequest(
            method=request.method, path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()}, body=body))

    # -- the token endpoint ---------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        text = await request.text()
        fields = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
        await self._record(request, fields)
        if request.content_type != "application/x-www-form-urlencoded":
            return _oauth_error("invalid_request", "Content-Type must be a form")
        if fields.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type",
                                f"Invalid grant_type: {fields.get('grant_type', '')}")
        assertion = fields.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error("invalid_request", "Invalid JWT: malformed assertion")
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            return _oauth_error("invalid_grant", "Invalid JWT: alg must be RS256")
        known = self._keys.get(str(unverified.get("iss", "")))
        if known is None:
            return _oauth_error("invalid_grant", "Invalid email or User ID")
        kid, public_key = known
        if "kid" in header and header["kid"] != kid:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion, public_key, algorithms=["RS256"], audience=f"{self.url}/token",
                options={"require": ["iss", "aud", "exp", "iat"]}, leeway=0)
        except jwt.InvalidAudienceError:
            return _oauth_error("invalid_grant", "Invalid JWT: aud is not the token endpoint")
        except jwt.ExpiredSignatureError:
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a"
                " reasonable timeframe. Check your iat and exp values in the JWT claim.")
        except jwt.PyJWTError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if not (claims["iat"] - 300 <= now and claims["exp"] - claims["iat"] <= 3600):
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a"
                " reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.split():
            return _oauth_error("invalid_scope", "Empty or missing scope not allowed.")
        self.assertions.append(claims)
        token = "ya29." + secrets.token_urlsafe(32)
        granted = self.granted_scopes if self.granted_scopes is not None \
            else frozenset(scope.split())
        self._tokens[token] = _Token(email=claims["iss"], scopes=granted,
                                     expires=now + self.expires_in)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    async def _metadata_token(self, request: web.Request) -> web.Response:
        """The metadata server's token of the node's (or workload identity's) account."""
        await self._record(request, dict(request.query))
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing required header: Metadata-Flavor")
        scopes = frozenset(s for s in request.query.get("scopes", "").split(",") if s) or \
            frozenset({"https://www.googleapis.com/auth/cloud-platform"})
        token = "ya29." + secrets.token_urlsafe(32)
        self._tokens[token] = _Token(email="default", scopes=self.granted_scopes or scopes,
                                     expires=time.time() + self.expires_in)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    # -- the Monitoring API ---------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"_raw": text}
        await self._record(request, body if isinstance(body, dict) else {"_raw": text})
        match = _QUERY_PATH.match(request.path)
        if match is None:
            return _google_error(404, "NOT_FOUND", f"Method not found: {request.path}")
        if request.method != "POST":
            return _google_error(405, "METHOD_NOT_ALLOWED", "Use POST")
        authorization = request.headers.get("Authorization", "")
        scheme, _, credential = authorization.partition(" ")
        token = self._tokens.get(credential) if scheme == "Bearer" else None
        if token is None or token.expires <= time.time():
            return _google_error(401, "UNAUTHENTICATED", _UNAUTHENTICATED)
        if not token.scopes & MONITORING_SCOPES:
            return _google_error(403, "PERMISSION_DENIED",
                                 "Request had insufficient authentication scopes.")
        if match["project"] != self.project:
            return _google_error(
                403, "PERMISSION_DENIED",
                "Permission monitoring.timeSeries.list denied (or the resource may not exist).")
        if request.content_type != "application/json" or not isinstance(body, dict) \
                or "_raw" in body:
            return _google_error(400, "INVALID_ARGUMENT",
                                 "Invalid JSON payload received.")
        unknown = sorted(set(body) - _REQUEST_FIELDS)
        if unknown:
            return _google_error(
                400, "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._failures:
            status, code, message = self._failures.pop(0)
            return _google_error(status, code, message)
        query = body.get("query", "")
        if not isinstance(query, str) or not query.strip():
            return _google_error(400, "INVALID_ARGUMENT", "Field query had an invalid value: "
                                 "a query is required.")
        series, empty_pages = self._answers.get(query, ([], 0))
        page = int(body.get("pageToken", "page-0").removeprefix("page-") or 0)
        if page < empty_pages:
            return web.json_response({"nextPageToken": f"page-{page + 1}"})
        return web.json_response(self._response(series))

    @staticmethod
    def _response(series: Sequence[Series]) -> dict[str, Any]:
        keys = sorted({key for one in series for key in one.labels})
        answer: dict[str, Any] = {"timeSeriesDescriptor": {
            "labelDescriptors": [{"key": key} for key in keys],
            "pointDescriptors": [{"key": "value", "valueType": _value_type(series),
                                  "metricKind": "GAUGE"}],
        }}
        if not series:
            return answer
        end = datetime.now(UTC).replace(microsecond=0)
        data = []
        for one in series:
            points = []
            for age, value in enumerate(one.points):
                stop = end - timedelta(minutes=age)
                points.append({
                    "values": [] if value is None else [_typed(value)],
                    "timeInterval": {
                        "startTime": (stop - timedelta(minutes=1)).isoformat().replace(
                            "+00:00", "Z"),
                        "endTime": stop.isoformat().replace("+00:00", "Z")},
                })
            item: dict[str, Any] = {"labelValues": [
                {"stringValue": one.labels[key]} if key in one.labels else {} for key in keys]}
            if points:
                item["pointData"] = points
            data.append(item)
        answer["timeSeriesData"] = data
        return answer
