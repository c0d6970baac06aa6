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

The DUL reads each PDU through ``reads.read_pdu``: into one buffer (``recv_into``) instead of in 4 KiB pieces
appended to a growing bytearray (a 256 KiB PDU took 64 system calls and as many copies), bounded in length and time.

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
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from router._pynetdicom import command, pdata, reads
from router._pynetdicom.inline import SERVING, MessageQueue
from router._pynetdicom.queues import WakingQueue

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
    if raw is not None and getattr(assoc_sock, "_is_connected", False):
        pending = getattr(raw, "pending", None)  # an SSLSocket may hold decrypted data select() cannot see
        if pending is not None and pending():
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
                if reading_first and self._is_transport_event():
                    self._idle_timer.restart()
                elif self._process_recv_primitive():
                    pass
                elif not reading_first and self._is_transport_event():
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
    reads.install()
    pdata.install()
    command.install()
    _installed = True
