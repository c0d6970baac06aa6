"""Schema versions (router/store/migrations, router/store/schema.py, docs/database.md), on SQLite and PostgreSQL.

- Drift: the models (SQLModel.metadata) and the head revision describe the same schema, whichever way a database
  reached head (the revisions run from nothing, or ``make_engine``'s create_all + stamp).
- Upgrade from the old schema: a database made before revisions (revision 0001's tables, created as main's
  create_all did) and filled with a row of every kind in every table (patients, studies, series, instances,
  jobs, the worklist, users, activity...), upgraded by ``router db upgrade``'s code: every row is still there.
- Refusals: an old schema, one from before revisions and a newer router's are refused with a message that says what
  to do; two processes creating one fresh database at once end with one revision row.

PostgreSQL parameters are interop (a throwaway cluster from the Debian package postgresql, tests/postgres.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, func, inspect, select, text
from sqlalchemy import types as sa_types
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from router.store import schema
from router.store.db import make_engine, open_engine
from router.store.migrations import runner
from router.store.models import Instance, Patient

from peers import RouterProcess, running
from postgres import PgCluster, postgres_cluster

HOW_TO = (
    "the models and the migrations describe different schemas: make a revision for the model change "
    "(alembic revision --autogenerate --rev-id NNNN -m 'what changed', see docs/database.md) and set "
    "router.store.schema.HEAD to it"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.interop)]  # PostgreSQL: the Debian package


def baseline_module() -> ModuleType:
    """versions/0001_baseline.py: its ``META`` is the schema before revisions, frozen."""
    path = schema.MIGRATIONS / "versions" / "0001_baseline.py"
    spec = importlib.util.spec_from_file_location("baseline_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASELINE: MetaData = baseline_module().META


# -- databases -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: an SQLite file, or a fresh database in the module's PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'router.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    with cluster.fresh_database() as name:
        yield cluster.url(name)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    found = open_engine(url)
    yield found
    found.dispose()


def differences(engine: Engine, metadata: MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def revisions_in(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.VERSION_TABLE.c.version_num)).scalars())


# -- rows of every kind in the old schema ---------------------------------------------------------------------------
WHEN = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def _value(column: Column[Any], n: int) -> Any:
    if column.foreign_keys or isinstance(column.type, sa_types.Integer):
        return n
    if isinstance(column.type, sa_types.Boolean):
        return n % 2 == 0
    if isinstance(column.type, sa_types.DateTime):
        return WHEN + timedelta(days=n, hours=n)
    assert isinstance(column.type, sa_types.String), f"{column} of type {column.type}: add a value for it"
    value = f"{column.name}-{n}-Müller^Jörg=山田^太郎"
    return value[: column.type.length] if column.type.length else value * 40  # Text: a long one


def fill(engine: Engine, metadata: MetaData, rows_per_table: int = 2) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of ``metadata`` gets rows with a value in every column (foreign keys point at row n of the
    parent); the rows as read back, per table."""
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            rows = [{c.name: _value(c, n) for c in table.columns} for n in range(1, rows_per_table + 1)]
            conn.execute(table.insert(), rows)
    return read_all(engine, metadata)


def read_all(engine: Engine, metadata: MetaData) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            t.name: [tuple(row) for row in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in metadata.sorted_tables
        }


# -- the tests -----------------------------------------------------------------------------------------------------
def test_head_is_the_single_head_of_the_revisions() -> None:
    heads = ScriptDirectory(str(schema.MIGRATIONS)).get_heads()
    assert heads == [schema.HEAD], f"the revisions' heads are {heads}: set router.store.schema.HEAD to the newest"


def test_the_baseline_is_every_table_of_the_models() -> None:
    """0001 is main's schema when revisions began: every table the models had then (later revisions add more)."""
    assert set(BASELINE.tables) <= set(SQLModel.metadata.tables)
    assert len(BASELINE.tables) == 21


@pytest.mark.parametrize("way", ["revisions", "make_engine"])
def test_models_and_head_revision_describe_the_same_schema(engine: Engine, url: str, way: str) -> None:
    if way == "revisions":
        assert runner.upgrade(engine) == runner.Upgraded(schema.FRESH, schema.HEAD)
    else:
        make_engine(url).dispose()
    assert revisions_in(engine) == [schema.HEAD]
    assert differences(engine, SQLModel.metadata) == [], HOW_TO


def test_the_drift_check_sees_a_model_change_without_a_revision(engine: Engine) -> None:
    runner.upgrade(engine)
    changed = MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["job"].append_column(Column("not_in_a_revision", Integer))
    Table("no_revision", changed, Column("id", Integer, primary_key=True))
    found = {(diff[0], getattr(diff[-1], "name", None)) for diff in differences(engine, changed)}
    assert found == {("add_column", "not_in_a_revision"), ("add_table", "no_revision")}


def test_a_database_from_before_revisions_is_upgraded_with_every_row(engine: Engine, url: str) -> None:
    BASELINE.create_all(engine)  # as main's make_engine made it: create_all, no alembic_version
    before = fill(engine, BASELINE)
    assert all(len(rows) == 2 for rows in before.values()) and len(before) == 21
    with pytest.raises(schema.SchemaMismatch, match=r"before schema versions.*`router db upgrade`"):
        make_engine(url)
    assert runner.upgrade(engine) == runner.Upgraded(schema.LEGACY, schema.HEAD)
    assert read_all(engine, BASELINE) == before
    assert differences(engine, SQLModel.metadata) == [], HOW_TO
    upgraded = make_engine(url)  # what serve opens: accepted now, and the router's models read the rows
    try:
        with Session(upgraded) as session:
            patient = session.get(Patient, 1)
            assert patient is not None and patient.name.startswith("name-1-Müller^Jörg")
            assert session.scalar(select(func.count()).select_from(Instance)) == 2
    finally:
        upgraded.dispose()


def test_an_older_routers_database_gets_the_tables_it_lacked(engine: Engine) -> None:
    """A router before ops_models had no users, sessions, activity...: 0001 adds them, keeps the rest."""
    index_tables = MetaData()
    for name in ("patient", "study", "series", "instance", "job"):
        BASELINE.tables[name].to_metadata(index_tables)
    index_tables.create_all(engine)
    before = fill(engine, index_tables)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_job_due"))  # made by an even older router
    runner.upgrade(engine)
    assert read_all(engine, index_tables) == before
    assert differences(engine, SQLModel.metadata) == [], HOW_TO


def test_a_database_without_a_baseline_column_is_refused(engine: Engine) -> None:
    odd = MetaData()
    Table("job", odd, Column("id", Integer, primary_key=True), Column("peer", Integer))
    odd.create_all(engine)
    with pytest.raises(schema.SchemaMismatch, match=r"table job has no column attempts, created_at, kind"):
        runner.upgrade(engine)
    assert inspect(engine).get_table_names() == ["job"]  # left as it was


def test_a_newer_routers_schema_is_refused(engine: Engine, url: str) -> None:
    runner.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(schema.VERSION_TABLE.update().values(version_num="9001"))
    with pytest.raises(schema.SchemaMismatch, match=r"revision 9001, which this router .* does not know"):
        make_engine(url)
    with pytest.raises(schema.SchemaMismatch, match="newer router"):
        runner.upgrade(engine)
    assert revisions_in(engine) == ["9001"]


def test_an_older_schema_is_refused_naming_router_db_upgrade(
    engine: Engine, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.upgrade(engine, to="0001")  # at 0001; this router's head is a later revision
    monkeypatch.setattr(schema, "HEAD", "0002")
    with pytest.raises(schema.SchemaMismatch, match=r"revision 0001, older than this router's 0002.*router db upgrade"):
        make_engine(url)


def open_at_once(url: str, openers: int = 4) -> list[BaseException]:
    """``make_engine(url)`` from ``openers`` threads at the same moment: what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(openers)

    def open_it() -> None:
        try:
            start.wait(10)
            make_engine(url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_processes_creating_one_fresh_database_at_once_agree(url: str) -> None:
    """The creation holds the writers' flock (SQLite) or an advisory lock (PostgreSQL): one revision row."""
    assert open_at_once(url) == []
    found = open_engine(url)
    try:
        assert revisions_in(found) == [schema.HEAD]
    finally:
        found.dispose()


def test_connections_opening_a_new_sqlite_database_at_once_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once, without its busy handler, while another connection opens the same
    new database: in about 1 of 25 such starts before the switch was tried again (``db._switch_to_wal``). Thirty
    new databases, four openers each."""
    for n in range(30):
        url = f"sqlite:///{tmp_path / f'router{n}.db'}"
        assert open_at_once(url) == [], f"database {n}"
        found = open_engine(url)
        try:
            with found.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            found.dispose()


def test_serve_refuses_an_old_schema_until_router_db_upgrade(workdir: Path) -> None:
    """The operator's path: serve refuses with what to run, ``router db current`` says the same, ``router db
    upgrade`` upgrades (and says what it did), serve then starts on the data."""
    router = RouterProcess(workdir)
    router.data_dir.mkdir()
    old = open_engine(f"sqlite:///{router.data_dir / 'router.db'}")
    BASELINE.create_all(old)
    before = fill(old, BASELINE)
    old.dispose()
    refused = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(router.config_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "before schema versions" in refused.stderr and "`router db upgrade`" in refused.stderr
    assert "Traceback" not in refused.stderr
    current = router.cli("db", "current", check=False)
    assert current.returncode == 1 and "made before schema versions" in current.stdout
    upgraded = router.cli("db", "upgrade")
    assert upgraded.stdout.strip() == f"database schema: made before schema versions (no revision) -> {schema.HEAD}"
    assert router.cli("db", "upgrade").stdout.strip() == f"database schema: {schema.HEAD}, nothing to do"
    assert router.cli("db", "current").stdout.strip() == f"{schema.HEAD} (up to date)"
    history = router.cli("db", "history").stdout
    assert "0001  Baseline" in history and f"{schema.HEAD}  " in history and "(head)" in history
    found = open_engine(f"sqlite:///{router.data_dir / 'router.db'}")
    try:
        assert read_all(found, BASELINE) == before
    finally:
        found.dispose()
    with running(router):
        router.start()  # fails unless it listens


def test_router_db_upgrade_is_announced_for_the_audit_trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.audit import events
    from plugins.audit.message import to_xml
    from plugins.audit.on_admin import admin_alert
    from router import cli
    from router.hooks import manager

    told: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(manager, "notify", lambda pm, hook, **kw: told.append((hook, kw)))
    config = tmp_path / "router.yaml"
    config.write_text(f"data_dir: {tmp_path / 'var'}\n", encoding="utf-8")
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0
    changes = [kw for hook, kw in told if hook == "router_admin_changed"]
    assert len(changes) == 1 and changes[0]["action"] == "schema.upgraded"
    assert changes[0]["detail"] == {"from": schema.FRESH, "to": schema.HEAD}
    assert cli.main(["--config", str(config), "db", "upgrade"]) == 0  # nothing to do: nothing announced
    assert len([hook for hook, _ in told if hook == "router_admin_changed"]) == 1
    change = changes[0]
    alert = admin_alert(events.Local("ROUTER", "h", "db").participant(), change["user"], change["role"],
                        change["action"], change["target"], change["address"], change["detail"])  # fmt: skip
    assert 'csd-code="110131"' in to_xml(alert, "ROUTER")  # Software Configuration
