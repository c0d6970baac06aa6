"""Finding stored instances by study / series / instance UID for the DICOMweb retrieve services."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from router.store.tables import INSTANCE, SERIES, STUDY

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class BadUid(ValueError):
    """A path segment is not a UID (400)."""


@dataclass(frozen=True)
class StoredRef:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str


def check_uid(value: str) -> str:
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise BadUid(f"{value[:80]!r} is not a UID")
    return value


def stored(engine: Engine, study: str, series: str | None = None, instance: str | None = None) -> list[StoredRef]:
    """The stored instances under the given UIDs (in series, instance number order); [] when none."""
    for uid in (study, series, instance):
        if uid is not None:
            check_uid(uid)
    query = (
        select(STUDY.c.study_uid, SERIES.c.series_uid, INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid,
               INSTANCE.c.transfer_syntax, INSTANCE.c.path)
        .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
        .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
        .where(STUDY.c.study_uid == study)
        .order_by(SERIES.c.id, INSTANCE.c.id)
    )  # fmt: skip
    if series is not None:
        query = query.where(SERIES.c.series_uid == series)
    if instance is not None:
        query = query.where(INSTANCE.c.sop_uid == instance)
    with engine.connect() as conn:
        return [StoredRef(*row) for row in conn.execute(query).all()]
