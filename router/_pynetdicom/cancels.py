"""C-CANCEL requests that arrive before their request is served are kept for it.

pynetdicom's ``Association._serve_request`` empties ``dimse.cancel_req`` just before it runs the service class. A
C-CANCEL that the DUL thread decoded while the association thread had not yet taken up its C-FIND, C-GET or C-MOVE
request (a peer that cancels at once, or a busy machine) was therefore dropped, and the whole answer followed. PS3.7
9.3.2.3 ties a C-CANCEL to the request with that Message ID, whenever it comes. ``install`` keeps the cancel of the
request about to be served through that emptying (the cancels of other message IDs go, as before), so the service
sees it at its first ``is_cancelled``; everything is still emptied when the service returns.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider

_KEEP = "_router_keep_cancel"  # (message ID, C-CANCEL) set while the request of that ID is about to be served
_CANCELS = "_router_cancel_req"

_serve_request = Association._serve_request


def _get_cancels(self: DIMSEServiceProvider) -> dict[int, Any]:
    return self.__dict__[_CANCELS]


def _set_cancels(self: DIMSEServiceProvider, value: dict[int, Any]) -> None:
    keep = self.__dict__.pop(_KEEP, None)
    if keep is not None and not value:  # the emptying before the service runs: keep its own cancel
        value = {keep[0]: keep[1]}
    self.__dict__[_CANCELS] = value


def _serve_keeping_cancel(self: Association, msg: Any, context_id: int) -> None:
    msg_id = getattr(msg, "MessageID", None)
    early = self.dimse.cancel_req.get(msg_id) if msg_id is not None else None
    if early is not None:
        self.dimse.__dict__[_KEEP] = (msg_id, early)
    try:
        _serve_request(self, msg, context_id)
    finally:
        self.dimse.__dict__.pop(_KEEP, None)


def install() -> None:
    DIMSEServiceProvider.cancel_req = property(_get_cancels, _set_cancels)  # type: ignore[assignment]
    Association._serve_request = _serve_keeping_cancel  # type: ignore[method-assign]
