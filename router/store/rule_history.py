"""Previous versions of rule files: a save through the admin API keeps what it replaced, so it can be reverted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from router.store.models import utcnow
from router.store.tables import RULE_VERSION


def keep_version(engine: Engine, file: str, text: str, by: str) -> int:
    """Keep ``text`` (``""``: the file did not exist) as a previous version of ``file``; its version number."""
    with engine.begin() as conn:
        found = conn.execute(
            insert(RULE_VERSION)
            .values(file=file, text=text, saved_by=by[:64], saved_at=utcnow())
            .returning(RULE_VERSION.c.id)
        ).scalar_one()
    return int(found)


def versions(engine: Engine, file: str) -> list[dict[str, Any]]:
    """The kept versions of ``file``, newest first: ``version``, ``replaced_at``, ``replaced_by``, ``size``."""
    query = (
        select(RULE_VERSION.c.id, RULE_VERSION.c.saved_at, RULE_VERSION.c.saved_by, RULE_VERSION.c.text)
        .where(RULE_VERSION.c.file == file)
        .order_by(RULE_VERSION.c.id.desc())
    )
    with engine.connect() as conn:
        return [
            {"version": i, "replaced_at": at, "replaced_by": by, "size": len(text.encode())}
            for i, at, by, text in conn.execute(query).all()
        ]


def version_text(engine: Engine, file: str, version: int) -> str | None:
    query = select(RULE_VERSION.c.text).where(RULE_VERSION.c.file == file, RULE_VERSION.c.id == version)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return str(found) if found is not None else None
