"""Go duration strings (``"1m"``, ``"30s"``, ``"1h30m"``, ``"250ms"``) as seconds.

Flagger reads every interval and timeout of its CRDs with Go's ``time.ParseDuration``, so the
set of strings that work, and the ones that fail and fall back to a default, is Go's. This is
a faithful port: the same grammar (``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`` or a bare ``"0"``), the
same units (``ns``, ``us``/``µs``/``μs``, ``ms``, ``s``, ``m``, ``h``), the same integer
nanosecond arithmetic and overflow limits. ``"1min"`` and ``"1d"`` fail here as they do there.

The models keep the wire string untouched; only the accessors that apply Flagger's defaults
convert it, so a round trip never rewrites ``"1m"`` as ``"60s"``.
"""

from __future__ import annotations

__all__ = ["format_duration", "parse_duration", "parse_duration_ns"]

_NANOSECOND = 1
_MICROSECOND = 1000 * _NANOSECOND
_MILLISECOND = 1000 * _MICROSECOND
_SECOND = 1000 * _MILLISECOND
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE

_UNITS = {
    "ns": _NANOSECOND,
    "us": _MICROSECOND,
    "\u00b5s": _MICROSECOND,  # U+00B5 micro sign
    "\u03bcs": _MICROSECOND,  # U+03BC Greek small letter mu
    "ms": _MILLISECOND,
    "s": _SECOND,
    "m": _MINUTE,
    "h": _HOUR,
}

_MAX = 1 << 63  # |int64 min|; a positive result must stay below it


def _invalid(text: str) -> ValueError:
    return ValueError(f"time: invalid duration {text!r}")


def _leading_int(s: str, text: str) -> tuple[int, str]:
    """Consume ``[0-9]*``; overflow past int64 is an error, as in Go's ``leadingInt``."""
    i = 0
    value = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if value > _MAX // 10:
            raise _invalid(text)
        value = value * 10 + ord(s[i]) - ord("0")
        if value > _MAX:
            raise _invalid(text)
        i += 1
    return value, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Consume the digits after a ``.``; extra digits past int64 precision are dropped."""
    i = 0
    value = 0
    scale = 1.0
    overflow = False
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            if value > (_MAX - 1) // 10:
                overflow = True
            else:
                candidate = value * 10 + ord(s[i]) - ord("0")
                if candidate > _MAX:
                    overflow = True
                else:
                    value = candidate
                    scale *= 10
        i += 1
    return value, scale, s[i:]


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds (Go's ``time.ParseDuration``).

    Raises :class:`ValueError` with Go's wording for anything Go rejects.
    """
    s = text
    negative = False
    if s and s[0] in "+-":
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise _invalid(text)
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise _invalid(text)
        before = len(s)
        whole, s = _leading_int(s, text)
        has_whole = before != len(s)
        fraction, scale, has_fraction = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            fraction, scale, s = _leading_fraction(s)
            has_fraction = before != len(s)
        if not has_whole and not has_fraction:
            raise _invalid(text)
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {text!r}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {unit_name!r} in duration {text!r}")
        if whole > _MAX // unit:
            raise _invalid(text)
        value = whole * unit
        if fraction > 0:
            value += int(float(fraction) * (float(unit) / scale))
            if value > _MAX:
                raise _invalid(text)
        total += value
        if total > _MAX:
            raise _invalid(text)
    if negative:
        return -total
    if total > _MAX - 1:
        raise _invalid(text)
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds: ``"1h30m"`` gives ``5400.0``.

    Raises :class:`ValueError` for anything Go's ``time.ParseDuration`` rejects.
    """
    return parse_duration_ns(text) / _SECOND


def format_duration(seconds: float) -> str:
    """Render seconds the way Go's ``Duration.String`` does: ``90`` gives ``"1m30s"``.

    Useful when flaggerpy writes a duration into an object another tool reads with Go
    (a generated VirtualService timeout, for instance), so it looks like Flagger's output.
    """
    ns = round(seconds * _SECOND)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < _SECOND:
        for unit_ns, name in ((_MILLISECOND, "ms"), (_MICROSECOND, "\u00b5s"), (1, "ns")):
            if u >= unit_ns:
                return sign + _fixed(u, unit_ns) + name
    hours, rest = divmod(u, _HOUR)
    minutes, rest = divmod(rest, _MINUTE)
    text = _fixed(rest, _SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fixed(value: int, unit: int) -> str:
    """``value / unit`` with the fraction's trailing zeros dropped, as Go's ``fmtFrac`` does."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
