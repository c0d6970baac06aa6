"""C-FIND matching as SQL conditions (router/query/matching.py), run on SQLite and on a throwaway PostgreSQL.

Every case inserts rows with known values and asserts exactly which rows a request value selects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from router.query.matching import (
    InvalidKey,
    condition,
    datetime_range,
    glob_pattern,
    like_pattern,
    normalize_name,
    parse_range,
    time_ceil,
)

from postgres import postgres_cluster

META = MetaData()
ROWS = Table(
    "rows",
    META,
    Column("id", Integer, primary_key=True),
    Column("label", String(32)),
    Column("text", String(64), default=""),
    Column("name", String(64), default=""),
    Column("uid", String(64), default=""),
    Column("da", String(8), default=""),
    Column("tm", String(16), default=""),
    Column("dt", String(26), default=""),
)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_cluster() as cluster:
        yield cluster.url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.interop)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    eng = create_engine(url)
    META.drop_all(eng)
    META.create_all(eng)
    try:
        yield eng
    finally:
        META.drop_all(eng)
        eng.dispose()


def load(engine: Engine, rows: dict[str, dict[str, str]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ROWS), [{"label": label, **values} for label, values in rows.items()])


def matches(engine: Engine, cond: Any) -> set[str]:
    query = select(ROWS.c.label)
    if cond is not None:
        query = query.where(cond)
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


# -- pure helpers -----------------------------------------------------------------------------------------------------
def test_normalize_name() -> None:
    assert normalize_name("Buc^Jérôme") == "BUC^JEROME"
    assert normalize_name("Äneas^Rüdiger") == "ANEAS^RUDIGER"
    assert normalize_name("OB^^^^") == "OB"
    assert normalize_name(" smith ^ john ^^ ") == "SMITH^JOHN"
    assert normalize_name("Wang^XiaoDong=王^小東=") == "WANG^XIAODONG=王^小東"
    assert normalize_name("ﾔﾏﾀﾞ^ﾀﾛｳ") == "ヤマタ^タロウ"  # half-width katakana folded, voicing mark dropped
    assert normalize_name("Διονυσιος") == "ΔΙΟΝΥΣΙΟΣ"
    assert normalize_name("mül*^j?") == "MUL*^J?"  # wildcards survive


def test_patterns_escape_what_is_special() -> None:
    assert like_pattern("50%_off!*") == "50!%!_off!!%"
    assert like_pattern("a?c") == "a_c"
    assert glob_pattern("[x]*?") == "[[]x]*?"


def test_range_parsing() -> None:
    assert parse_range("DA", "20240101-20240131") == ("20240101", "20240131")
    assert parse_range("DA", "-20240131") == (None, "20240131")
    assert parse_range("DA", "20240101-") == ("20240101", None)
    assert parse_range("DA", "2024.01.01") == ("20240101", "20240101")
    assert parse_range("TM", "0900-1000") == ("0900", "100059.999999")
    assert parse_range("TM", "09:30") == ("0930", "093059.999999")
    assert parse_range("DT", "20240101120000+0100") == ("20240101120000", "20240101120000.999999")
    assert parse_range("DT", "2024-202402") == ("2024", "20240231235959.999999")
    assert time_ceil("10") == "105959.999999"
    assert time_ceil("100000.5") == "100000.599999"
    for vr, bad in [("DA", "2024-01-01"), ("DA", "2024013"), ("DA", "-"), ("TM", "9"), ("TM", "0900-10:0x")]:
        with pytest.raises(InvalidKey):
            parse_range(vr, bad)


def test_wildcards_render_per_database() -> None:
    cond = condition(ROWS.c.text, "LO", "AB*")
    pg = str(cond.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[union-attr]
    lite = str(cond.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[union-attr]
    assert pg == "(rows.text LIKE 'AB%%' ESCAPE '!')"
    assert lite == "(rows.text GLOB 'AB*')"


# -- against a database ---------------------------------------------------------------------------------------------
def test_universal_matching_has_no_condition(engine: Engine) -> None:
    for value in (None, "", "  ", "*", "**"):
        assert condition(ROWS.c.text, "LO", value) is None
        assert condition(ROWS.c.da, "DA", value) is None
        assert condition(ROWS.c.name, "PN", value, is_name_column=True) is None
    assert condition(ROWS.c.text, "CS", "CT\\*") is None  # one universal value in a list makes it universal


def test_single_value_and_wildcards(engine: Engine) -> None:
    load(
        engine,
        {
            "abc": {"text": "ABC"},
            "abc-lower": {"text": "abc"},
            "abcd": {"text": "ABCD"},
            "axc": {"text": "AXC"},
            "percent": {"text": "50%_off!"},
            "percent-like": {"text": "50xyoff!"},
            "bracket": {"text": "[x]"},
            "empty": {"text": ""},
        },
    )
    assert matches(engine, condition(ROWS.c.text, "LO", "ABC")) == {"abc"}
    assert matches(engine, condition(ROWS.c.text, "LO", "abc")) == {"abc-lower"}  # case-sensitive
    assert matches(engine, condition(ROWS.c.text, "LO", "AB*")) == {"abc", "abcd"}
    assert matches(engine, condition(ROWS.c.text, "LO", "ab*")) == {"abc-lower"}
    assert matches(engine, condition(ROWS.c.text, "LO", "A?C")) == {"abc", "axc"}
    assert matches(engine, condition(ROWS.c.text, "LO", "*C")) == {"abc", "axc"}
    assert matches(engine, condition(ROWS.c.text, "LO", "50%_*")) == {"percent"}  # % and _ are literal
    assert matches(engine, condition(ROWS.c.text, "LO", "50%_off!")) == {"percent"}
    assert matches(engine, condition(ROWS.c.text, "LO", "*!")) == {"percent", "percent-like"}
    assert matches(engine, condition(ROWS.c.text, "LO", "[x*")) == {"bracket"}
    assert matches(engine, condition(ROWS.c.text, "CS", "ABC\\AXC")) == {"abc", "axc"}
    assert matches(engine, condition(ROWS.c.text, "CS", "AB?D\\A?C")) == {"abcd", "abc", "axc"}
    assert matches(engine, condition(ROWS.c.text, "UI", "A*")) == set()  # no wildcards for UIDs


def test_uid_lists(engine: Engine) -> None:
    load(engine, {f"u{i}": {"uid": f"1.2.3.{i}"} for i in range(1, 6)})
    assert matches(engine, condition(ROWS.c.uid, "UI", "1.2.3.2")) == {"u2"}
    assert matches(engine, condition(ROWS.c.uid, "UI", "1.2.3.2\\1.2.3.4\\1.2.3.9")) == {"u2", "u4"}
    assert matches(engine, condition(ROWS.c.uid, "UI", "1.2.3.2\\")) == {"u2"}


def test_person_names(engine: Engine) -> None:
    names = {
        "jerome": "Buc^Jérôme",
        "rudiger": "Äneas^Rüdiger",
        "yamada": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "wang": "Wang^XiaoDong=王^小東",
        "smith": "SMITH^JOHN",
        "smithers": "Smithers^Waylon",
    }
    load(engine, {label: {"name": normalize_name(pn)} for label, pn in names.items()})

    def names_for(value: str) -> set[str]:
        return matches(engine, condition(ROWS.c.name, "PN", value, is_name_column=True))

    assert names_for("buc^jerome") == {"jerome"}
    assert names_for("BUC^JÉRÔME") == {"jerome"}
    assert names_for("aneas*") == {"rudiger"}
    assert names_for("smith*") == {"smith", "smithers"}
    assert names_for("smith^john") == {"smith"}
    assert names_for("smith") == set()  # single value matching is on the whole name
    assert names_for("yamada^tarou") == {"yamada"}  # the alphabetic group
    assert names_for("=山田^太郎") == {"yamada"}  # the ideographic group
    assert names_for("山田^太郎") == set()
    assert names_for("wang*\\buc*") == {"wang", "jerome"}
    assert names_for("?ang^xiaodong") == {"wang"}


def test_date_ranges(engine: Engine) -> None:
    load(
        engine,
        {
            "dec31": {"da": "20231231"},
            "jan01": {"da": "20240101"},
            "jan15": {"da": "20240115"},
            "jan31": {"da": "20240131"},
            "feb01": {"da": "20240201"},
            "none": {"da": ""},
        },
    )
    assert matches(engine, condition(ROWS.c.da, "DA", "20240115")) == {"jan15"}
    assert matches(engine, condition(ROWS.c.da, "DA", "20240101-20240131")) == {"jan01", "jan15", "jan31"}
    assert matches(engine, condition(ROWS.c.da, "DA", "-20240101")) == {"dec31", "jan01"}
    assert matches(engine, condition(ROWS.c.da, "DA", "20240131-")) == {"jan31", "feb01"}
    assert matches(engine, condition(ROWS.c.da, "DA", "20240201-20240101")) == set()
    with pytest.raises(InvalidKey):
        condition(ROWS.c.da, "DA", "2024-01-01")


def test_time_ranges_across_precisions(engine: Engine) -> None:
    load(
        engine,
        {
            "t0859": {"tm": "085959.999"},
            "t0900": {"tm": "0900"},
            "t0930": {"tm": "093000.123"},
            "t093012": {"tm": "093012"},
            "t0931": {"tm": "0931"},
            "t1000": {"tm": "100059.5"},
            "t1001": {"tm": "100100"},
            "none": {"tm": ""},
        },
    )
    assert matches(engine, condition(ROWS.c.tm, "TM", "0900-1000")) == {"t0900", "t0930", "t093012", "t0931", "t1000"}
    assert matches(engine, condition(ROWS.c.tm, "TM", "0930")) == {"t0930", "t093012"}
    assert matches(engine, condition(ROWS.c.tm, "TM", "-0900")) == {"t0859", "t0900"}
    assert matches(engine, condition(ROWS.c.tm, "TM", "1000-")) == {"t1000", "t1001"}
    assert matches(engine, condition(ROWS.c.tm, "TM", "09:30-09:31")) == {"t0930", "t093012", "t0931"}


def test_datetime_ranges(engine: Engine) -> None:
    load(
        engine,
        {
            "before": {"dt": "20231231235959"},
            "start": {"dt": "20240101"},
            "noon": {"dt": "20240101120000+0100"},
            "end": {"dt": "20240102235959.5"},
            "after": {"dt": "20240103000000"},
        },
    )
    assert matches(engine, condition(ROWS.c.dt, "DT", "20240101-20240102")) == {"start", "noon", "end"}
    assert matches(engine, condition(ROWS.c.dt, "DT", "20240101120000")) == {"noon"}
    assert matches(engine, condition(ROWS.c.dt, "DT", "-2023")) == {"before"}


def test_combined_date_and_time(engine: Engine) -> None:
    load(
        engine,
        {
            "d1-2100": {"da": "20240101", "tm": "2100"},
            "d1-2230": {"da": "20240101", "tm": "223000"},
            "d1-notime": {"da": "20240101", "tm": ""},
            "d2-0100": {"da": "20240102", "tm": "0100"},
            "d2-0600": {"da": "20240102", "tm": "060030"},
            "d2-0601": {"da": "20240102", "tm": "0601"},
            "d2-1200": {"da": "20240102", "tm": "1200"},
            "d0-2300": {"da": "20231231", "tm": "2300"},
            "d3-0000": {"da": "20240103", "tm": "0000"},
        },
    )

    def combined(da: str, tm: str) -> set[str]:
        return matches(engine, datetime_range(ROWS.c.da, ROWS.c.tm, da, tm))

    assert combined("20240101-20240102", "2200-0600") == {"d1-2230", "d2-0100", "d2-0600"}
    assert combined("20240101-", "2200-") == {"d1-2230", "d2-0100", "d2-0600", "d2-0601", "d2-1200", "d3-0000"}
    assert combined("-20240102", "-0600") == {
        "d0-2300", "d1-2100", "d1-2230", "d1-notime", "d2-0100", "d2-0600",
    }  # fmt: skip
    assert combined("20240102", "0100-0600") == {"d2-0100", "d2-0600"}
    # with one key universal the other matches on its own
    assert combined("", "2200-2359") == {"d1-2230", "d0-2300"}
    assert combined("20240102", "*") == {"d2-0100", "d2-0600", "d2-0601", "d2-1200"}
    assert datetime_range(ROWS.c.da, ROWS.c.tm, "", "") is None
    # matched independently instead, a time range that crosses midnight matches nothing
    independent = [condition(ROWS.c.da, "DA", "20240101-20240102"), condition(ROWS.c.tm, "TM", "2200-0600")]
    assert matches(engine, independent[0] & independent[1]) == set()  # type: ignore[operator]
