"""Sending a request to the peer over an association the peer opened, after our response to its request.

An SCP reports storage commitment over the association that carried the N-ACTION (PS3.4 J.3.3), but only after
the N-ACTION response. pynetdicom serves requests on the association's reactor thread, whose event handler
returns *before* the response is sent, so the report has to be sent from another thread once the reactor has
sent that response and is idle.

pynetdicom coordinates that with ``Association._reactor_checkpoint`` (a ``threading.Event`` the reactor waits on
between messages; the ``send_*`` methods clear it while they talk to the peer) and ``_is_paused``. The reactor also
sets ``_is_paused`` while it serves a request, so ``_is_paused`` cannot tell "parked between messages" from "still
inside the handler". ``Gate`` replaces the checkpoint with a drop-in that can: once ``park`` returns True the
reactor is blocked at the checkpoint, our response is on its way, and no incoming message will be taken off the
queue until the ``send_*`` call is done. ``park`` wakes the event-driven reactor (``reactor``), which would
otherwise come to the checkpoint only after up to ``reactor.MAX_WAIT`` (50 ms) of waiting for work. pynetdicom 3.0;
used through ``router._pynetdicom.reply_gate`` (None without the patches: the report then goes over a new
association).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_RELEASE

from router._pynetdicom import reactor


class Gate:
    """A ``threading.Event`` look-alike for ``Association._reactor_checkpoint`` that knows when it is waited on."""

    def __init__(self, nudge: Callable[[], None] = lambda: None) -> None:
        self._nudge = nudge  # wakes the reactor if it is waiting for work, so that it comes to the gate now
        self._cond = threading.Condition()
        self._open = True
        self._parked = False
        self.sending = threading.Lock()  # one of our requests at a time on the association

    # -- the threading.Event interface pynetdicom uses -------------------------------------------------------
    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._open = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._open:
                return True
            self._parked = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._open, timeout)
            finally:
                self._parked = False

    # -- ours -----------------------------------------------------------------------------------------------
    def park(self, alive: Callable[[], bool], timeout: float) -> bool:
        """Close the gate and wait until the reactor is blocked at it. On False (the association ended, or the
        reactor did not come by in time) the gate is open again."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._open = False
            self._nudge()
            while not self._parked:
                if not alive() or time.monotonic() >= deadline:
                    self._open = True
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.05)
            return True

    def after_response(self, assoc: Association, timeout: float, send: Callable[[], Any]) -> Any:
        """Run ``send`` (a ``send_*`` call on ``assoc``, whose checkpoint this gate is) once the reactor has
        answered the request being served and parked; None when the association ended first or the peer is
        releasing it."""

        def alive() -> bool:
            return bool(assoc.is_established) and not assoc.is_released and not assoc.is_aborted

        deadline = time.monotonic() + timeout
        with self.sending:
            while True:
                if not self.park(alive, max(0.0, deadline - time.monotonic())):
                    return None
                if not assoc.dimse.msg_queue.empty():  # a request of the peer waits: let the reactor serve it
                    self.set()  # first, or our send would take it for the response
                    time.sleep(0.05)
                    continue
                try:
                    if not alive() or isinstance(assoc.dul.peek_next_pdu(), A_RELEASE):  # the peer is leaving
                        return None
                    return send()
                finally:
                    self.set()


def install(assoc: Association) -> Gate:
    """Give ``assoc`` a Gate as its reactor checkpoint. Call from the association's own reactor thread (an event
    handler): the reactor is then between two waits, so nothing waits on the Event being replaced."""
    current: Any = assoc._reactor_checkpoint
    if isinstance(current, Gate):
        return current
    gate = Gate(reactor.wake_event(assoc).set)
    if not current.is_set():
        gate.clear()
    assoc._reactor_checkpoint = gate  # type: ignore[assignment]
    return gate
