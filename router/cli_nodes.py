"""``router nodes``: the routers sharing this database, their version, heartbeat and the jobs they hold.

Each node's forward workers write a heartbeat row every few seconds (``router.outbox.leases``); a node silent for
longer than ``forward.lease_seconds`` has lost its leases, and the other nodes send its jobs. ``dropped``: outcomes the
node dropped since its start because their jobs had been taken over; ``rules``: the digest of the rules it routes by,
``DIFFERS`` when they are not the cluster's rule set (``router.rules.shared``). docs/cluster.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from router.config import load_config

EXIT_OK = 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from router.outbox.leases import node_rows
    from router.store.db import make_engine

    cfg = load_config(args.config)
    engine = make_engine(cfg.effective_database_url)
    try:
        with engine.connect() as conn:
            nodes = node_rows(conn, cfg.forward.lease_seconds)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"nodes": nodes}, indent=2))
        return EXIT_OK
    if not nodes:
        print("no node has run its forward workers on this database yet")
        return EXIT_OK
    print(f"{'node':<24} {'status':<8} {'version':<10} {'started':<20} {'heartbeat':>10} {'holds':>6} "
          f"{'dropped':>7}  rules")  # fmt: skip
    for node in nodes:
        rules = _rules(node) + (" (this one)" if node["node_id"] == cfg.node_id else "")
        print(f"{node['node_id']:<24} {node['status']:<8} {node['version']:<10} {node['started_at'][:19]:<20} "
              f"{node['heartbeat_age']:>8.1f} s {node['holds']:>6} {node['dropped']:>7}  {rules}")  # fmt: skip
    return EXIT_OK


def _rules(node: dict[str, Any]) -> str:
    """The digest of the rules a node routes by (12 hex digits), and whether they are the cluster's rule set."""
    if not node["rules"]:
        return "-"
    return f"{node['rules'][:12]}{'' if node['rules_current'] else ' DIFFERS'}"


def add_nodes_command(sub: Any) -> argparse.ArgumentParser:
    """``router nodes``: one registration line in router/cli.py."""
    p = sub.add_parser("nodes", help="the router nodes sharing this database: heartbeat, version, jobs held")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_nodes)
    return p
