"""Turning an MWL C-FIND identifier into conditions (PS3.4 C.2.2.2, K.6.1.2).

Pure functions, no I/O. Dates and times become one interval of ``YYYYMMDDHHMMSS`` keys, shifted by the
difference between the requester's Timezone Offset From UTC (0008,0201) and the zone the worklist is kept in.
Names match case-insensitively and ignoring accents (``Müller`` matches ``MULLER*``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

KEY_FORMAT = "%Y%m%d%H%M%S"
_TIME_TOP = "235959"


class MatchError(ValueError):
    """The identifier holds a value that cannot be matched (answered with a failure status)."""


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a name or text."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper().strip()


def is_universal(value: str) -> bool:
    return value.strip() in ("", "*")


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def text_matches(pattern: str, value: str, *, fold_case: bool = False) -> bool:
    """Single value or wildcard matching of one stored value."""
    pattern, value = pattern.strip(), value.strip()
    if fold_case:
        pattern, value = fold(pattern), fold(value)
    if not has_wildcard(pattern):
        return pattern == value
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def name_matches(pattern: str, name: str) -> bool:
    """PN matching: the whole name, or with a pattern that has no component separator, any of its
    components groups (alphabetic, ideographic, phonetic) compared without trailing empty components."""
    if is_universal(pattern):
        return True
    groups = [g.rstrip("^") for g in name.split("=")] or [""]
    pats = [p.rstrip("^") for p in pattern.split("=")]
    return any(text_matches(p, g, fold_case=True) for p in pats if p for g in groups)


def _parse(value: str, what: str, fmt: str) -> datetime:
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        raise MatchError(f"{what} {value!r} is not valid") from None


def _date(value: str) -> datetime:
    value = value.strip().replace(".", "")  # ACR-NEMA style 2024.01.31
    return _parse(value, "date", "%Y%m%d")


def _time_bounds(value: str) -> tuple[str, str]:
    """A TM value as the first and last HHMMSS it covers (``0930`` covers 093000-093059)."""
    digits = value.strip().replace(":", "").split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        raise MatchError(f"time {value!r} is not valid")
    lo, hi = digits.ljust(6, "0"), (digits + _TIME_TOP[len(digits) :])
    _parse(lo, "time", "%H%M%S")
    _parse(hi, "time", "%H%M%S")
    return lo, hi


def _split_range(value: str) -> tuple[str, str] | None:
    return (value.split("-", 1)[0], value.split("-", 1)[1]) if "-" in value else None


@dataclass(frozen=True)
class Interval:
    """Closed interval of date-time keys; None = open."""

    lo: str | None
    hi: str | None

    def shifted(self, delta: timedelta) -> Interval:
        def move(key: str | None) -> str | None:
            return None if key is None else (datetime.strptime(key, KEY_FORMAT) + delta).strftime(KEY_FORMAT)

        return Interval(move(self.lo), move(self.hi))

    def contains(self, key: str) -> bool:
        return (self.lo is None or key >= self.lo) and (self.hi is None or key <= self.hi)


def datetime_interval(date_value: str, time_value: str) -> Interval | None:
    """The interval a Scheduled Procedure Step Start Date (DA) and Time (TM) pair asks for.

    Both universal: None. Date and time both given with a range in either: one combined date-time range
    (PS3.4 C.2.2.2.5.1). A date alone: whole days. A time alone is handled by ``time_only``."""
    date_value, time_value = date_value.strip(), time_value.strip()
    if not date_value:
        return None
    date_range = _split_range(date_value)
    d_lo, d_hi = date_range if date_range else (date_value, date_value)
    time_range = _split_range(time_value) if time_value else None
    if time_value:
        t_lo, t_hi = time_range if time_range else (time_value, time_value)
        t_lo_key = _time_bounds(t_lo)[0] if t_lo else "000000"
        t_hi_key = _time_bounds(t_hi)[1] if t_hi else _TIME_TOP
    else:
        t_lo_key, t_hi_key = "000000", _TIME_TOP
    lo = (_date(d_lo).strftime("%Y%m%d") + t_lo_key) if d_lo else None
    hi = (_date(d_hi).strftime("%Y%m%d") + t_hi_key) if d_hi else None
    if not date_range and not time_range and time_value:  # both single values: that day, that time
        return Interval(lo, hi)
    if lo is not None and hi is not None and lo > hi:
        raise MatchError(f"range {date_value} {time_value} ends before it starts")
    return Interval(lo, hi)


def time_only(time_value: str) -> Interval:
    """A time range without a date: an interval of HHMMSS (may wrap past midnight: lo > hi)."""
    rng = _split_range(time_value.strip())
    t_lo, t_hi = rng if rng else (time_value, time_value)
    return Interval(_time_bounds(t_lo)[0] if t_lo else None, _time_bounds(t_hi)[1] if t_hi else None)


def time_only_matches(interval: Interval, hhmmss: str) -> bool:
    if interval.lo is not None and interval.hi is not None and interval.lo > interval.hi:  # wraps midnight
        return hhmmss >= interval.lo or hhmmss <= interval.hi
    return interval.contains(hhmmss)


def date_matches(value: str, stored: str) -> bool:
    """DA single value or range matching (Patient's Birth Date)."""
    value = value.strip()
    rng = _split_range(value)
    if rng is None:
        return _date(value).strftime("%Y%m%d") == stored
    if not stored:
        return False
    lo = _date(rng[0]).strftime("%Y%m%d") if rng[0] else None
    hi = _date(rng[1]).strftime("%Y%m%d") if rng[1] else None
    return (lo is None or stored >= lo) and (hi is None or stored <= hi)


def parse_offset(value: str) -> timedelta:
    """``+HHMM`` / ``-HHMM`` as a timedelta."""
    value = value.strip()
    if not re.fullmatch(r"[+-]\d{4}", value):
        raise MatchError(f"Timezone Offset From UTC {value!r} is not +HHMM or -HHMM")
    sign = -1 if value[0] == "-" else 1
    return sign * timedelta(hours=int(value[1:3]), minutes=int(value[3:5]))
