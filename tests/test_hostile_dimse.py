"""Hostile DICOM peers against a live router: malformed PDUs, PDUs out of order, a 4 GiB length, associations that
stop half-way, a slow drip. Each ends with an A-ABORT or a timeout, costs no memory it did not receive, and the
router serves another association meanwhile (docs/security.md lists them; ``read_pdu`` in router/_pynetdicom/reactor.py
bounds them).

The router runs as a process (``router serve``) with short timeouts: ACSE 2 s, network 3 s. The hostile peer is a
raw socket on loopback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context

from router.config import parse_config
from router.scu import commands as scu
from router.scu.association import AssociationFailed

from peers import SECONDARY_CAPTURE, RouterProcess, echo, free_port, wait_for

ACSE, NETWORK = 2.0, 3.0
VERIFICATION = "1.2.840.10008.1.1"
A_ABORT = 0x07
MAX_PDU = 262144  # the router's default dicom.max_pdu


# -- PDUs ------------------------------------------------------------------------------------------------------
def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


def associate_rq(calling: str = "HOSTILE") -> bytes:
    contexts = []
    for number, uid in enumerate((VERIFICATION, SECONDARY_CAPTURE)):
        cx = build_context(uid, ExplicitVRLittleEndian)
        cx.context_id = 2 * number + 1
        contexts.append(cx)
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = calling, "ROUTER"
    prim.presentation_context_definition_list = contexts
    length, impl = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received = 16384
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1.1"
    prim.user_information = [length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return bytes(pdu.encode())


def p_data(message: C_ECHO_RQ | C_STORE_RQ, context_id: int) -> bytes:
    out = b""
    for primitive in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += bytes(pdu.encode())
    return out


def c_echo_rq() -> bytes:
    prim = C_ECHO()
    prim.MessageID, prim.AffectedSOPClassUID = 1, VERIFICATION
    msg = C_ECHO_RQ()
    msg.primitive_to_message(prim)
    return p_data(msg, 1)


def c_store_command_only() -> bytes:
    """The command set of a C-STORE-RQ that announces a data set, without the data set."""
    prim = C_STORE()
    prim.MessageID, prim.Priority = 2, 2
    prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = SECONDARY_CAPTURE, "1.2.3.4.5"
    prim.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    command_pdus = []
    for primitive in msg.encode_msg(3, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        encoded = bytes(pdu.encode())
        if encoded[11] & 0x01:  # the message control header of a command fragment
            command_pdus.append(encoded)
    return b"".join(command_pdus)


A_ASSOCIATE_AC_HEADER_ONLY = header(0x02, 4)
A_RELEASE_RQ = header(0x05, 4) + b"\0\0\0\0"


# -- the router and the hostile peer ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("hostile-dimse")
    proc = RouterProcess(workdir, dicom={"timeouts": {"acse": ACSE, "network": NETWORK}}).start()
    try:
        yield proc
    finally:
        proc.stop()


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield sock
    finally:
        sock.close()


def associated(sock: socket.socket) -> None:
    """Send our A-ASSOCIATE-RQ and read the router's A-ASSOCIATE-AC."""
    sock.sendall(associate_rq())
    pdu_type, length = struct.unpack(">BxL", read_exactly(sock, 6))
    read_exactly(sock, length)
    assert pdu_type == 0x02, f"expected an A-ASSOCIATE-AC, got PDU type 0x{pdu_type:02X}"


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        got = sock.recv(count - len(data))
        assert got, f"closed after {len(data)} of {count} bytes"
        data += got
    return data


def until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the router sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data, time.monotonic() - started


def still_open(sock: socket.socket) -> bool:
    """The router has not closed the connection (nor sent anything) yet."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def assert_served_meanwhile(router: RouterProcess, hostile: socket.socket) -> None:
    """Another association is served while the hostile connection is still open."""
    started = time.monotonic()
    assert echo(router.port), "a C-ECHO on another association was not served"
    assert time.monotonic() - started < 2, "a C-ECHO on another association waited for the hostile one"
    assert still_open(hostile), "the hostile connection ended before the C-ECHO: the test proves nothing"


def assert_aborted(data: bytes, took: float, within: float = 1.0) -> None:
    assert data[:1] == bytes([A_ABORT]), f"expected an A-ABORT, got {data[:16]!r}"
    assert took < within, f"the A-ABORT came after {took:.1f}s"


# -- before an association -----------------------------------------------------------------------------------
REFUSED_AT_ONCE = {
    "4 GiB A-ASSOCIATE-RQ": header(0x01, 0xFFFFFFFF),
    "A-ASSOCIATE-RQ over the 1 MiB cap": header(0x01, (1 << 20) + 1),
    "unknown PDU type": header(0x09, 4) + b"\0\0\0\0",
    "P-DATA-TF before the association": c_echo_rq(),
    "A-RELEASE-RQ before the association": A_RELEASE_RQ,
    "A-ASSOCIATE-AC sent to the acceptor": A_ASSOCIATE_AC_HEADER_ONLY + b"\0\0\0\0",
    "A-ASSOCIATE-RQ of junk": header(0x01, 64) + bytes(range(64)),
    "A-ASSOCIATE-RQ with an item overrunning it": associate_rq()[:-20] + b"\x52\x00\xff\xff" + bytes(16),
}


@pytest.mark.parametrize("payload", REFUSED_AT_ONCE.values(), ids=REFUSED_AT_ONCE.keys())
def test_malformed_or_out_of_order_pdu_is_aborted_at_once(router: RouterProcess, payload: bytes) -> None:
    rss_before = rss_mb(router.proc.pid)  # type: ignore[union-attr]
    with connection(router.port) as sock:
        sock.sendall(payload)
        data, took = until_closed(sock, 5)
    assert_aborted(data, took)
    assert rss_mb(router.proc.pid) - rss_before < 32, "the router allocated memory for bytes it never received"  # type: ignore[union-attr]
    assert echo(router.port)


STALLED = {
    "nothing sent": b"",
    "half a PDU header": header(0x01, 244)[:3],
    "an A-ASSOCIATE-RQ cut short": associate_rq()[:100],
    "a 1 MiB A-ASSOCIATE-RQ, 100 bytes of it": header(0x01, 1 << 20) + bytes(100),
}


@pytest.mark.parametrize("payload", STALLED.values(), ids=STALLED.keys())
def test_association_request_that_stops_half_way_times_out(router: RouterProcess, payload: bytes) -> None:
    with connection(router.port) as sock:
        sock.sendall(payload)
        assert_served_meanwhile(router, sock)
        data, took = until_closed(sock, ACSE + 5)
    assert not data or data[:1] == bytes([A_ABORT])
    assert ACSE - 0.5 < took < ACSE + 2, f"closed after {took:.1f}s, expected about the ACSE timeout ({ACSE}s)"


def test_slow_drip_association_request_is_closed_although_bytes_keep_coming(router: RouterProcess) -> None:
    """One byte every 0.2 s: each wait is short, but the whole PDU must come within the ACSE timeout (and its
    length at 16 KiB/s)."""
    request = associate_rq()
    with connection(router.port) as sock:
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(OSError):
            for byte in request[:-1]:
                sock.sendall(bytes([byte]))
                sent += 1
                if not still_open(sock):
                    break
                if sent == 3:
                    assert_served_meanwhile(router, sock)
                time.sleep(0.2)  # the drip is the scenario
        took = time.monotonic() - started
    assert sent < len(request) - 1, "the router waited for the whole drip"
    assert took < ACSE + 2, f"the drip went on for {took:.1f}s"


# -- during an association ------------------------------------------------------------------------------------
def test_well_formed_association_is_served(router: RouterProcess) -> None:
    """The hostile peer's PDUs are right when they are meant to be: a C-ECHO on them is answered."""
    with connection(router.port) as sock:
        associated(sock)
        sock.sendall(c_echo_rq())
        pdu_type, length = struct.unpack(">BxL", read_exactly(sock, 6))
        body = read_exactly(sock, length)
        assert pdu_type == 0x04 and body[5] & 0x01, "expected the C-ECHO-RSP command"
        sock.sendall(A_RELEASE_RQ)
        assert read_exactly(sock, 1) == b"\x06"  # A-RELEASE-RP


ABORTED_DURING = {
    "P-DATA-TF longer than the maximum PDU": header(0x04, MAX_PDU + 7) + bytes(1000),
    "4 GiB P-DATA-TF": header(0x04, 0xFFFFFFFF),
    "a second A-ASSOCIATE-RQ": associate_rq(),
    "unknown PDU type": header(0x0A, 0),
}


@pytest.mark.parametrize("payload", ABORTED_DURING.values(), ids=ABORTED_DURING.keys())
def test_malformed_or_out_of_order_pdu_during_an_association_is_aborted(router: RouterProcess, payload: bytes) -> None:
    with connection(router.port) as sock:
        associated(sock)
        sock.sendall(payload)
        data, took = until_closed(sock, 5)
    assert_aborted(data, took)


STOPPED_DURING = {
    "half a P-DATA-TF": c_echo_rq()[:30],
    "a C-STORE command whose data set never comes": c_store_command_only(),
}


@pytest.mark.parametrize("payload", STOPPED_DURING.values(), ids=STOPPED_DURING.keys())
def test_association_that_stops_half_way_times_out(router: RouterProcess, payload: bytes) -> None:
    with connection(router.port) as sock:
        associated(sock)
        sock.sendall(payload)
        assert_served_meanwhile(router, sock)
        data, took = until_closed(sock, NETWORK + 5)
    assert not data or data[:1] == bytes([A_ABORT])
    assert NETWORK - 0.5 < took < NETWORK + 2, f"closed after {took:.1f}s, expected the network timeout ({NETWORK}s)"


# -- the router as the requestor ------------------------------------------------------------------------------
def test_router_as_requestor_refuses_a_4gib_answer(tmp_path: Path) -> None:
    """A peer that answers our A-ASSOCIATE-RQ with a header claiming 4 GiB: the association fails at once, and the
    claimed bytes are never allocated."""
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    received: list[bytes] = []

    def hostile_acceptor() -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(65536))
            conn.sendall(header(0x02, 0xFFFFFFFF) + bytes(64))
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while conn.recv(4096):
                    pass

    thread = threading.Thread(target=hostile_acceptor, daemon=True)
    thread.start()
    config = parse_config(
        {"data_dir": "var", "peers": {"EVIL": {"ae_title": "EVIL", "host": "127.0.0.1", "port": port}}}, tmp_path
    )
    peer = config.dicom_peer("EVIL")
    assert peer is not None
    started = time.monotonic()
    try:
        with pytest.raises(AssociationFailed):
            scu.echo(config, peer)
    finally:
        server.close()
    assert time.monotonic() - started < 5
    wait_for(lambda: not thread.is_alive(), 10, what="the hostile acceptor to see the connection end")
    assert received and received[0][:1] == b"\x01"


def test_sends_to_a_peer_that_stops_reading_are_bounded() -> None:
    """A peer that stops reading our answers: a plain TCP send that cannot hand the kernel a byte for the network
    timeout fails (SO_SNDTIMEO), and the connection is closed, instead of holding the DUL thread for ever. (Filling
    the kernel's send buffer for real takes megabytes of answers on loopback: the option is checked instead.)"""
    ae = AE(ae_title="ROUTER")
    ae.add_supported_context(VERIFICATION)
    ae.network_timeout = 1.5
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        with connection(port) as sock:
            associated(sock)
            wait_for(lambda: server.active_associations, 5, what="the association")
            raw = server.active_associations[0].dul.socket.socket
            seconds, micros = struct.unpack("ll", raw.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
            assert seconds + micros / 1e6 == pytest.approx(1.5)
    finally:
        server.shutdown()
