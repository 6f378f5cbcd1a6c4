"""Errors of the Kubernetes API, as flaggerpy's own exceptions.

kubernetes-asyncio raises ``ApiException`` for every non-2xx answer and lets
aiohttp's errors through for everything else. Neither leaves this package:
each is converted here, once, into one class of the tree below and chained
as the ``__cause__`` so a traceback still shows what the library saw::

    KubeError(status, reason, message)
    ├── BadRequestError        400
    ├── UnauthorizedError      401
    ├── ForbiddenError         403
    ├── NotFoundError          404
    ├── AlreadyExistsError     409, reason AlreadyExists (a create found the name taken)
    ├── ConflictError          409, any other reason (a stale resourceVersion)
    ├── GoneError              410 (a watch or list resourceVersion was compacted away)
    ├── UnprocessableError     422 (validation; carries the field causes)
    ├── TooManyRequestsError   429 (carries Retry-After)
    ├── ServerError            5xx
    ├── TransportError         no HTTP answer at all (refused, reset, timed out)
    └── WriteFencedError       a write refused locally because this replica may not write

The split of 409 follows client-go's ``IsAlreadyExists``/``IsConflict``:
callers react differently (a create that lost a race reads the object; an
update that lost a race re-reads and retries), so they must not share a class.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from flaggerpy.errors import FlaggerError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of a Status's ``details.causes``: which field was wrong and why."""

    field: str
    reason: str
    message: str


class KubeError(FlaggerError):
    """The API server did not do what was asked.

    ``status`` is the HTTP status (0 when there was no answer), ``reason`` the
    machine-readable ``Status.reason`` (``NotFound``, ``Conflict``, ``Invalid``,
    ...), ``message`` the server's human-readable text.
    """

    def __init__(
            self,
            status: int,
            reason: str,
            message: str,
            *,
            causes: Sequence[Cause] = (),
            retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = tuple(causes)
        self.retry_after = retry_after  # seconds, from Retry-After or details.retryAfterSeconds
        super().__init__(status, reason, message)

    def __str__(self) -> str:
        head = f"{self.status} {self.reason}" if self.status else self.reason
        return f"{head}: {self.message}" if self.message else head


class BadRequestError(KubeError):
    """400: the request itself was malformed (a bad patch, a bad selector)."""


class UnauthorizedError(KubeError):
    """401: the credentials were missing or rejected."""


class ForbiddenError(KubeError):
    """403: RBAC (or an admission plugin) denied the request."""


class NotFoundError(KubeError):
    """404: the object, its namespace, or the resource type does not exist."""


class AlreadyExistsError(KubeError):
    """409 AlreadyExists: a create found the name already taken."""


class ConflictError(KubeError):
    """409 Conflict: the object changed since it was read (stale resourceVersion)."""


class GoneError(KubeError):
    """410: the resourceVersion asked for was compacted; a watcher must relist."""


class UnprocessableError(KubeError):
    """422: validation failed. ``causes`` names each offending field."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths the server rejected, e.g. ``("spec.replicas",)``."""
        return tuple(cause.field for cause in self.causes if cause.field)


class TooManyRequestsError(KubeError):
    """429: API priority and fairness shed the request; ``retry_after`` says when to retry."""


class ServerError(KubeError):
    """5xx: the API server (or etcd behind it) failed, or timed out server-side."""


class TransportError(KubeError):
    """No HTTP answer: connection refused or reset, TLS failure, client-side timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "TransportError", message)


class WriteFencedError(KubeError):
    """A write was refused before it reached the network.

    Raised by a client whose ``may_write`` fence returns False, which is how a
    replica that lost (or never held) leadership is kept from writing.
    """

    def __init__(self, message: str = "writes are fenced: this replica is not the leader") -> None:
        super().__init__(0, "WriteFenced", message)


_BY_STATUS: Mapping[int, type[KubeError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    410: GoneError,
    422: UnprocessableError,
    429: TooManyRequestsError,
}


def error_class(status: int, reason: str) -> type[KubeError]:
    """Picks the class for an HTTP status and a ``Status.reason``."""
    if status == 409:
        return AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, KubeError)


def from_status(
        status: Mapping[str, Any],
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
) -> KubeError:
    """Builds the error that a ``Status`` object (an error body or a watch ERROR event) describes.

    ``http_status`` wins over ``status.code`` when both are known: they agree
    for API errors, but a proxy in front of the server may answer on its own.
    """
    code = http_status if http_status is not None else _int(status.get("code"))
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    details = status.get("details")
    causes: list[Cause] = []
    if isinstance(details, Mapping):
        for cause in details.get("causes") or ():
            if isinstance(cause, Mapping):
                causes.append(Cause(
                    field=str(cause.get("field") or ""),
                    reason=str(cause.get("reason") or ""),
                    message=str(cause.get("message") or ""),
                ))
        if retry_after is None and details.get("retryAfterSeconds"):
            retry_after = float(details["retryAfterSeconds"])
    if not reason:
        reason = _default_reason(code)
    cls = error_class(code, reason)
    return cls(code, reason, message, causes=causes, retry_after=retry_after)


def from_api_exception(exc: ApiException) -> KubeError:
    """Converts kubernetes-asyncio's exception, reading the Status body when there is one.

    The caller chains it: ``raise from_api_exception(exc) from exc``.
    """
    code = int(exc.status or 0)
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    status: Mapping[str, Any] = {}
    if isinstance(body, str) and body:
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
            if isinstance(parsed, Mapping):
                status = parsed
    if not status:
        # Not a Status object (an HTML page from a proxy, an empty 503): keep what there is.
        text = body.strip() if isinstance(body, str) else ""
        status = {"reason": exc.reason or "", "message": text[:512] or exc.reason or ""}
    retry_after = None
    if exc.headers is not None:
        retry_after = _float(exc.headers.get("Retry-After"))
    if code == 0:
        # Raised by the library before sending: the body did not fit the content type.
        return KubeError(0, "ClientError", str(status.get("message") or "request not sent"))
    return from_status(status, http_status=code, retry_after=retry_after)


def from_transport_error(exc: BaseException) -> TransportError:
    """Converts an aiohttp or timeout error (no HTTP answer at all)."""
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return TransportError(f"request timed out: {exc or type(exc).__name__}")
    return TransportError(f"{type(exc).__name__}: {exc}")


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
"""Library exceptions that mean the request got no HTTP answer."""


@contextlib.contextmanager
def converted() -> Iterator[None]:
    """Converts library errors raised inside the block into KubeErrors, chained."""
    try:
        yield
    except ApiException as exc:
        raise from_api_exception(exc) from exc
    except TRANSPORT_ERRORS as exc:
        raise from_transport_error(exc) from exc


@overload
def ignore_not_found() -> contextlib.AbstractContextManager[None]: ...
@overload
def ignore_not_found(aw: Awaitable[T], /) -> Awaitable[T | None]: ...
def ignore_not_found(
        aw: Awaitable[T] | None = None, /,
) -> contextlib.AbstractContextManager[None] | Awaitable[T | None]:
    """Treats "already gone" as success, like controller-runtime's ``IgnoreNotFound``.

    Two forms, for the two ways it is needed::

        with kube.ignore_not_found():
            await client.delete(SERVICES, name, namespace=ns)

        # None if absent:
        obj = await kube.ignore_not_found(client.get(SERVICES, name, namespace=ns))
    """
    if aw is None:
        return contextlib.suppress(NotFoundError)
    return _await_ignoring_not_found(aw)


async def _await_ignoring_not_found(aw: Awaitable[T]) -> T | None:
    try:
        return await aw
    except NotFoundError:
        return None


def _default_reason(code: int) -> str:
    reasons = {
        400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
        405: "MethodNotAllowed", 409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType",
        422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
        504: "Timeout",
    }
    return reasons.get(code, "Unknown")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
