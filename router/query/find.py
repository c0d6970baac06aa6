"""C-FIND on the index: a request identifier becomes a query plan; result rows become response identifiers.

``plan_find`` checks the identifier against the information model and turns each key into a condition
(``router.query.matching``). ``run_find`` reads the first ``FIRST_PAGE`` matches (ordered by the level's primary
key) on their own, then the ids of the others in one query, then their rows ``PAGE_SIZE`` at a time by id,
holding a connection only while a page is read: a long answer keeps its ids in memory (8 bytes a match), not its
rows, and no read transaction open. Derived attributes (counts, Modalities in Study, the Request Attributes
Sequence) are computed per page with one grouped query each. ``run_find_encoded`` gives the same matches encoded
(``router.query.encode``).

Hierarchical queries (the default, PS3.4 C.4.1.3.1): below the top level of the model, the identifier must hold
the unique key of every higher level as a single value (else 0xA900). Other keys of higher levels are matched
too. With relational queries negotiated (C.4.1.3.2) any key at or above the query level may be given, in any
form. Keys below the query level are ignored; keys the router does not know are returned empty.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

from router.query.charset import apply_charset, requested_terms
from router.query.encode import Encoder
from router.query.matching import InvalidKey, condition, datetime_range, has_wildcard, is_universal
from router.query.model import (
    ATTRS,
    CONTROL_KEYWORDS,
    DATE_TIME_PAIRS,
    DEPTH,
    IMAGE,
    INSTANCE_T,
    PATIENT,
    PATIENT_T,
    REQUEST_ITEM,
    REQUEST_T,
    SERIES,
    SERIES_T,
    STUDY,
    STUDY_T,
    TABLE,
    UNIQUE_KEY,
    Attr,
    InfoModel,
)
from router.statuses import QR_CANNOT_DECODE, QR_IDENTIFIER_MISMATCH, QR_INVALID_KEY

PAGE_SIZE = 256
LEVELS = (PATIENT, STUDY, SERIES, IMAGE)
PARENT_FK = {STUDY: STUDY_T.c.patient_fk, SERIES: SERIES_T.c.study_fk, IMAGE: INSTANCE_T.c.series_fk}
MULTI_VALUED = frozenset({"ImageType", "ModalitiesInStudy", "SOPClassesInStudy"})


class QueryError(Exception):
    """A request the service answers with a failure status (and a reason for the log)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# -- reading the identifier -----------------------------------------------------------------------------------------
def key_text(elem: DataElement) -> str:
    """A key's value as DICOM text (values joined by backslashes)."""
    try:
        value = elem.value
        if value is None:
            return ""
        if isinstance(value, MultiValue | list | tuple):
            return "\\".join(str(v) for v in value)
        if isinstance(value, bytes):
            return value.decode("latin-1")
        return str(value)
    except Exception as exc:  # pydicom converts lazily: a malformed value raises here
        raise QueryError(QR_CANNOT_DECODE, f"cannot decode {elem.keyword or elem.tag}: {exc}") from exc


def element(ds: Dataset, keyword: str) -> DataElement | None:
    """The data element of ``keyword`` (``Dataset.get`` gives its value)."""
    return ds.data_element(keyword) if keyword in ds else None


def query_level(model: InfoModel, identifier: Dataset) -> str:
    elem = element(identifier, "QueryRetrieveLevel")
    level = key_text(elem).strip().upper() if elem is not None else ""
    if level not in model.levels:
        raise QueryError(
            QR_IDENTIFIER_MISMATCH,
            f"Query/Retrieve Level {level!r} is not one of {', '.join(model.levels)} ({model.name})",
        )
    return level


def single_value(value: str) -> bool:
    return bool(value.strip()) and not has_wildcard(value) and "\\" not in value


def require_unique_keys(model: InfoModel, level: str, identifier: Dataset) -> None:
    """Hierarchical method: each level above ``level`` is named by its unique key, as a single value."""
    for above in model.levels[: model.levels.index(level)]:
        keyword = UNIQUE_KEY[above]
        elem = element(identifier, keyword)
        if elem is None or not single_value(key_text(elem)):
            raise QueryError(
                QR_IDENTIFIER_MISMATCH,
                f"a {level} query in {model.name} needs {keyword} as a single value (no relational queries negotiated)",
            )


def _entity_keys(identifier: Dataset) -> Iterator[DataElement]:
    """The identifier's attribute keys: no command/meta groups, group lengths or private tags."""
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0 or elem.tag.is_private:
            continue
        yield elem


# -- the plan -----------------------------------------------------------------------------------------------------
@dataclass
class FindPlan:
    model: InfoModel
    level: str
    where: list[Any] = field(default_factory=list)
    returned: list[Attr] = field(default_factory=list)  # known attributes, in tag order
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (tag, VR) returned empty
    controls: set[str] = field(default_factory=set)
    request_keys: list[str] | None = None  # Request Attributes Sequence item keys asked for; [] = all
    request_unknown: list[tuple[int, str]] = field(default_factory=list)
    request_where: list[Any] = field(default_factory=list)
    charset: list[str] = field(default_factory=list)


def plan_find(
    model: InfoModel, identifier: Dataset, *, relational: bool = False, combined_datetime: bool = False
) -> FindPlan:
    """Check the identifier and build the conditions; raises ``QueryError`` with the status to answer."""
    level = query_level(model, identifier)
    if not relational:
        require_unique_keys(model, level, identifier)
    plan = FindPlan(model, level, charset=requested_terms(identifier))
    values: dict[str, str] = {}
    for elem in _entity_keys(identifier):
        keyword = elem.keyword
        if keyword in CONTROL_KEYWORDS:
            plan.controls.add(keyword)
            continue
        attr = ATTRS.get(keyword)
        if attr is None:
            plan.unknown.append((int(elem.tag), _vr(elem)))
            continue
        if DEPTH[model.level_of(attr)] > DEPTH[level]:
            continue  # below the query level: not part of this query
        plan.returned.append(attr)
        if attr.derived == "requests":
            _plan_requests(plan, elem)
        elif attr.matchable:
            values[keyword] = key_text(elem)
    try:
        if combined_datetime:
            for date_kw, time_kw in DATE_TIME_PAIRS:
                if not is_universal(values.get(date_kw)) and not is_universal(values.get(time_kw)):
                    d, t = ATTRS[date_kw], ATTRS[time_kw]
                    plan.where.append(datetime_range(d.column, t.column, values.pop(date_kw), values.pop(time_kw)))
        for keyword, value in values.items():
            cond = _condition(ATTRS[keyword], value)
            if cond is not None:
                plan.where.append(cond)
    except InvalidKey as exc:
        raise QueryError(QR_INVALID_KEY, str(exc)) from exc
    if level == PATIENT:  # patients the index knows without any stored study are not Q/R entities
        plan.where.append(exists().where(STUDY_T.c.patient_fk == PATIENT_T.c.id))
    return plan


def _vr(elem: DataElement) -> str:
    try:
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return str(elem.VR) if elem.VR else "UN"


def _condition(attr: Attr, value: str) -> ColumnElement[bool] | None:
    if attr.derived == "modalities":
        series = SERIES_T.alias("modality_series")
        cond = condition(series.c.modality, "CS", value)
        return None if cond is None else exists().where(series.c.study_fk == STUDY_T.c.id, cond)
    if attr.derived == "sop-classes":
        instance, series = INSTANCE_T.alias("class_instance"), SERIES_T.alias("class_series")
        cond = condition(instance.c.sop_class_uid, "UI", value)
        if cond is None:
            return None
        return exists(
            select(instance.c.id)
            .select_from(instance.join(series, instance.c.series_fk == series.c.id))
            .where(series.c.study_fk == STUDY_T.c.id, cond)
        )
    if attr.match_column is not None:
        return condition(attr.match_column, attr.vr, value, is_name_column=True)
    return condition(attr.column, attr.vr, value)


def _plan_requests(plan: FindPlan, elem: DataElement) -> None:
    """Sequence matching, one item deep: a series matches when one of its items matches every key of the item."""
    items = list(elem.value or [])
    plan.request_keys = []
    if not items:
        return
    for item_elem in _entity_keys(items[0]):
        known = REQUEST_ITEM.get(item_elem.keyword)
        if known is None:
            plan.request_unknown.append((int(item_elem.tag), _vr(item_elem)))
            continue
        plan.request_keys.append(item_elem.keyword)
        vr, column = known
        try:
            cond = condition(column, vr, key_text(item_elem))
        except InvalidKey as exc:
            raise QueryError(QR_INVALID_KEY, str(exc)) from exc
        if cond is not None:
            plan.request_where.append(cond)
    if plan.request_where:
        plan.where.append(exists().where(REQUEST_T.c.series_fk == SERIES_T.c.id, *plan.request_where))


# -- running it -----------------------------------------------------------------------------------------------------
def _from_clause(level: str) -> Any:
    """The level's table joined up to the patient."""
    frm: FromClause = TABLE[level]
    for child in LEVELS[DEPTH[level] : 0 : -1]:
        parent = LEVELS[DEPTH[child] - 1]
        frm = frm.join(TABLE[parent], PARENT_FK[child] == TABLE[parent].c.id)
    return frm


def _select(plan: FindPlan, *, matching: bool = True) -> Any:
    """The returned columns of the level's rows (and the ids of the levels above); ``matching``: of the matches."""
    ids = [TABLE[lv].c.id.label(f"_id_{lv}") for lv in LEVELS[: DEPTH[plan.level] + 1]]
    wanted = {a.keyword: a for a in plan.returned if a.column is not None}
    for lv in plan.model.levels[: plan.model.levels.index(plan.level) + 1]:
        wanted.setdefault(UNIQUE_KEY[lv], ATTRS[UNIQUE_KEY[lv]])
    columns = [a.column.label(k) for k, a in wanted.items()]
    query = select(*ids, *columns).select_from(_from_clause(plan.level))
    return query.where(*plan.where) if matching else query


FIRST_PAGE = 16  # rows read for the first page: the first response goes out before the rest is read
Page = tuple[list[dict[str, Any]], dict[str, dict[int, Any]]]


def _page(engine: Engine, plan: FindPlan, query: Any, used: Callable[[set[int]], None] | None) -> Page | None:
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        if not rows:
            return None
        derived = _derived(conn, plan, rows)
    if used is not None:
        used({row[f"_id_{PATIENT}"] for row in rows})
    return rows, derived


def _pages(engine: Engine, plan: FindPlan, page_size: int, used: Callable[[set[int]], None] | None) -> Iterator[Page]:
    """The matches, a page of rows at a time with their derived attributes.

    The first ``FIRST_PAGE`` matches are read on their own, so the first response does not wait for the rest. Then
    the ids of the other matches are read in one query (one sort, however the database finds them: through the
    date index, the name index ...) and their rows a page at a time by id: a page never repeats the search."""
    id_col = TABLE[plan.level].c.id
    first = _page(engine, plan, _select(plan).where(id_col > 0).order_by(id_col).limit(FIRST_PAGE), used)
    if first is None:
        return
    yield first
    if len(first[0]) < FIRST_PAGE:
        return
    last = first[0][-1][f"_id_{plan.level}"]
    matched = select(id_col).select_from(_from_clause(plan.level)).where(*plan.where, id_col > last).order_by(id_col)
    with engine.connect() as conn:
        ids = array("q", conn.execute(matched).scalars())
    by_id = _select(plan, matching=False).where(id_col.in_(bindparam("ids", expanding=True))).order_by(id_col)
    for start in range(0, len(ids), page_size):
        page = _page(engine, plan, by_id.params(ids=list(ids[start : start + page_size])), used)
        if page is not None:  # None: every one of them was deleted meanwhile
            yield page


def run_find(
    engine: Engine,
    plan: FindPlan,
    *,
    retrieve_ae: str = "",
    page_size: int = PAGE_SIZE,
    used: Callable[[set[int]], None] | None = None,
) -> Iterator[Dataset]:
    """The response identifiers, one per match, in the order the entities were stored. ``used`` is told the patient
    row ids of each page read (a query counts as a use of what it finds: cache mode evicts by last use)."""
    for rows, derived in _pages(engine, plan, page_size, used):
        for row in rows:
            yield _identifier(plan, row, derived, retrieve_ae)


def run_find_encoded(
    engine: Engine,
    plan: FindPlan,
    *,
    implicit_vr: bool,
    retrieve_ae: str = "",
    page_size: int = PAGE_SIZE,
    used: Callable[[set[int]], None] | None = None,
) -> Iterator[bytes | Dataset]:
    """As ``run_find``, each identifier already encoded (Implicit or Explicit VR Little Endian) where
    ``encode.Encoder`` can, else as a ``Dataset`` (a value outside ASCII, a sequence)."""
    encoder = Encoder(plan, retrieve_ae, implicit_vr=implicit_vr)
    for rows, derived in _pages(engine, plan, page_size, used):
        for row in rows:
            data = encoder.encode(row, derived)
            yield data if data is not None else _identifier(plan, row, derived, retrieve_ae)


# derived attribute -> the deeper level whose rows it counts or lists, and the column it lists
_DERIVED_SOURCE: dict[str, tuple[str, Any]] = {
    "count-studies": (STUDY, None),
    "count-series": (SERIES, None),
    "count-instances": (IMAGE, None),
    "modalities": (SERIES, SERIES_T.c.modality),
    "sop-classes": (IMAGE, INSTANCE_T.c.sop_class_uid),
}


def _under(level: str, child: str) -> tuple[Any, Any]:
    """FROM clause over ``child`` rows and the column holding the id of their ancestor at ``level``."""
    frm: FromClause = TABLE[child]
    cur = child
    while DEPTH[cur] - 1 > DEPTH[level]:
        parent = LEVELS[DEPTH[cur] - 1]
        frm = frm.join(TABLE[parent], PARENT_FK[cur] == TABLE[parent].c.id)
        cur = parent
    return frm, PARENT_FK[cur]


def _derived(conn: Any, plan: FindPlan, rows: list[dict[str, Any]]) -> dict[str, dict[int, Any]]:
    out: dict[str, dict[int, Any]] = {}
    for attr in plan.returned:
        if not attr.derived:
            continue
        ids = sorted({row[f"_id_{attr.level}"] for row in rows})
        if attr.derived == "requests":
            out[attr.keyword] = _request_items(conn, plan, ids)
            continue
        child, listed = _DERIVED_SOURCE[attr.derived]
        frm, parent_fk = _under(attr.level, child)
        if listed is None:
            query = select(parent_fk, func.count()).select_from(frm).where(parent_fk.in_(ids)).group_by(parent_fk)
            out[attr.keyword] = {pid: str(n) for pid, n in conn.execute(query)}
        else:
            query = select(parent_fk, listed).select_from(frm).where(parent_fk.in_(ids)).group_by(parent_fk, listed)
            found: dict[int, list[str]] = defaultdict(list)
            for pid, value in conn.execute(query.order_by(parent_fk, listed)):
                if value:
                    found[pid].append(value)
            out[attr.keyword] = dict(found)
    return out


def _request_items(conn: Any, plan: FindPlan, series_ids: list[int]) -> dict[int, list[Dataset]]:
    keys = plan.request_keys or list(REQUEST_ITEM)
    columns = [REQUEST_ITEM[k][1].label(k) for k in keys]
    query = (
        select(REQUEST_T.c.series_fk, *columns)
        .where(REQUEST_T.c.series_fk.in_(series_ids), *plan.request_where)
        .order_by(REQUEST_T.c.id)
    )
    items: dict[int, list[Dataset]] = defaultdict(list)
    for row in conn.execute(query).mappings():
        item = Dataset()
        for keyword in keys:
            _put(item, keyword, REQUEST_ITEM[keyword][0], row[keyword])
        for tag, vr in plan.request_unknown:
            item.add_new(tag, vr, None)
        items[row["series_fk"]].append(item)
    return dict(items)


def _put(ds: Dataset, keyword: str, vr: str, value: Any) -> None:
    """Add a returned value. Values come from the index, not from a request: pydicom's per-value validation (a
    regular expression per element, a third of the time of a response) is skipped."""
    tag = _TAGS.get(keyword) or _TAGS.setdefault(keyword, int(tag_for_keyword(keyword) or 0))
    if vr == "SQ":
        value = Sequence(value or [])
    elif keyword in MULTI_VALUED:
        parts = value.split("\\") if isinstance(value, str) else list(value or [])
        value = [p for p in parts if p] or None
    elif value == "":
        value = None
    ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)


_TAGS: dict[str, int] = {}


def _identifier(plan: FindPlan, row: dict[str, Any], derived: dict[str, dict[int, Any]], retrieve_ae: str) -> Dataset:
    ds = Dataset()
    for keyword in {UNIQUE_KEY[lv] for lv in plan.model.levels[: plan.model.levels.index(plan.level) + 1]}:
        _put(ds, keyword, ATTRS[keyword].vr, row[keyword])
    for attr in plan.returned:
        if attr.derived:
            _put(ds, attr.keyword, attr.vr, derived[attr.keyword].get(row[f"_id_{attr.level}"]))
        else:
            _put(ds, attr.keyword, attr.vr, row[attr.keyword])
    for tag, vr in plan.unknown:
        ds.add_new(tag, vr, [] if vr == "SQ" else None)
    ds.QueryRetrieveLevel = plan.level
    if retrieve_ae:
        ds.RetrieveAETitle = retrieve_ae
    if "InstanceAvailability" in plan.controls:
        ds.InstanceAvailability = "ONLINE"
    if "TimezoneOffsetFromUTC" in plan.controls:
        ds.add_new("TimezoneOffsetFromUTC", "SH", None)
    apply_charset(ds, plan.charset)
    return ds
