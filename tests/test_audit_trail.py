"""The audit trail's delivery, on the wire: RFC 5425 framing over a real TLS connection with a client certificate,
one RFC 5426 datagram per message, the durable spool (a repository down, a restart, two processes), the local file,
``router audit status``. Pure: the repositories are Python sockets on loopback (tests/test_audit_rsyslog.py runs
the real one)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugins.audit import events
from plugins.audit.message import AuditEvent
from plugins.audit.settings import Repository, Settings
from plugins.audit.syslog import BOM
from plugins.audit.trail import AuditTrail

from audit_repo import Certificates, schema_problems
from peers import free_port, wait_for

FAST = {"retry_initial": 0.05, "retry_max": 0.2, "timeout": 5.0}


class TlsRepository:
    """A syslog-over-TLS receiver that keeps the raw bytes of every connection; stops and starts on one port."""

    def __init__(self, certs: Certificates) -> None:
        self.port = free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.server_cert, certs.server_key)
        self.ctx.load_verify_locations(certs.ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED  # the router must show its certificate
        self.raw = bytearray()
        self.connections = 0
        self._sock: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TlsRepository:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen()
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except OSError:
                if sock.fileno() == -1:
                    return
                continue
            with self._lock:
                self.connections += 1
                self._open.append(tls)
            threading.Thread(target=self._read, args=(tls,), daemon=True).start()

    def _read(self, tls: ssl.SSLSocket) -> None:
        with contextlib.suppress(OSError):
            while chunk := tls.recv(65536):
                with self._lock:
                    self.raw += chunk

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: the port is free again
            self._sock.close()
            self._sock = None
        with self._lock:
            for tls in self._open:
                with contextlib.suppress(OSError):
                    tls.shutdown(socket.SHUT_RDWR)
                tls.close()
            self._open.clear()

    def frames(self) -> list[bytes]:
        """The syslog messages received, by their RFC 5425 octet counts (fails on anything else)."""
        with self._lock:
            data = bytes(self.raw)
        found, at = [], 0
        while at < len(data):
            length, space, _ = data[at : at + 12].partition(b" ")
            assert space and length.isdigit(), f"not octet-counting framing at byte {at}: {data[at : at + 40]!r}"
            start = at + len(length) + 1
            if start + int(length) > len(data):
                break  # the rest of this frame is still on its way
            found.append(data[start : start + int(length)])
            at = start + int(length)
        return found


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates.make(tmp_path / "certs")


@pytest.fixture
def repository(certs: Certificates) -> Iterator[TlsRepository]:
    repo = TlsRepository(certs)
    try:
        yield repo
    finally:
        repo.stop()


def tls_settings(certs: Certificates, port: int, **more: object) -> Settings:
    repo = {"host": "127.0.0.1", "port": port, "transport": "tls", "ca": certs.ca, "cert": certs.client}
    return Settings.model_validate({"repositories": [repo], **FAST, **more})


def event(n: int) -> AuditEvent:
    local = events.Local("ROUTER", "router.test", "serve")
    subject = events.alert_subject(f"file:///rules/{n}.yaml", f"change {n}", events.URI)
    return events.security_alert(events.SOFTWARE_CONFIGURATION, events.SUCCESS, local.participant(), [], [subject])


@contextlib.contextmanager
def trail(settings: Settings, data_dir: Path) -> Iterator[AuditTrail]:
    t = AuditTrail(settings, data_dir, "ROUTER")
    t.start()
    try:
        yield t
    finally:
        t.stop(flush=0.5)


def numbers(frames: list[bytes]) -> list[int]:
    return [int(f.split(b"file:///rules/", 1)[1].split(b".yaml", 1)[0]) for f in frames]


def test_tls_bytes_on_the_wire_are_octet_counted_rfc5424_messages(
    certs: Certificates, repository: TlsRepository, tmp_path: Path
) -> None:
    repository.start()
    with trail(tls_settings(certs, repository.port), tmp_path) as t:
        for n in range(3):
            t.record(event(n))
        wait_for(lambda: len(repository.frames()) == 3, 10, what="3 framed messages")
    frames = repository.frames()
    assert bytes(repository.raw) == b"".join(b"%d %s" % (len(f), f) for f in frames)  # nothing else on the wire
    for n, frame in enumerate(frames):
        header, bom, xml = frame.partition(BOM)
        fields = header.decode("ascii").split(" ")
        assert fields[0] == "<85>1" and fields[4] == str(os.getpid()) and fields[5:] == ["IHE+RFC-3881", "-", ""]
        assert bom and schema_problems(xml.decode()) == [] and f"/rules/{n}.yaml".encode() in xml
    assert next(iter(t.spool)).pending() == []


def test_udp_sends_one_whole_message_per_datagram(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        repo = {"host": "127.0.0.1", "port": rx.getsockname()[1], "transport": "udp"}
        with trail(Settings.model_validate({"repositories": [repo], **FAST}), tmp_path) as t:
            for n in range(3):
                t.record(event(n))
            datagrams = [rx.recv(65535) for _ in range(3)]
    assert numbers(datagrams) == [0, 1, 2]
    assert all(d.startswith(b"<85>1 ") and BOM in d and d.endswith(b"</AuditMessage>") for d in datagrams)


def test_messages_wait_while_the_repository_is_down_and_arrive_in_order_once(
    certs: Certificates, repository: TlsRepository, tmp_path: Path
) -> None:
    with trail(tls_settings(certs, repository.port), tmp_path) as t:
        [spool] = list(t.spool)
        for n in range(5):
            t.record(event(n))
        wait_for(lambda: "last_error" in spool.state(), 10, what="a failed delivery")
        assert len(spool.pending()) == 5  # durable, waiting
        repository.start()
        wait_for(lambda: not spool.pending(), 20, what="the spool to drain")
        for n in range(5, 8):
            t.record(event(n))
        wait_for(lambda: len(repository.frames()) == 8, 10, what="8 messages")
        repository.stop()  # the repository restarts: the router notices the closed connection before sending
        repository.start()
        t.record(event(8))
        wait_for(lambda: len(repository.frames()) == 9, 10, what="9 messages")
    assert numbers(repository.frames()) == list(range(9))


def test_the_spool_survives_a_restart(certs: Certificates, repository: TlsRepository, tmp_path: Path) -> None:
    settings = tls_settings(certs, repository.port)
    with trail(settings, tmp_path) as t:
        for n in range(3):
            t.record(event(n))
    repository.start()
    with trail(settings, tmp_path) as t:  # a new process on the same data folder
        wait_for(lambda: len(repository.frames()) == 3, 20, what="the spooled messages")
        t.record(event(3))
        wait_for(lambda: len(repository.frames()) == 4, 10, what="the new message")
    assert numbers(repository.frames()) == [0, 1, 2, 3]


def test_two_processes_share_one_spool_and_one_sender(
    certs: Certificates, repository: TlsRepository, tmp_path: Path
) -> None:
    """serve and forward write into the same spool; one of them sends, nothing twice."""
    settings = tls_settings(certs, repository.port)
    repository.start()
    with trail(settings, tmp_path) as first, trail(settings, tmp_path) as second:
        for n in range(20):
            (first if n % 2 else second).record(event(n))
        wait_for(lambda: len(repository.frames()) == 20, 20, what="20 messages")
    assert sorted(numbers(repository.frames())) == list(range(20))
    assert repository.connections == 1


def test_the_file_gets_every_message_on_its_own_line_readable_by_the_router_only(tmp_path: Path) -> None:
    settings = Settings.model_validate({"file": tmp_path / "audit" / "audit.xml.log"})
    with trail(settings, tmp_path) as t:
        for n in range(3):
            t.record(event(n))
    lines = (tmp_path / "audit" / "audit.xml.log").read_text().splitlines()
    assert len(lines) == 3 and all(schema_problems(line) == [] for line in lines)
    assert stat.S_IMODE((tmp_path / "audit" / "audit.xml.log").stat().st_mode) == 0o600


def test_repository_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="needs ca"):
        Repository.model_validate({"host": "arr", "port": 6514, "transport": "tls"})
    with pytest.raises(ValueError, match="for tls repositories"):
        Repository.model_validate({"host": "arr", "port": 514, "transport": "udp", "ca": "ca.pem"})
    with pytest.raises(ValueError, match="same transport"):
        Settings.model_validate({"repositories": [{"host": "a", "port": 514, "transport": "udp"}] * 2})
    resolved = Settings.model_validate(
        {"repositories": [{"host": "a", "port": 1, "transport": "tls", "ca": "c/ca.pem"}], "file": "a.log"}
    ).resolved(Path("/etc/router"))
    assert (resolved.repositories[0].ca, resolved.file) == (Path("/etc/router/c/ca.pem"), Path("/etc/router/a.log"))


def test_audit_status_shows_the_spool_depth_per_repository(certs: Certificates, tmp_path: Path) -> None:
    port = free_port()  # nothing listens: every message waits
    audit = {"repositories": [{"host": "127.0.0.1", "port": port, "transport": "tls", "ca": str(certs.ca),
                               "cert": str(certs.client)}], **FAST}  # fmt: skip
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "var"), "plugins": {"audit": audit}}))
    settings = Settings.model_validate(audit)
    with trail(settings, tmp_path / "var") as t:
        for n in range(4):
            t.record(event(n))
        out = subprocess.run([sys.executable, "-m", "router", "--config", str(config), "audit", "status"],
                             capture_output=True, text=True, timeout=60, env={**os.environ})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"tls://127.0.0.1:{port}" in out.stdout and " 4 " in out.stdout, out.stdout
    assert "sender: running" in out.stdout and "cannot connect" in out.stdout
