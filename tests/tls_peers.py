"""Certificates (trustme) and TLS peers for the DICOM TLS tests: pynetdicom clients and servers over TLS, a plugin
that records the security notifications. Loopback only."""

from __future__ import annotations

import contextlib
import json
import ssl
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association

from router.tls import TlsSocket

from peers import free_port

VERIFICATION = "1.2.840.10008.1.1"
MPPS = "1.2.840.10008.3.1.2.3.3"
LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Pem:
    """A certificate (with its chain) and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    """A hospital CA, the router's, a modality's and a PACS's certificates from it, and a stranger's from another
    CA (all naming 127.0.0.1 and localhost)."""

    ca: Path
    router: Pem
    modality: Pem
    pacs: Pem
    other_ca: Path
    stranger: Pem


def _write(cert: trustme.LeafCert, folder: Path, name: str) -> Pem:
    pem = Pem(folder / f"{name}.pem", folder / f"{name}.key")
    cert.private_key_pem.write_to_path(str(pem.key))
    pem.cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return pem


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(organization_name="General Hospital"), trustme.CA(organization_name="Elsewhere")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    return Certs(
        ca=folder / "ca.pem",
        router=_write(ca.issue_cert(*LOOPBACK, common_name="ROUTER", organization_name="General Hospital"),
                      folder, "router"),
        modality=_write(ca.issue_cert(*LOOPBACK, common_name="CT1", organization_name="General Hospital"),
                        folder, "modality"),
        pacs=_write(ca.issue_cert(*LOOPBACK, common_name="PACS", organization_name="General Hospital"), folder, "pacs"),
        other_ca=folder / "other-ca.pem",
        stranger=_write(other.issue_cert(*LOOPBACK, common_name="CT1", organization_name="Elsewhere"),
                        folder, "stranger"),
    )  # fmt: skip


def subject_of(pem: Pem) -> str:
    """The subject of a certificate as ``NAME=value, ...`` (trustme adds an organizational unit of its own)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.cert.read_bytes())
    return ", ".join(attr.rfc4514_string() for attr in cert.subject)


def client_context(ca: Path, pem: Pem | None) -> ssl.SSLContext:
    """A TLS client context of a modality: trusts ``ca``, shows ``pem`` (None: no certificate).

    Its sockets are the router's ``TlsSocket``: the test process runs pynetdicom with the router's patches
    (conftest.py), whose DUL loop needs them to tell a TLS 1.3 session ticket from a PDU (docs/pynetdicom.md)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if pem is not None:
        ctx.load_cert_chain(pem.cert, pem.key)
    ctx.sslsocket_class = TlsSocket
    return ctx


def server_context(ca: Path, pem: Pem, require_client: bool = True) -> ssl.SSLContext:
    """A TLS server context of a peer: shows ``pem``; asks for a client certificate chaining to ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.load_cert_chain(pem.cert, pem.key)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    ctx.sslsocket_class = TlsSocket  # as in client_context
    return ctx


def associate_tls(
    port: int,
    context: ssl.SSLContext | None,
    calling: str = "CT1",
    contexts: Iterable[str] = (VERIFICATION,),
    timeout: float = 10,
    called: str = "ROUTER",
) -> Association:
    """A pynetdicom association to the router's TLS port (``context`` None: plain TCP). The caller releases it."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for uid in contexts:
        ae.add_requested_context(uid)
    tls_args = (context, "127.0.0.1") if context is not None else None
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)


def echo_tls(port: int, context: ssl.SSLContext | None, calling: str = "CT1", timeout: float = 10) -> int | None:
    """C-ECHO over TLS: its status, None when no association was made."""
    assoc = associate_tls(port, context, calling, timeout=timeout)
    if not assoc.is_established:
        return None
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        assoc.release()


# -- a peer listening over TLS ---------------------------------------------------------------------------------
@dataclass
class TlsPeer:
    """A pynetdicom SCP over TLS (pynetdicom's own ``ssl_context``): C-ECHO, every storage class (the bytes of
    each data set as received) and MPPS N-CREATE (the SOP Instance UIDs)."""

    aet: str
    context: ssl.SSLContext
    port: int = field(default_factory=free_port)
    stored: dict[str, bytes] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def _on_store(self, event: evt.Event) -> int:
        self.stored[str(event.request.AffectedSOPInstanceUID)] = bytes(event.request.DataSet.getvalue())
        return 0x0000

    def _on_create(self, event: evt.Event) -> tuple[int, None]:
        self.created.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000, None

    @contextlib.contextmanager
    def serving(self) -> Iterator[TlsPeer]:
        ae = AE(ae_title=self.aet)
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_supported_context(VERIFICATION, syntaxes)
        ae.add_supported_context(MPPS, syntaxes)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_CREATE, self._on_create)]
        server = ae.start_server(("127.0.0.1", self.port), block=False, ssl_context=self.context, evt_handlers=handlers)
        try:
            yield self
        finally:
            server.shutdown()

    def peer(self, tls: dict[str, Any]) -> dict[str, Any]:
        """Its entry under ``peers:``."""
        return {"ae_title": self.aet, "host": "127.0.0.1", "port": self.port, "tls": tls}


# -- a plugin recording the security notifications -------------------------------------------------------------
RECORDER = """
import json, os
from router.hooks.specs import hookimpl

EVENTS = {events!r}


def _record(**data):
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(data) + "\\n").encode())
    finally:
        os.close(fd)


@hookimpl
def router_tls_failed(direction, address, port, reason):
    _record(event="tls_failed", pid=os.getpid(), direction=direction, address=address, port=port, reason=reason)


@hookimpl
def router_association_rejected(calling_ae, address, reason, result, source, diagnostic):
    _record(event="rejected", calling_ae=calling_ae, address=address, reason=reason,
            codes=[result, source, diagnostic])
"""


def write_recorder(folder: Path) -> tuple[Path, Path]:
    """A plugin module recording ``router_tls_failed`` and ``router_association_rejected`` as JSON lines; its path
    (for ``plugin_modules``) and the events file."""
    events = folder / "security-events.jsonl"
    plugin = folder / "security_recorder.py"
    plugin.write_text(textwrap.dedent(RECORDER.format(events=str(events))))
    return plugin, events


def recorded(events: Path, event: str) -> list[dict[str, Any]]:
    if not events.exists():
        return []
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == event]
