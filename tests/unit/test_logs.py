"""Log configuration: one format for structlog and stdlib lines, canary binding, redaction."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from structlog.testing import capture_logs

from e2e.fixtures import cli_logging
from flaggerpy import logs
from flaggerpy.errors import ConfigError

# configure() changes process-wide state; the fixture puts it back for the next test.
__all__ = ["cli_logging"]
pytestmark = pytest.mark.usefixtures("cli_logging")


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_use_zaps_key_names() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    structlog.get_logger("flaggerpy.test").info("routes_set", primary=90, canary_weight=10)
    [line] = json_lines(stream)
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert line["msg"] == "routes_set"
    assert line["level"] == "info"
    assert line["logger"] == "flaggerpy.test"
    assert str(line["ts"]).endswith("Z")
    assert line["primary"] == 90


def test_stdlib_lines_share_the_format() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    logging.getLogger("aiohttp.client").warning("connection to %s lost", "prometheus")
    [line] = json_lines(stream)
    assert line["msg"] == "connection to prometheus lost"
    assert line["level"] == "warning"
    assert line["logger"] == "aiohttp.client"
    assert "ts" in line


def test_level_filters_both_kinds_of_logger() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="warn", stream=stream)
    structlog.get_logger().info("dropped")
    logging.getLogger("other").info("dropped too")
    structlog.get_logger().warning("kept")
    assert [line["msg"] for line in json_lines(stream)] == ["kept"]


def test_kubernetes_client_debug_bodies_never_logged() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="debug", stream=stream)
    logging.getLogger("kubernetes_asyncio.client.rest").debug("response body: %s", "{...}")
    logging.getLogger("aiohttp.access").info("GET /healthz 200")
    structlog.get_logger().debug("ours")
    assert [line["msg"] for line in json_lines(stream)] == ["ours"]


def test_exceptions_are_rendered_into_the_line() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("reconcile_failed")
    [line] = json_lines(stream)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in str(line["exception"])


def test_console_renderer_for_people() -> None:
    stream = io.StringIO()
    logs.configure(json=False, level="debug", stream=stream)
    structlog.get_logger("x").info("hello", answer=42)
    text = stream.getvalue()
    assert "hello" in text
    assert "answer=42" in text
    assert not text.lstrip().startswith("{")


def test_configure_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure(json=True, level="info", stream=first)
    logs.configure(json=True, level="info", stream=second)
    structlog.get_logger().info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


@pytest.mark.parametrize(
    ("level", "written"),
    [
        pytest.param("debug", ["debug", "info", "warning", "error", "critical"], id="debug"),
        pytest.param("info", ["info", "warning", "error", "critical"], id="info"),
        pytest.param("INFO", ["info", "warning", "error", "critical"], id="INFO"),
        pytest.param("warn", ["warning", "error", "critical"], id="warn"),
        pytest.param("warning", ["warning", "error", "critical"], id="warning"),
        pytest.param("error", ["error", "critical"], id="error"),
        pytest.param("fatal", ["critical"], id="fatal"),
        pytest.param("panic", ["critical"], id="panic"),
    ],
)
def test_zap_level_names_set_the_threshold(level: str, written: list[str]) -> None:
    stream = io.StringIO()
    logs.configure(json=True, level=level, stream=stream)
    log = structlog.get_logger()
    for method in ("debug", "info", "warning", "error", "critical"):
        getattr(log, method)(method)
    assert [line["msg"] for line in json_lines(stream)] == written


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown log level 'trace'"):
        logs.configure(json=True, level="trace", stream=io.StringIO())


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("encoding", "stream", "expected"),
    [
        pytest.param("json", FakeTTY(), True, id="json-forced"),
        pytest.param("console", io.StringIO(), False, id="console-forced"),
        pytest.param("auto", FakeTTY(), False, id="auto-tty"),
        pytest.param("auto", io.StringIO(), True, id="auto-pipe"),
    ],
)
def test_wants_json(encoding: str, stream: io.StringIO, expected: bool) -> None:
    assert logs.wants_json(encoding, stream=stream) is expected


def test_wants_json_rejects_unknown_encodings() -> None:
    with pytest.raises(ConfigError):
        logs.wants_json("logfmt")


def test_canary_lines_carry_flaggers_canary_field() -> None:
    log = structlog.get_logger()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
        with logs.bound_canary("podinfo", "test"):
            log.info("advance", weight=10)
        log.info("outside")
    assert captured[0]["canary"] == "podinfo.test"
    assert "canary" not in captured[1]
    assert logs.canary_id("podinfo", "test") == "podinfo.test"


def test_bound_canary_reaches_rendered_json() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    with logs.bound_canary("podinfo", "test"):
        logging.getLogger("aiohttp.client").info("stdlib line inside the block")
        structlog.get_logger().info("structlog line")
    assert [line["canary"] for line in json_lines(stream)] == ["podinfo.test"] * 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("password", "hunter2", id="password"),
        pytest.param("token", "abc", id="token"),
        pytest.param("slack_token", "xoxb-1", id="suffix"),
        pytest.param("client-secret", "s3", id="dashed"),
        pytest.param("Authorization", "Bearer abc", id="header-case"),
        pytest.param("api_key", "k", id="api-key"),
        pytest.param("secret", "s", id="secret"),
    ],
)
def test_credential_keys_are_redacted(key: str, value: str) -> None:
    event = logs.redact(None, "info", {"event": "x", key: value})
    assert event[key] == logs.REDACTED


def test_names_of_secrets_are_kept() -> None:
    event = logs.redact(None, "info", {"event": "x", "secret_name": "slack", "secret_ref": "a",
                                       "tokens_used": 3})
    assert event == {"event": "x", "secret_name": "slack", "secret_ref": "a", "tokens_used": 3}


def test_nested_values_are_redacted() -> None:
    event = logs.redact(None, "info", {
        "event": "webhook_called",
        "request": {"headers": {"Authorization": "Bearer t", "Accept": "json"}},
        "items": [{"password": "p"}, "plain"],
    })
    request = event["request"]
    assert request["headers"] == {"Authorization": logs.REDACTED, "Accept": "json"}
    assert event["items"] == [{"password": logs.REDACTED}, "plain"]


@pytest.mark.parametrize(
    ("text", "leaked", "kept"),
    [
        pytest.param("GET https://admin:hunter2@prometheus:9090/api/v1/query", "hunter2",
                     "prometheus:9090/api/v1/query", id="userinfo"),
        pytest.param("http://prom/api?query=up&token=abc123", "abc123", "query=up", id="query"),
        pytest.param("posting to https://hooks.slack.com/services/T000/B000/XXXX", "XXXX",
                     "https://hooks.slack.com/", id="slack"),
        pytest.param("https://discord.com/api/webhooks/123/tok-en", "tok-en", "discord.com",
                     id="discord"),
        pytest.param("https://acme.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y",
                     "abc@def", "acme.webhook.office.com", id="teams"),
        pytest.param("https://chat.example/hooks/abc/def", "abc/def", "chat.example/hooks/",
                     id="rocket"),
    ],
)
def test_credentials_in_urls_are_redacted(text: str, leaked: str, kept: str) -> None:
    event = logs.redact(None, "info", {"event": text, "url": text})
    for value in (event["event"], event["url"]):
        assert leaked not in value
        assert kept in value


def test_redaction_applies_to_rendered_lines() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    structlog.get_logger().info("alert_sent", token="xoxb-secret",
                                url="https://hooks.slack.com/services/T/B/abc")
    logging.getLogger("aiohttp.client").error("POST https://u:pw@example.com failed")
    text = stream.getvalue()
    for secret in ("xoxb-secret", "T/B/abc", "u:pw"):
        assert secret not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://prometheus:9090", "http://prometheus:9090", id="bare"),
        pytest.param("http://prometheus:9090/", "http://prometheus:9090", id="slash"),
        pytest.param("https://user:pw@hooks.slack.com/services/a/b?x=1",
                     "https://hooks.slack.com/…", id="creds-and-path"),
        pytest.param("not a url", logs.REDACTED, id="garbage"),
    ],
)
def test_safe_url(url: str, expected: str) -> None:
    assert logs.safe_url(url) == expected
