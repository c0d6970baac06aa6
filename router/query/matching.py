"""DICOM C-FIND matching (PS3.4 C.2.2.2) as SQLAlchemy conditions. Pure functions: no I/O, no session.

Generic on purpose: the caller passes the column that holds an attribute and the attribute's VR, so the
Query/Retrieve SCP and the Modality Worklist SCP share one implementation. A request value (leading and
trailing spaces removed) is matched as follows:

- **universal**: an empty value, or one made only of ``*``: no condition (``condition`` returns ``None``).
- **list of UIDs** (VR UI): ``uid1\\uid2\\...`` matches any of them (SQL ``IN``).
- **multiple values** (other VRs except DA/DT/TM): ``CT\\MR`` matches any of the values (``OR``).
- **wildcard** (VRs AE CS LO LT PN SH ST UC UR UT): ``*`` any run of characters (also none), ``?`` exactly one.
  Rendered as ``LIKE ... ESCAPE '!'`` (``%``, ``_`` and ``!`` in the value are escaped), and as ``GLOB`` on
  SQLite, whose ``LIKE`` ignores case (wildcard matching is case-sensitive except for PN) and does not use an
  index; ``GLOB`` does for a literal prefix.
- **range** (DA, TM, DT): ``a-b``, ``-b`` (up to b) and ``a-`` (from a), inclusive. Values are compared as
  strings, which is exact for stored DA ``YYYYMMDD`` values. An entity with an empty stored value does not match
  a range. TM and DT bounds may have any precision: the lower bound is used as given, the upper bound is filled
  up to the end of its precision (``1000`` means up to ``10:00:59.999999``), so ``0900-1000`` matches a stored
  ``093000.123``. A single TM or DT value matches every stored value within its precision (``0930`` matches
  ``093012``). DT time zone offsets are ignored. ``hh:mm`` and ``YYYY.MM.DD`` (ACR-NEMA) forms are accepted.
- **single value**: equality, case-sensitive. IS and DS values are compared as strings (CP-2305 leaves this to
  the implementation).
- **PN** (with ``is_name_column=True``): the column holds ``normalize_name`` of the stored name and the request
  value is normalized the same way, so names match case-insensitively and without regard to accents
  (``buc^jerome`` matches ``Buc^Jérôme``). A value without ``=`` is matched against the whole name and against
  its first (alphabetic) component group; ``=山田^太郎`` matches the ideographic group.
- **combined date and time** (``datetime_range``, PS3.4 C.2.2.2.5.1, when negotiated): a Date and a Time key
  both given are one date-time range: ``20240101-20240102`` with ``2200-0600`` matches from 1 January 22:00 to
  2 January 06:00:59.999999.

A value that cannot be a valid key of its VR (``2024-1-1`` for DA) raises ``InvalidKey``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import Boolean, and_, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
LIKE_ESCAPE = "!"

_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?$")
_DT = re.compile(r"^(\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?)(?:[+-]\d{4})?$")
# what a DT value left out, filled with the largest value of each component (month, day, hour, minute, second)
_DT_CEIL = "99991231235959"


class InvalidKey(ValueError):
    """A request value that is not a valid key of its VR."""


# -- Person Name ----------------------------------------------------------------------------------------------------
def normalize_name(pn: str) -> str:
    """The search form of a Person Name: upper case, accents removed (NFKD, combining marks dropped), spaces around
    components and trailing empty components and groups dropped; ``^`` and ``=`` separators kept.

    ``normalize_name("Buc^Jérôme^^^")`` is ``"BUC^JEROME"``. ``*`` and ``?`` are kept, so a wildcard request value
    can be normalized too."""
    decomposed = unicodedata.normalize("NFKD", pn)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    groups = ["^".join(part.strip() for part in group.split("^")).rstrip("^") for group in plain.split("=")]
    return "=".join(groups).rstrip("=")


# -- wildcard rendering ---------------------------------------------------------------------------------------------
class _Wildcard(FunctionElement[Any]):
    """``column`` matches a DICOM wildcard pattern; arguments: column, LIKE pattern, GLOB pattern."""

    name = "dicom_wildcard"
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: never rendered as "(...) = 1" where booleans are integers


@compiles(_Wildcard)
def _compile_like(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    column, like, _glob = list(element.clauses)
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '{LIKE_ESCAPE}')"


@compiles(_Wildcard, "sqlite")
def _compile_glob(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    column, _like, glob = list(element.clauses)
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(glob, **kw)})"


def like_pattern(value: str) -> str:
    """A DICOM wildcard value as a LIKE pattern with ``!`` as the escape character."""
    out = []
    for ch in value:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in ("%", "_", LIKE_ESCAPE):
            out.append(LIKE_ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def glob_pattern(value: str) -> str:
    """A DICOM wildcard value as an SQLite GLOB pattern (``[`` is the only other special character)."""
    return "".join("[[]" if ch == "[" else ch for ch in value)


def wildcard(column: Any, value: str) -> ColumnElement[bool]:
    """``column`` matches ``value``, in which ``*`` and ``?`` are wildcards and everything else is literal."""
    return _Wildcard(column, literal(like_pattern(value)), literal(glob_pattern(value)))


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def is_universal(value: str | None) -> bool:
    """Zero length, or only ``*`` (PS3.4 C.2.2.2.3 and C.2.2.2.4)."""
    return value is None or value.strip().strip("*") == ""


# -- date and time --------------------------------------------------------------------------------------------------
def _date(value: str) -> str:
    v = value.strip().replace(".", "")
    if not _DA.match(v):
        raise InvalidKey(f"not a DA value: {value!r}")
    return v


def _time(value: str) -> str:
    v = value.strip().replace(":", "")
    if not _TM.match(v):
        raise InvalidKey(f"not a TM value: {value!r}")
    return v


def _datetime(value: str) -> str:
    m = _DT.match(value.strip())
    if not m:
        raise InvalidKey(f"not a DT value: {value!r}")
    return m.group(1)  # without the offset


def time_ceil(tm: str) -> str:
    """The last instant within a TM value's precision: ``10`` -> ``105959.999999``, ``1000`` -> ``100059.999999``."""
    head, _, frac = tm.partition(".")
    head += "5959"[len(head) - 2 :] if len(head) < 6 else ""
    return f"{head}.{frac.ljust(6, '9')}"


def datetime_ceil(dt: str) -> str:
    """The last instant within a DT value's precision (offsets removed): ``2024`` -> ``20241231235959.999999``."""
    head, _, frac = dt.partition(".")
    head += _DT_CEIL[len(head) :]
    return f"{head}.{frac.ljust(6, '9')}"


_PARSERS = {"DA": _date, "TM": _time, "DT": _datetime}


def parse_range(vr: str, value: str) -> tuple[str | None, str | None]:
    """``(lower, upper)`` inclusive bounds of a DA/TM/DT key (``None`` = open); the upper one filled to the end
    of its precision. A single value gives both bounds."""
    parse = _PARSERS[vr]
    v = value.strip()
    if vr == "DT" and _DT.match(v):  # a DT may carry a "-hhmm" offset: a whole valid value is a single value
        lo_text: str | None = v
        hi_text: str | None = v
    elif "-" in v:
        if v.count("-") != 1 and vr != "DT":
            raise InvalidKey(f"not a {vr} range: {value!r}")
        lo_text, hi_text = _split_range(vr, v)
    else:
        lo_text = hi_text = v
    lo = parse(lo_text) if lo_text else None
    hi = parse(hi_text) if hi_text else None
    if lo is None and hi is None:
        raise InvalidKey(f"a {vr} range needs at least one bound: {value!r}")
    if hi is not None:
        hi = time_ceil(hi) if vr == "TM" else datetime_ceil(hi) if vr == "DT" else hi
    return lo, hi


def _split_range(vr: str, v: str) -> tuple[str, str]:
    if vr != "DT":
        lo, _, hi = v.partition("-")
        return lo, hi
    for i, ch in enumerate(v):  # a DT range: the dash where both sides are valid (or empty) DT values
        if ch == "-":
            lo, hi = v[:i], v[i + 1 :]
            if (not lo or _DT.match(lo)) and (not hi or _DT.match(hi)):
                return lo, hi
    raise InvalidKey(f"not a DT range: {v!r}")


def _range_condition(column: Any, lo: str | None, hi: str | None) -> ColumnElement[bool]:
    parts = [column != ""]
    if lo is not None:
        parts.append(column >= lo)
    if hi is not None:
        parts.append(column <= hi)
    return and_(*parts)


# -- the entry points -----------------------------------------------------------------------------------------------
def _single(column: Any, vr: str, value: str) -> ColumnElement[bool]:
    if vr in WILDCARD_VRS and has_wildcard(value):
        return wildcard(column, value)
    return column == value


def _name_condition(column: Any, value: str) -> ColumnElement[bool] | None:
    norm = normalize_name(value)
    if is_universal(norm):
        return None
    groups = norm.split("=")
    pattern = "=".join(g if g else "*" for g in groups)
    whole = _single(column, "PN", pattern)
    if len(groups) >= 3 or pattern.endswith("*"):
        return whole
    return or_(whole, wildcard(column, pattern + "=*"))  # the request names the first group(s) only


def condition(column: Any, vr: str, value: str | None, *, is_name_column: bool = False) -> ColumnElement[bool] | None:
    """The SQL condition for one key of a C-FIND request; ``None`` for universal matching.

    ``column`` holds the stored value (for PN with ``is_name_column=True``: its ``normalize_name`` form)."""
    if value is None:
        return None
    v = value.strip()
    if is_universal(v):
        return None
    if vr in RANGE_VRS:
        return _range_condition(column, *parse_range(vr, v))
    if vr == "UI":
        uids = [u.strip() for u in v.split("\\") if u.strip()]
        return column == uids[0] if len(uids) == 1 else column.in_(uids)
    values = [part.strip() for part in v.split("\\")]
    if any(is_universal(part) for part in values):
        return None
    if vr == "PN" and is_name_column:
        conds = [_name_condition(column, part) for part in values]
        if any(c is None for c in conds):
            return None
        return conds[0] if len(conds) == 1 else or_(*[c for c in conds if c is not None])
    conds2 = [_single(column, vr, part) for part in values]
    return conds2[0] if len(conds2) == 1 else or_(*conds2)


def datetime_range(
    date_col: Any, time_col: Any, date_value: str | None, time_value: str | None
) -> ColumnElement[bool] | None:
    """Combined date-time matching (PS3.4 C.2.2.2.5.1): a Date key and its Time key, both non-universal, are one
    range of instants. A single value counts as a range over its precision; an open date bound leaves that side
    open whatever the time says; an open time bound means the start (or end) of the day. With either key
    universal, the other is matched on its own (``condition``). ``None`` when both are universal."""
    if is_universal(date_value) or is_universal(time_value):
        date_cond = condition(date_col, "DA", date_value)
        time_cond = condition(time_col, "TM", time_value)
        present = [c for c in (date_cond, time_cond) if c is not None]
        return and_(*present) if len(present) == 2 else (present[0] if present else None)
    assert date_value is not None and time_value is not None
    d_lo, d_hi = parse_range("DA", date_value)
    t_lo, t_hi = parse_range("TM", time_value)
    parts = [date_col != ""]
    if d_lo is not None:
        parts.append(
            date_col >= d_lo if t_lo is None else or_(date_col > d_lo, and_(date_col == d_lo, time_col >= t_lo))
        )
    if d_hi is not None:
        parts.append(
            date_col <= d_hi
            if t_hi is None
            else or_(date_col < d_hi, and_(date_col == d_hi, time_col != "", time_col <= t_hi))
        )
    return and_(*parts)
