"""Which stored instances a C-MOVE or C-GET identifier names (PS3.4 C.4.2.2.1, C.4.3.2.1).

The identifier must name the retrieve level's unique key: a single value, or a list of UIDs (a list of Patient
IDs at PATIENT level). Unique keys of higher levels may be left out (relational retrieval, always offered since
UIDs identify their entities on their own); when present they must match too. Other keys are ignored.

Instances are streamed per (SOP class, transfer syntax), ``PAGE_SIZE`` at a time, so a sender can open an
association with exactly the presentation contexts it needs, and nothing is held in memory but a page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from router import storage
from router.query.find import QueryError, element, key_text, query_level
from router.query.matching import InvalidKey, condition, is_universal
from router.query.model import (
    ATTRS,
    INSTANCE_T,
    PATIENT,
    PATIENT_T,
    SERIES_T,
    STUDY_T,
    UNIQUE_KEY,
    InfoModel,
)
from router.scu.association import Item
from router.statuses import QR_IDENTIFIER_MISMATCH, QR_INVALID_KEY

PAGE_SIZE = 256


@dataclass(frozen=True)
class RetrievePlan:
    level: str
    where: tuple[Any, ...]
    needs_patient: bool


@dataclass(frozen=True)
class Match:
    sop_instance_uid: str
    item: Item
    study_uid: str = ""


def plan_retrieve(model: InfoModel, identifier: Dataset) -> RetrievePlan:
    level = query_level(model, identifier)
    keyword = UNIQUE_KEY[level]
    elem = element(identifier, keyword)
    if elem is None or is_universal(key_text(elem)):
        raise QueryError(QR_IDENTIFIER_MISMATCH, f"a {level} retrieve needs {keyword} (a value or a list of UIDs)")
    where = []
    needs_patient = False
    for lv in model.levels[: model.levels.index(level) + 1]:
        key = UNIQUE_KEY[lv]
        elem = element(identifier, key)
        if elem is None:
            continue
        value = key_text(elem)
        if "*" in value or "?" in value:
            raise QueryError(QR_IDENTIFIER_MISMATCH, f"{key}: no wildcards in a retrieve")
        attr = ATTRS[key]
        try:
            cond = condition(attr.column, attr.vr, value)
        except InvalidKey as exc:
            raise QueryError(QR_INVALID_KEY, str(exc)) from exc
        if cond is not None:
            where.append(cond)
            needs_patient = needs_patient or lv == PATIENT
    return RetrievePlan(level, tuple(where), needs_patient)


def _from(plan: RetrievePlan) -> Any:
    frm = INSTANCE_T.join(SERIES_T, INSTANCE_T.c.series_fk == SERIES_T.c.id).join(
        STUDY_T, SERIES_T.c.study_fk == STUDY_T.c.id
    )
    if plan.needs_patient:
        frm = frm.join(PATIENT_T, STUDY_T.c.patient_fk == PATIENT_T.c.id)
    return frm


def count_matches(engine: Engine, plan: RetrievePlan) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(_from(plan)).where(*plan.where)).scalar_one())


def context_pairs(engine: Engine, plan: RetrievePlan) -> list[tuple[str, str]]:
    """The distinct (SOP class, transfer syntax) of the matches, sorted."""
    query = (
        select(INSTANCE_T.c.sop_class_uid, INSTANCE_T.c.transfer_syntax)
        .select_from(_from(plan))
        .where(*plan.where)
        .distinct()
    )
    with engine.connect() as conn:
        return sorted((str(a), str(b)) for a, b in conn.execute(query))


def iter_matches(
    engine: Engine, plan: RetrievePlan, pair: tuple[str, str], data_dir: Path, page_size: int = PAGE_SIZE
) -> Iterator[Match]:
    """The matches of one (SOP class, transfer syntax), in the order they were stored."""
    sop_class, ts = pair
    query = (
        select(INSTANCE_T.c.id, INSTANCE_T.c.sop_uid, INSTANCE_T.c.path, STUDY_T.c.study_uid)
        .select_from(_from(plan))
        .where(*plan.where, INSTANCE_T.c.sop_class_uid == sop_class, INSTANCE_T.c.transfer_syntax == ts)
        .order_by(INSTANCE_T.c.id)
        .limit(page_size)
    )
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(query.where(INSTANCE_T.c.id > last)).all()
        for _id, sop_uid, relpath, study_uid in rows:
            yield Match(str(sop_uid), Item(storage.at(data_dir).local_path(relpath), sop_class, ts), str(study_uid))
        if len(rows) < page_size:
            return
        last = rows[-1][0]
