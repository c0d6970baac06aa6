"""Reading one PDU from the peer: bounded in length, memory and time, into one buffer.

pynetdicom (3.0) reads a PDU's 6-byte header, then as many bytes as the header claims, in 4 KiB ``recv`` calls on a
blocking socket, with no bound on either. The router's first replacement read it into one buffer of the claimed
size, allocated up front: an A-ASSOCIATE-RQ header claiming 4 GiB took the process to 4.2 GB resident and stalled
every other association while it was allocated. And a peer that sends half a PDU and goes silent held the DUL thread
in ``recv`` for ever: the association's timers could not end it (both its threads wait for each other).

``read_pdu`` replaces ``DULServiceProvider._read_pdu_data``, the DUL's only read:

- a PDU may be as long as the association allows, never more: before it is established (A-ASSOCIATE-RQ/AC/RJ, or
  anything a peer sends out of order) ``ASSOCIATION_CAP``; once established a P-DATA-TF may be as long as the
  maximum PDU length we announced (the listener's ``dicom.max_pdu``), plus its 6-byte header for peers that count
  it in; other PDUs ``ASSOCIATION_CAP``. A longer claim, or an unknown PDU type, is refused with an A-ABORT (the state
  machine's answer to an invalid PDU, Evt19) and nothing more is read from that connection: it is closed;
- the buffer grows with the bytes that actually arrive (``FIRST_READ``, then doubling): a claim costs memory only
  once the peer has sent it;
- every wait for more bytes lasts at most the association's timeout (the ACSE timeout before it is established,
  the network timeout after), and the whole PDU must arrive within that timeout plus its length at ``MIN_RATE``:
  a peer that stops half-way, or drips bytes, has its connection closed (Evt17, an A-P-ABORT to the service user);
- sending: a ``send`` that cannot hand the kernel a single byte for the network timeout fails (``SO_SNDTIMEO`` on a
  plain TCP socket) and closes the connection, so a peer that stops reading our answers cannot hold the DUL thread
  for ever either. (A TLS socket retries such a send inside Python's ssl module: not bounded that way.)

The decoding and the events are pynetdicom's (``_decode_pdu``, Evt3/4/6/10/12/13/16/17/19).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import time
from typing import Any

from pynetdicom.dul import DULServiceProvider

log = logging.getLogger(__name__)

HEADER = struct.Struct(">BxL")  # PDU type, reserved, PDU length (PS3.8 9.3)
PDU_TYPES = frozenset(range(0x01, 0x08))
P_DATA_TF = 0x04
ASSOCIATION_CAP = 1 << 20  # bytes: the longest PDU accepted outside an established association's P-DATA-TF
FIRST_READ = 64 * 1024  # bytes allocated for a PDU before its bytes arrive (then doubled as they do)
MIN_RATE = 16 * 1024  # bytes/s: a PDU must arrive within the timeout plus its length at this rate
ESTABLISHED = frozenset(f"Sta{n}" for n in range(6, 13))  # data transfer and release (PS3.8 table 9-10)
REFUSED = "_router_refused"  # set on a DUL once it refused a PDU: what follows is not read
_SEND_TIMEOUT = "_router_send_timeout"


class Incomplete(Exception):
    """The peer closed the connection, or stopped sending, before a whole PDU arrived."""

    def __init__(self, reason: str, got: int) -> None:
        super().__init__(reason)
        self.got = got  # bytes of the PDU that did arrive


def _peer(dul: DULServiceProvider) -> str:
    assoc = dul.assoc
    remote = assoc.acceptor if assoc.is_requestor else assoc.requestor
    info = remote.address_info
    return "{}:{}".format(*info.as_tuple) if info is not None else "?"


def pdu_limit(dul: DULServiceProvider, pdu_type: int, established: bool) -> int | None:
    """The longest PDU (its length field) accepted now; None: no limit (we announced no maximum PDU length)."""
    if pdu_type != P_DATA_TF or not established:
        return ASSOCIATION_CAP
    assoc = dul.assoc
    announced = (assoc.acceptor if assoc.is_acceptor else assoc.requestor).maximum_length
    return announced + HEADER.size if announced else None


def _timeout(dul: DULServiceProvider, established: bool) -> float | None:
    assoc = dul.assoc
    return assoc.network_timeout if established else assoc.acse_timeout


def _wait_readable(sock: Any, until: float | None) -> bool:
    """Block until ``sock`` has bytes to read (or was closed): False when ``until`` passed first."""
    pending = getattr(sock, "pending", None)  # an SSLSocket may hold decrypted bytes select() cannot see
    if pending is not None and pending():
        return True
    while True:
        remaining = None if until is None else until - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            return True


def read_exactly(
    sock: Any, count: int, timeout: float | None, *, prefix: bytes | bytearray = b"", known_readable: bool = False
) -> bytearray:
    """``prefix`` followed by ``count`` bytes from ``sock``. Each wait for more lasts at most ``timeout`` s, and all
    the waits end within ``timeout`` plus ``count`` at ``MIN_RATE``; the buffer grows with what arrives. Bytes
    already received are taken without a wait (``MSG_DONTWAIT``; a TLS socket is asked whether it holds some).
    Raises ``Incomplete``, or the socket's OSError."""
    plain = type(sock) is socket.socket
    total = len(prefix) + count
    buffer = bytearray(len(prefix) + min(count, FIRST_READ))
    buffer[: len(prefix)] = prefix
    got = len(prefix)
    deadline: float | None = None
    while got < total:
        if got == len(buffer):
            buffer.extend(bytes(min(len(buffer), total - len(buffer))))
        n = -1  # nothing read: wait for bytes
        with memoryview(buffer) as view:
            if known_readable:
                n = sock.recv_into(view[got:], len(buffer) - got)
            elif plain:
                with contextlib.suppress(BlockingIOError):
                    n = sock.recv_into(view[got:], len(buffer) - got, socket.MSG_DONTWAIT)
        known_readable = False
        if n < 0:
            now = time.monotonic()
            if deadline is None and timeout is not None:
                deadline = now + timeout + count / MIN_RATE
            until = None if deadline is None or timeout is None else min(deadline, now + timeout)
            if not _wait_readable(sock, until):
                raise Incomplete(f"{got - len(prefix)} of {count} bytes came within the timeout", got - len(prefix))
            known_readable = True
            continue
        if not n:
            raise Incomplete(f"closed after {got - len(prefix)} of {count} bytes", got - len(prefix))
        got += n
    return buffer


def _bound_sends(dul: DULServiceProvider, sock: Any, timeout: float | None) -> None:
    """Once per connection: a plain TCP send that makes no progress for ``timeout`` s fails (``SO_SNDTIMEO``)."""
    if timeout is None or dul.__dict__.get(_SEND_TIMEOUT) == timeout or not isinstance(sock, socket.socket):
        return
    dul.__dict__[_SEND_TIMEOUT] = timeout
    if type(sock) is socket.socket:  # an SSLSocket would retry the failed write for ever: left as it is
        seconds = int(timeout)
        value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _discard_received(sock: Any) -> None:
    """Drop what the peer sent after a refused PDU and is already here (up to ``ASSOCIATION_CAP``): closing a socket
    with unread bytes resets the connection, and the peer's system may then drop our A-ABORT unread."""
    if type(sock) is not socket.socket:  # TLS: a record may be incomplete; the reset is the peer's risk
        return
    dropped = 0
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more for now
        while dropped < ASSOCIATION_CAP and (chunk := sock.recv(65536, socket.MSG_DONTWAIT)):
            dropped += len(chunk)


def _refuse(dul: DULServiceProvider, why: str) -> None:
    """An invalid PDU: the state machine answers it with an A-ABORT (Evt19); what follows is not read (the next read
    closes the connection), and an acceptor still waiting for its A-ASSOCIATE-RQ stops waiting at once."""
    log.warning("DICOM connection from %s: %s: aborted", _peer(dul), why)
    dul.__dict__[REFUSED] = True
    dul.event_queue.put("Evt19")
    if dul.assoc.is_acceptor and dul.state_machine.current_state == "Sta2":
        dul.to_user_queue.put(None)  # read as "no A-ASSOCIATE-RQ in time": the association thread ends


def _closed(dul: DULServiceProvider, exc: Exception, began: bool) -> None:
    """The connection ended or stalled: Evt17 (logged when a PDU had begun, not when the peer closed after one)."""
    if began:
        log.warning("DICOM connection from %s: no whole PDU (%s): closed", _peer(dul), exc or type(exc).__name__)
    dul.event_queue.put("Evt17")


def read_pdu(self: DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider._read_pdu_data``, bounded (see the module's doc): one PDU read and decoded,
    its event queued (Evt3/4/6/10/12/13/16; Evt17 when the connection ended or stalled; Evt19 when refused)."""
    assoc_sock = self.socket
    assert assoc_sock is not None
    sock = assoc_sock.socket
    if self.__dict__.get(REFUSED):  # nothing more is read; once our A-ABORT is sent (Sta13), the connection ends
        if self.state_machine.current_state == "Sta13":
            _discard_received(sock)
            assoc_sock.close()  # Evt17
        return
    established = self.state_machine.current_state in ESTABLISHED
    timeout = _timeout(self, established)
    try:
        _bound_sends(self, sock, self.assoc.network_timeout)
        header = read_exactly(sock, HEADER.size, timeout, known_readable=True)
    except Incomplete as exc:
        return _closed(self, exc, began=exc.got > 0)
    except OSError as exc:
        return _closed(self, exc, began=False)
    pdu_type, length = HEADER.unpack(header)
    if pdu_type not in PDU_TYPES:
        return _refuse(self, f"unknown PDU type 0x{pdu_type:02X}")
    limit = pdu_limit(self, pdu_type, established)
    if limit is not None and length > limit:
        return _refuse(self, f"a PDU of type 0x{pdu_type:02X} claims {length} bytes, more than the {limit} accepted")
    try:
        pdu_bytes = read_exactly(sock, length, timeout, prefix=header)
    except (Incomplete, OSError) as exc:
        return _closed(self, exc, began=True)
    try:
        pdu, event = self._decode_pdu(pdu_bytes)
    except Exception as exc:  # pynetdicom's decoders raise a variety on malformed PDUs
        return _refuse(
            self, f"a PDU of type 0x{pdu_type:02X} ({length} bytes) cannot be decoded ({type(exc).__name__})"
        )
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def install() -> None:
    """Replace the DUL's PDU read (pynetdicom 3.0.x, checked by the caller); idempotent."""
    DULServiceProvider._read_pdu_data = read_pdu  # type: ignore[method-assign]
