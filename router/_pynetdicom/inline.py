"""C-STORE requests served on the DUL thread that received them.

pynetdicom hands every complete DIMSE message from the DUL thread (which reads the socket) to the association's
reactor thread (which runs the service), and every response back to the DUL thread to be sent. For a small object
these two hand-offs were a quarter of the round trip: each wakes a sleeping thread, which then has to win the GIL
from the thread that woke it (about 0.4 ms each way on the test machines).

An acceptor's C-STORE request is therefore served where it was decoded, when nothing else is going on: the DUL
thread calls the reactor's own ``_serve_request``, the handler runs, and the response primitive it queues is sent
by the same thread as soon as the handler returns. Everything else (other requests, responses to our own requests,
ACSE, requests arriving while the reactor is still busy or while a ``send_*()`` call has paused it) takes
pynetdicom's path. The peer waits for the response before it sends the next request (pynetdicom negotiates no
asynchronous operations), so the DUL thread has nothing else to read meanwhile; its network idle timer is restarted
when the request is answered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from router._pynetdicom.queues import WakingQueue

SERVING = "_router_serving"  # set on an Association while its reactor serves a request


class MessageQueue(WakingQueue):
    """The DIMSE message queue of one association: C-STORE requests are served on the spot when they may be."""

    def __init__(self, assoc: Association, wake: Callable[[], None]) -> None:
        super().__init__(wake)
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not self._served_inline(item):
            super().put(item, block, timeout)

    def _served_inline(self, item: Any) -> bool:
        context_id, msg = item
        assoc = self._assoc
        if not isinstance(msg, C_STORE) or not msg.is_valid_request:
            return False
        if threading.current_thread() is not assoc.dul:
            return False
        if not assoc.is_acceptor or not assoc.is_established or assoc._sent_release or assoc._kill:
            return False
        if not assoc._reactor_checkpoint.is_set():  # a send_*() call owns the queues now
            return False
        # The queue first, then the flag: the reactor sets the flag before it takes a message off the queue, so
        # an earlier request is either still queued or being served; this one then queues behind it.
        if not self.empty() or assoc.__dict__.get(SERVING):
            return False
        paused = assoc._is_paused
        try:
            assoc._serve_request(msg, context_id)
        finally:
            assoc._is_paused = paused  # _serve_request leaves it False; the reactor may be waiting (paused)
            assoc.dul._idle_timer.restart()
        return True
