"""``GET /api/nodes``: the router nodes sharing this database (``router nodes`` prints the same rows).

Each node's forward workers beat every few seconds (``router.outbox.leases``): its version, start, last heartbeat,
status (``up``, ``stopped``, ``silent``: its leases have expired and other nodes send its jobs), the jobs it
holds in flight, the outcomes it dropped (their jobs taken over) and the digest of the rules it routes by, with
whether they are the cluster's rule set (``router.rules.shared``). docs/cluster.md.
"""

from __future__ import annotations

from typing import Any

from router.listeners.http.api.endpoint import Call, Endpoint
from router.listeners.http.api.services import ApiServices
from router.outbox.leases import node_rows


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    def nodes(call: Call) -> dict[str, Any]:
        with services.engine.connect() as conn:
            rows = node_rows(conn, services.config.forward.lease_seconds)
        return {"node_id": services.config.node_id, "nodes": rows}

    return [
        Endpoint("GET", "/api/nodes", "The router nodes sharing this database: status, version, heartbeat, jobs held",
                 nodes, tag="router"),
    ]  # fmt: skip
