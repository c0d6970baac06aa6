"""Event-driven loops for pynetdicom's two per-association threads.

pynetdicom (3.0) polls: its DUL thread sleeps ``_run_loop_delay`` whenever a loop found nothing to do, and the
association reactor sleeps 1 ms before every look at its queues. Every C-STORE round trip therefore waits for both
sleeps, and the two threads wake thousands of times a second to take the GIL from the thread doing the actual work
(storing the object). A pynetdicom SCP doing nothing took 3.2 ms per 1 KB object from storescu with the polling
loops and 1.4 ms with these.

``install()`` replaces both loops with ones that block until something happens:

- the DUL thread waits in ``select()`` on its socket and on a wake-up socket pair that is written whenever the
  service user hands it a primitive to send (``send_pdu``) or kills it;
- the reactor waits on an event set whenever the DUL puts a DIMSE message or an ACSE primitive on a queue for it,
  or stops.

Both still wake at least every ``MAX_WAIT`` seconds to check their timers (ARTIM, network idle timeout) exactly as
the originals do. The loop bodies are pynetdicom's, step for step; the reactor additionally closes two races of the
original: a ``send_*()`` call that pauses the reactor while it is between its checkpoint and its next look at the
DIMSE queue no longer loses the response to it, and one that pauses it while pynetdicom's N-EVENT-REPORT thread
finishes (which clears the reactor's "paused" flag) no longer waits for ever.

The DUL reads each PDU through ``read_pdu`` (pynetdicom's ``_read_pdu_data`` read the claimed length in 4 KiB
``recv`` calls on a blocking socket, unbounded; the router's first replacement allocated the claimed length up front:
a header claiming 4 GiB took the process to 4.2 GB and stalled every association, half a PDU held the DUL for ever):

- a PDU may be as long as the association allows: before it is established (an A-ASSOCIATE-RQ/AC/RJ, or anything
  sent out of order) ``ASSOCIATION_CAP``; once established a P-DATA-TF as long as the maximum PDU length we
  announced plus its 6-byte header (for peers that count it in), other PDUs ``ASSOCIATION_CAP``. A longer claim, an
  unknown type or an undecodable PDU gets an A-ABORT (the state machine's Evt19) and nothing more is read: the
  connection is closed once the A-ABORT is out;
- one buffer filled with ``recv_into`` (not 4 KiB pieces appended), starting at ``FIRST_READ`` and doubling as the
  bytes arrive: a claim costs memory only once it is sent;
- every wait for more bytes lasts at most the ACSE timeout (before the association) or the network timeout (after),
  and the whole PDU must come within that plus its length at ``MIN_RATE``; else the connection is closed (Evt17);
- a plain TCP ``send`` that moves no byte for the network timeout fails (``SO_SNDTIMEO``), so a peer that stops
  reading cannot hold the DUL either (a TLS socket's write is retried by Python's ssl module: not bounded so).

An acceptor's C-STORE requests are served on the DUL thread itself, without either hand-off (``inline``).

Installed once for the whole process, for the listener's associations and the forwarder's alike, by
``router._pynetdicom.install()`` once it has checked the versions (this module imports pynetdicom's private names).
The DUL's ``_run_loop_delay`` is set to ``DUL_POLL_DELAY``: with these loops it only paces pynetdicom's wait for a
stopping DUL (``stop_dul``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from router._pynetdicom import command, pdata
from router._pynetdicom.inline import SERVING, MessageQueue
from router._pynetdicom.queues import WakingQueue
from router._pynetdicom.requestor import may_read

log = logging.getLogger(__name__)

MAX_WAIT = 0.05  # s: the longest either thread sleeps without looking at its timers
MAX_QUEUED = 32  # primitives waiting to be sent before the service user is held back
CHECKPOINT_POLL = 0.005  # s: while a send_*() has the reactor paused (see _assoc_run_reactor)
DUL_POLL_DELAY = 0.0002  # s: pynetdicom's _run_loop_delay (1 ms), now only for stop_dul's wait
_installed = False


def wake_event(assoc: Association) -> threading.Event:
    """The event the association's reactor waits on between looks at its queues (at most ``MAX_WAIT``)."""
    wake = assoc.__dict__.get("_router_wake")
    if wake is None:
        wake = assoc.__dict__.setdefault("_router_wake", threading.Event())
    return wake


class _Doorbell:
    """A socket pair the DUL thread can select() on together with its peer socket."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.closed = False

    def ring(self) -> None:
        with self.lock:
            if not self.closed:
                with contextlib.suppress(OSError):  # BlockingIOError: already ringing
                    self.writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.reader.close()
                self.writer.close()


# -- DUL -------------------------------------------------------------------------------------------------------
_dul_init = DULServiceProvider.__init__
_dul_send_pdu = DULServiceProvider.send_pdu
_dul_kill = DULServiceProvider.kill_dul
_dimse_init = DIMSEServiceProvider.__init__


def _patched_dul_init(self: DULServiceProvider, assoc: Association) -> None:
    _dul_init(self, assoc)
    self._run_loop_delay = DUL_POLL_DELAY
    bell = _Doorbell()
    self._router_bell = bell  # type: ignore[attr-defined]
    self.to_user_queue = WakingQueue(wake_event(assoc).set)

    def ring_from_elsewhere() -> None:  # the DUL thread itself looks at its queues before it waits
        if threading.current_thread() is not self:
            bell.ring()

    self.event_queue = WakingQueue(ring_from_elsewhere)
    self.to_provider_queue = WakingQueue(ring_from_elsewhere)  # send_pdu: a primitive to send


def _patched_dimse_init(self: DIMSEServiceProvider, assoc: Association) -> None:
    _dimse_init(self, assoc)
    self.msg_queue = MessageQueue(assoc, wake_event(assoc).set)


def _patched_send_pdu(self: DULServiceProvider, primitive: Any) -> None:
    # Back-pressure: a service streaming answers (C-FIND) waits while MAX_QUEUED are not sent yet, so memory stays
    # bounded and a C-CANCEL from the peer still finds answers left to cancel.
    # (Not on the DUL thread itself, which answers a request served inline and sends before it waits again.)
    if threading.current_thread() is not self and self.is_alive():
        while self.to_provider_queue.qsize() >= MAX_QUEUED and self.is_alive() and not self._kill_thread:
            time.sleep(0.0002)
    _dul_send_pdu(self, primitive)  # its queue rings the DUL's doorbell


def _patched_kill_dul(self: DULServiceProvider) -> None:
    _dul_kill(self)
    self._router_bell.ring()  # type: ignore[attr-defined]


def _wait_for_dul_work(dul: DULServiceProvider) -> None:
    """Block until the peer sent data, a primitive was queued to send, or ``MAX_WAIT`` passed."""
    bell: _Doorbell = dul._router_bell  # type: ignore[attr-defined]
    if dul._kill_thread or not dul.event_queue.empty() or not dul.to_provider_queue.empty():
        return
    readers: list[Any] = [bell.reader]
    assoc_sock = dul.socket
    raw = getattr(assoc_sock, "socket", None) if assoc_sock is not None else None
    if raw is not None and getattr(assoc_sock, "_is_connected", False) and may_read(dul):
        if _holds_data(raw):
            return
        readers.append(raw)
    timeout = max(0.0, min(MAX_WAIT, dul.artim_timer.remaining))
    try:
        select.select(readers, [], [], timeout)
    except (OSError, ValueError):  # the socket was closed under us: the loop body notices
        return
    bell.drain()


def _dul_run_reactor(self: DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider.run_reactor`` with the idle sleep replaced by ``_wait_for_dul_work``."""
    try:
        self._idle_timer.start()
        idle = False
        reading_first = True
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                _wait_for_dul_work(self)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # pynetdicom always sends first; while a C-FIND SCP streams its answers that starves reading, and a
                # C-CANCEL is seen only after the last answer. Take turns instead.
                reading_first = not reading_first
                if reading_first and may_read(self) and self._is_transport_event():
                    self._idle_timer.restart()
                elif self._process_recv_primitive():
                    pass
                elif not reading_first and may_read(self) and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                log.error("Exception in DUL.run(), aborting association")
                log.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                with contextlib.suppress(Exception):
                    self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False
    finally:
        wake_event(self.assoc).set()  # the reactor checks whether we are still alive
        self._router_bell.close()  # type: ignore[attr-defined]


# -- association reactor ---------------------------------------------------------------------------------------
def _has_work(assoc: Association) -> bool:
    """More DIMSE messages than the last loop took (the ACSE checks run on every loop anyway)."""
    return not assoc.dimse.msg_queue.empty()


def _assoc_run_reactor(self: Association) -> None:
    """pynetdicom's ``Association._run_reactor`` with the 1 ms sleep replaced by a wait for the DUL."""
    wake = wake_event(self)
    self._is_paused = False
    while not self._kill:
        # Waiting counts as paused: nothing here touches the queues until the checkpoint is passed, so a send_*()
        # call need not wait for the end of the wait.
        self._is_paused = True
        if not _has_work(self):
            wake.wait(MAX_WAIT)
        wake.clear()
        # pynetdicom serves an N-EVENT-REPORT request on a thread of its own, whose _serve_request() sets
        # _is_paused to False when the handler returns, even while we are paused. A send_*() waiting for the flag
        # would then wait for ever: say it again while we wait here.
        self._is_paused = True
        while not self._reactor_checkpoint.wait(CHECKPOINT_POLL):
            self._is_paused = True
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():
            continue  # a send_*() paused us after we passed the checkpoint: the queues are its now

        self.__dict__[SERVING] = True  # before the queue is looked at: see inline.MessageQueue
        try:
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
        finally:
            self.__dict__[SERVING] = False

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            log.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            message = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                message += " (A-P-ABORT)"
            log.info(message)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            log.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


# -- PDU reads --------------------------------------------------------------------------------------------------
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


def _holds_data(sock: Any) -> bool:
    """Whether a TLS socket holds decrypted bytes that select() cannot see: in OpenSSL (``pending``), or read ahead
    by ``router.tls.TlsSocket.application_data_ready`` (``buffered``)."""
    buffered = getattr(sock, "buffered", None)
    if buffered is not None and buffered():
        return True
    pending = getattr(sock, "pending", None)
    return pending is not None and bool(pending())


def _wait_readable(sock: Any, until: float | None) -> bool:
    """Block until ``sock`` has bytes to read (or was closed): False when ``until`` passed first."""
    if _holds_data(sock):
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
    """Replace pynetdicom's polling loops, its PDU reads and its message encoding (idempotent). Call through
    ``router._pynetdicom.install()``, which checks the versions first."""
    global _installed
    if _installed:
        return
    DULServiceProvider.__init__ = _patched_dul_init  # type: ignore[method-assign]
    DIMSEServiceProvider.__init__ = _patched_dimse_init  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = _patched_send_pdu  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = _patched_kill_dul  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = _dul_run_reactor  # type: ignore[method-assign]
    Association._run_reactor = _assoc_run_reactor  # type: ignore[method-assign]
    DULServiceProvider._read_pdu_data = read_pdu  # type: ignore[method-assign]
    pdata.install()
    command.install()
    _installed = True
