"""An association the router (or a test's pynetdicom peer) requests sees the acceptor's answer, even a rejection
after which the acceptor closes the connection at once.

pynetdicom's requestor sends its A-ASSOCIATE-RQ, waits until the DUL thread has connected, checks that the socket
is connected, and only then waits for the answer. With the event-driven DUL thread (``reactor``) a quick
A-ASSOCIATE-RJ (a peer on the same machine) was read, and the connection closed after it (AE-4), before that check:
the requestor took the closed socket for a failed connection and aborted, so ``is_rejected`` stayed False and the
rejection's reason was lost (one run in four of tests/test_association_policy.py). The DUL thread of a requestor
awaiting the answer (Sta5) therefore reads it only once the requestor waits for it (``receive_pdu``).
"""

from __future__ import annotations

from typing import Any

from pynetdicom.dul import DULServiceProvider

WANTED = "_router_answer_wanted"  # set on a DUL once its association waited for a PDU

_receive_pdu = DULServiceProvider.receive_pdu


def may_read(dul: DULServiceProvider) -> bool:
    """Whether the DUL thread may read the peer's PDUs now."""
    return dul.__dict__.get(WANTED, False) or dul.state_machine.current_state != "Sta5" or not dul.assoc.is_requestor


def _receive_pdu_when_wanted(self: DULServiceProvider, wait: bool = False, timeout: float | None = None) -> Any:
    if not self.__dict__.get(WANTED):
        self.__dict__[WANTED] = True
        self._router_bell.ring()  # type: ignore[attr-defined]  # the DUL thread waits without the socket meanwhile
    return _receive_pdu(self, wait, timeout)


def install() -> None:
    DULServiceProvider.receive_pdu = _receive_pdu_when_wanted  # type: ignore[method-assign]
