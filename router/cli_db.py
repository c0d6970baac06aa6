"""``router db upgrade|current|history``: the database schema's revisions (router/store/migrations, docs/database.md).

``upgrade`` brings the database named by ``database_url`` from any revision (or from before revisions, or from
nothing) to this router's head, and is announced with ``router_admin_changed`` (action ``schema.upgraded``) when it
changed anything. Stop every router on the database first and back it up: see docs/database.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router.config import RouterConfig, load_config

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _config(args: argparse.Namespace) -> RouterConfig:
    return load_config(args.config)


def _engine(cfg: RouterConfig) -> Any:
    from router.store.db import open_engine

    return open_engine(cfg.effective_database_url)


def _describe(revision: str) -> str:
    from router.store import schema

    if revision == schema.FRESH:
        return "empty (no router tables)"
    if revision == schema.LEGACY:
        return "made before schema versions (no revision)"
    return revision


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from router.store.migrations import runner
    from router.store.schema import SchemaMismatch

    cfg = _config(args)
    engine = _engine(cfg)
    try:
        done = runner.upgrade(engine, args.to)
    except SchemaMismatch as exc:
        print(f"router: cannot upgrade: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        engine.dispose()
    if done.before == done.after:
        print(f"database schema: {_describe(done.after)}, nothing to do")
        return EXIT_OK
    _announce(cfg, done.before, done.after)
    print(f"database schema: {_describe(done.before)} -> {done.after}")
    return EXIT_OK


def _announce(cfg: RouterConfig, before: str, after: str) -> None:
    """``router_admin_changed`` (``schema.upgraded``) for the audit trail, by ``cli:`` and the login name."""
    import getpass

    from router.hooks.manager import build_plugin_manager, notify

    pm = build_plugin_manager(cfg)
    notify(pm, "router_startup", config=cfg, process="db", plugin_settings=pm.settings)  # opens the audit trail
    try:
        notify(pm, "router_admin_changed", user=f"cli:{getpass.getuser()}", role="", action="schema.upgraded",
               target=f"database schema {after}", address="", detail={"from": before, "to": after})  # fmt: skip
    finally:
        notify(pm, "router_shutdown", process="db")


def cmd_db_current(args: argparse.Namespace) -> int:
    from router.store import schema
    from router.store.migrations import runner

    engine = _engine(_config(args))
    try:
        found = runner.current(engine)
    finally:
        engine.dispose()
    state = "up to date" if found == schema.HEAD else f"this router needs {schema.HEAD}: see `router db upgrade`"
    print(f"{_describe(found)} ({state})")
    return EXIT_OK if found == schema.HEAD else EXIT_PROBLEMS


def cmd_db_history(args: argparse.Namespace) -> int:
    from router.store import schema
    from router.store.migrations import runner

    for revision, message in runner.history():
        print(f"{revision}  {message}{'  (head)' if revision == schema.HEAD else ''}")
    return EXIT_OK


def add_db_commands(sub: Any) -> tuple[argparse.ArgumentParser, ...]:
    db = sub.add_parser("db", help="the database schema: upgrade, current, history").add_subparsers(
        dest="db_cmd", required=True
    )
    upgrade = db.add_parser("upgrade", help="bring the database to this router's schema (stop the routers first)")
    upgrade.add_argument("--to", default="head", help="a revision (default: head)")
    upgrade.set_defaults(func=cmd_db_upgrade)
    current = db.add_parser("current", help="the database's schema revision; exit 1 when it is not this router's")
    current.set_defaults(func=cmd_db_current)
    history = db.add_parser("history", help="the schema revisions, oldest first")
    history.set_defaults(func=cmd_db_history)
    for command in (upgrade, current, history):  # `router db upgrade --config X` reads naturally too
        command.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return upgrade, current, history
