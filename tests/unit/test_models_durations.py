"""Go duration strings: the same strings parse (and fail) as with Go's time.ParseDuration."""

from __future__ import annotations

import pytest

from flaggerpy.models import format_duration, parse_duration, parse_duration_ns


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("0", 0.0, id="bare-zero"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("1m", 60.0, id="minute"),
        pytest.param("1h30m", 5400.0, id="compound"),
        pytest.param("2h45m30s", 9930.0, id="three-units"),
        pytest.param("1.5h", 5400.0, id="fraction"),
        pytest.param(".5s", 0.5, id="leading-dot"),
        pytest.param("1.s", 1.0, id="trailing-dot"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("10us", 1e-05, id="micro-us"),
        pytest.param("10\u00b5s", 1e-05, id="micro-sign"),
        pytest.param("10\u03bcs", 1e-05, id="greek-mu"),
        pytest.param("100ns", 1e-07, id="nanoseconds"),
        pytest.param("-1m", -60.0, id="negative"),
        pytest.param("+5s", 5.0, id="explicit-plus"),
        pytest.param("1m0s", 60.0, id="go-string-form"),
        pytest.param("0s", 0.0, id="zero-seconds"),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "invalid duration", id="empty"),
        pytest.param("1", "missing unit", id="no-unit"),
        pytest.param("10", "missing unit", id="no-unit-not-zero"),
        pytest.param("1min", "unknown unit 'min'", id="min"),
        pytest.param("1d", "unknown unit 'd'", id="days"),
        pytest.param("1M", "unknown unit 'M'", id="capital-m"),
        pytest.param(".s", "invalid duration", id="dot-only"),
        pytest.param("-", "invalid duration", id="sign-only"),
        pytest.param("s", "invalid duration", id="unit-only"),
        pytest.param("1m 30s", "unknown unit", id="space"),
        pytest.param("9223372037s", "invalid duration", id="overflow"),
    ],
)
def test_parse_rejects_what_go_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_parse_ns_is_exact_at_the_int64_edge() -> None:
    assert parse_duration_ns("2562047h47m16.854775807s") == 2**63 - 1
    assert parse_duration_ns("-2562047h47m16.854775808s") == -(2**63)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration_ns("2562047h47m16.854775808s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(30, "30s", id="seconds"),
        pytest.param(60, "1m0s", id="minute"),
        pytest.param(90, "1m30s", id="minute-and-half"),
        pytest.param(3600, "1h0m0s", id="hour"),
        pytest.param(5400.5, "1h30m0.5s", id="fractional-seconds"),
        pytest.param(0.25, "250ms", id="milliseconds"),
        pytest.param(0.0015, "1.5ms", id="fractional-milliseconds"),
        pytest.param(2e-06, "2\u00b5s", id="microseconds"),
        pytest.param(-60, "-1m0s", id="negative"),
    ],
)
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
