"""Conversion of kubernetes-asyncio/aiohttp failures into flaggerpy.kube errors (pure)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from flaggerpy import kube
from flaggerpy.errors import FlaggerError
from flaggerpy.kube import errors, watch


def api_exception(
        status: int, body: object, *, headers: dict[str, str] | None = None,
) -> ApiException:
    exc = ApiException(status=status, reason="ignored")
    exc.body = json.dumps(body) if not isinstance(body, str) else body  # type: ignore[assignment]
    exc.headers = headers  # type: ignore[assignment]
    return exc


def status(code: int, reason: str, message: str = "msg", **details: object) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message, "details": details}


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        pytest.param(400, "BadRequest", kube.BadRequestError, id="400"),
        pytest.param(401, "Unauthorized", kube.UnauthorizedError, id="401"),
        pytest.param(403, "Forbidden", kube.ForbiddenError, id="403"),
        pytest.param(404, "NotFound", kube.NotFoundError, id="404"),
        pytest.param(409, "AlreadyExists", kube.AlreadyExistsError, id="409-already-exists"),
        pytest.param(409, "Conflict", kube.ConflictError, id="409-conflict"),
        pytest.param(410, "Expired", kube.GoneError, id="410"),
        pytest.param(422, "Invalid", kube.UnprocessableError, id="422"),
        pytest.param(429, "TooManyRequests", kube.TooManyRequestsError, id="429"),
        pytest.param(500, "InternalError", kube.ServerError, id="500"),
        pytest.param(503, "ServiceUnavailable", kube.ServerError, id="503"),
        pytest.param(504, "Timeout", kube.ServerError, id="504"),
        pytest.param(405, "MethodNotAllowed", kube.KubeError, id="405-generic"),
    ],
)
def test_status_codes_map_to_classes(code: int, reason: str, cls: type[kube.KubeError]) -> None:
    err = errors.from_api_exception(api_exception(code, status(code, reason, "it broke")))
    assert type(err) is cls
    assert isinstance(err, FlaggerError)
    assert (err.status, err.reason, err.message) == (code, reason, "it broke")
    assert str(err) == f"{code} {reason}: it broke"


def test_already_exists_is_not_a_conflict() -> None:
    """client-go keeps IsAlreadyExists and IsConflict apart; so do we."""
    err = errors.from_api_exception(api_exception(409, status(409, "AlreadyExists")))
    assert not isinstance(err, kube.ConflictError)


def test_unprocessable_keeps_field_causes() -> None:
    body = status(
        422, "Invalid", 'Deployment.apps "x" is invalid: spec.replicas: Invalid value: -1',
        name="x", kind="Deployment",
        causes=[{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be >= 0",
                 "field": "spec.replicas"}],
    )
    err = errors.from_api_exception(api_exception(422, body))
    assert isinstance(err, kube.UnprocessableError)
    assert err.fields == ("spec.replicas",)
    assert err.causes == (kube.Cause("spec.replicas", "FieldValueInvalid",
                                     "Invalid value: -1: must be >= 0"),)


def test_too_many_requests_reads_retry_after() -> None:
    err = errors.from_api_exception(
        api_exception(429, status(429, "TooManyRequests"), headers={"Retry-After": "3"}))
    assert err.retry_after == 3.0
    err = errors.from_api_exception(
        api_exception(429, status(429, "TooManyRequests", retryAfterSeconds=7)))
    assert err.retry_after == 7.0


def test_non_status_body_is_kept_as_message() -> None:
    err = errors.from_api_exception(api_exception(502, "<html>bad gateway</html>"))
    assert isinstance(err, kube.ServerError)
    assert err.reason == "ignored"
    assert "bad gateway" in err.message


def test_missing_reason_gets_the_status_default() -> None:
    err = errors.from_api_exception(api_exception(404, {"message": "nope"}))
    assert isinstance(err, kube.NotFoundError)
    assert err.reason == "NotFound"


@pytest.mark.parametrize(
    "library_error",
    [
        pytest.param(aiohttp.ClientConnectionError("refused"), id="connection"),
        pytest.param(aiohttp.ServerDisconnectedError(), id="disconnected"),
        pytest.param(TimeoutError(), id="timeout"),
    ],
)
def test_transport_errors_are_converted_and_chained(library_error: BaseException) -> None:
    with pytest.raises(kube.TransportError) as info, errors.converted():
        raise library_error
    assert info.value.__cause__ is library_error
    assert info.value.status == 0


def test_api_exceptions_are_converted_and_chained() -> None:
    original = api_exception(404, status(404, "NotFound"))
    with pytest.raises(kube.NotFoundError) as info, errors.converted():
        raise original
    assert info.value.__cause__ is original


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), errors.converted():
        raise KeyError("x")


def test_ignore_not_found_context_manager() -> None:
    with kube.ignore_not_found():
        raise kube.NotFoundError(404, "NotFound", "gone")
    with pytest.raises(kube.ConflictError), kube.ignore_not_found():
        raise kube.ConflictError(409, "Conflict", "stale")


def test_write_fenced_is_a_kube_error() -> None:
    assert isinstance(kube.WriteFencedError(), kube.KubeError)


def test_watch_error_event_410_is_gone() -> None:
    line = json.dumps({"type": "ERROR", "object": status(
        410, "Expired", "too old resource version: 1 (50)")})
    with pytest.raises(kube.GoneError, match="too old resource version"):
        watch.decode_line(line.encode())


def test_watch_decodes_events_and_bookmarks() -> None:
    added = watch.decode_line(json.dumps(
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}))
    assert added is not None
    assert added.type is kube.EventType.ADDED
    assert added.resource_version == "5"
    bookmark = watch.decode_line(json.dumps(
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}}))
    assert bookmark is not None
    assert (bookmark.type, bookmark.resource_version) == (kube.EventType.BOOKMARK, "9")
    assert watch.decode_line(b"\n") is None


@pytest.mark.parametrize("line", ["not json", "[1]", '{"type": "WHAT", "object": {}}'])
def test_watch_malformed_lines_raise(line: str) -> None:
    with pytest.raises(kube.KubeError):
        watch.decode_line(line)
