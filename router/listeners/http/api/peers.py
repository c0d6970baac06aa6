"""The router and its peers: ``/api/status``, ``/api/peers``, echo, pause and resume.

An echo is what the peer's type allows: C-ECHO for a DICOM peer, a TCP connection for an MLLP one (MLLP has no
echo, and a test message would be a message), an HTTP request to a DICOMweb peer's STOW-RS URL (any HTTP answer
means it is there). A plugin's peer type has no check here. Pause and resume are durable
(``router.store.peer_state``): the forward workers, in their own process, stop claiming a paused peer's jobs at
their next claim; a resumed peer's are woken at once.
"""

from __future__ import annotations

import shutil
import socket
import time
from typing import Any

import httpx
from sqlalchemy import func, select

import router
from router.config import AnyPeer, DicomPeer, DicomwebPeer, MllpPeer
from router.listeners.http.api.endpoint import ApiError, Call, Endpoint, Param
from router.listeners.http.api.services import ApiServices
from router.store.activity import last_delivery
from router.store.models import JobState
from router.store.peer_state import paused_peers, set_paused
from router.store.tables import INSTANCE

PEER = Param("name", "peer name (peers: in the configuration)", where="path", max_length=64)


def address_of(peer: AnyPeer) -> str:
    if isinstance(peer, DicomPeer):
        return f"{peer.ae_title}@{peer.host}:{peer.port}"
    if isinstance(peer, MllpPeer):
        return peer.mllp
    if isinstance(peer, DicomwebPeer):
        return peer.stow_url
    return ""


def echo_peer(services: ApiServices, peer: AnyPeer) -> dict[str, Any]:
    """Whether ``peer`` answers, how, and how long it took."""
    timeout = services.config.dicom.timeouts.connect
    started = time.monotonic()
    try:
        if isinstance(peer, DicomPeer):
            from router.scu.association import AssociationFailed
            from router.scu.commands import echo  # late: pynetdicom's requestor only when asked

            try:
                status = echo(services.config, peer)
            except AssociationFailed as exc:
                return _reached(False, "C-ECHO", str(exc), started)
            return _reached(status == 0, "C-ECHO", f"status 0x{status:04X}", started, status)
        if isinstance(peer, MllpPeer):
            with socket.create_connection(peer.address, timeout=timeout):
                return _reached(True, "TCP connect", "connected", started)
        if isinstance(peer, DicomwebPeer):
            answer = httpx.request("OPTIONS", peer.stow_url, timeout=timeout)
            return _reached(True, "HTTP OPTIONS", f"HTTP {answer.status_code}", started, answer.status_code)
    except (OSError, httpx.HTTPError) as exc:
        return _reached(False, "connect", str(exc) or type(exc).__name__, started)
    raise ApiError(422, f"peers of type {peer.type!r} have no reachability check")


def _reached(ok: bool, check: str, detail: str, started: float, status: int | None = None) -> dict[str, Any]:
    return {"ok": ok, "check": check, "detail": detail, "status": status,
            "ms": round((time.monotonic() - started) * 1000, 1)}  # fmt: skip


class PeersApi:
    """The handlers of /api/status and /api/peers."""

    def __init__(self, services: ApiServices) -> None:
        self.services = services
        self.config = services.config
        self.engine = services.engine

    def peer(self, name: str) -> AnyPeer:
        found = self.config.peers.get(name)
        if found is None:
            raise ApiError(404, f"no peer {name!r} in the configuration")
        return found

    def status(self, call: Call) -> dict[str, Any]:
        counts = self.services.outbox.counts()
        with self.engine.connect() as conn:
            objects, size = conn.execute(select(func.count(), func.coalesce(func.sum(INSTANCE.c.size), 0))).one()
        disk = shutil.disk_usage(self.config.data_dir)
        ports = dict(self.services.ports())
        url, config = self.engine.url, self.config
        return {
            "version": router.__version__, "ae_title": config.ae_title, "started_at": self.services.started_at,
            "uptime_seconds": round(time.monotonic() - self.services.started, 1),
            "listeners": {
                "dicom": {"host": config.dicom.host, "port": ports.get("dicom")},
                "hl7": {"host": config.hl7.host, "port": ports.get("hl7")},
                "http": {"host": config.http.host, "port": ports.get("http"), "tls": config.http.tls is not None},
            },
            "database": {"dialect": self.engine.dialect.name, "database": url.database or "", "host": url.host or ""},
            "storage": {"objects": int(objects), "bytes": int(size), "disk_free_bytes": disk.free,
                        "disk_total_bytes": disk.total},
            "queue": {state: sum(n for (_p, s), n in counts.items() if s == state) for state in JobState.ALL},
            "rules": {"files": list(self.services.rules.current.files), "rules": len(self.services.rules.current.rules),
                      "problems": list(self.services.rules.last_problems)},
        }  # fmt: skip

    def peers(self, call: Call) -> dict[str, Any]:
        counts = self.services.outbox.counts()
        paused = paused_peers(self.engine)
        delivered = last_delivery(self.engine, self.config.peers)
        return {"items": [
            {"name": name, "type": p.type, "address": address_of(p), "paused": name in paused,
             "paused_by": paused.get(name, {}).get("by"), "paused_at": paused.get(name, {}).get("at"),
             "last_delivery": delivered.get(name),
             "queue": {state: counts.get((name, state), 0) for state in JobState.ALL}}
            for name, p in self.config.peers.items()
        ]}  # fmt: skip

    def echo(self, call: Call) -> dict[str, Any]:
        name = call.params["name"]
        return {"peer": name, "address": address_of(self.peer(name)), **echo_peer(self.services, self.peer(name))}

    def pause(self, paused: bool) -> Any:
        def handler(call: Call) -> dict[str, Any]:
            name = call.params["name"]
            self.peer(name)
            changed = set_paused(self.engine, name, paused, call.user)
            if changed:
                action = "peer.paused" if paused else "peer.resumed"
                self.services.changed(
                    call.user, call.identity.role if call.identity else "", action, name, call.address
                )
                if not paused:
                    self.services.wake({name})
            return {"peer": name, "paused": paused, "changed": changed}

        return handler

    def endpoints(self) -> list[Endpoint]:
        ok_or_404 = {404: "no such peer"}
        return [
            Endpoint(
                "GET",
                "/api/status",
                "Version, uptime, listeners, database, storage use, queue totals",
                self.status,
                tag="router",
            ),
            Endpoint(
                "GET",
                "/api/peers",
                "Every peer: type, address, paused, last delivery, jobs per state",
                self.peers,
                tag="peers",
            ),
            Endpoint(
                "POST",
                "/api/peers/{name}/echo",
                "Is the peer there: C-ECHO (DICOM), TCP (MLLP), HTTP (DICOMweb)",
                self.echo,
                params=(PEER,),
                responses={**ok_or_404, 422: "no check for this peer type"},
                tag="peers",
            ),
            Endpoint(
                "POST",
                "/api/peers/{name}/pause",
                "Stop forwarding to the peer (its jobs stay pending)",
                self.pause(True),
                role="operator",
                params=(PEER,),
                responses=ok_or_404,
                tag="peers",
            ),
            Endpoint(
                "POST",
                "/api/peers/{name}/resume",
                "Forward to the peer again",
                self.pause(False),
                role="operator",
                params=(PEER,),
                responses=ok_or_404,
                tag="peers",
            ),
        ]


def make_endpoints(services: ApiServices) -> list[Endpoint]:
    return PeersApi(services).endpoints()
