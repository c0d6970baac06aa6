"""A response the association's reactor takes off the DIMSE queue by mistake goes back on it.

``send_c_store`` (and the other ``send_*`` methods) pause the association's reactor by clearing
``Association._reactor_checkpoint`` and waiting for ``_is_paused``, which pynetdicom's own reactor may still show for
an instant after it went past the pause. The reactor then takes the C-STORE response off the DIMSE queue as an
"unexpected C-STORE service message" and drops it, and the send waits out the DIMSE timeout (seen once in a C-MOVE
of 12 instances, on pynetdicom's polling reactor). ``keep_responses`` wraps the association's ``_serve_request``:
responses it is handed are put back on the queue once, for the send that waits for them; requests (an
N-EVENT-REPORT) are served as before. The event-driven reactor (``reactor``) closes that window too; this stays as
a second guard on the associations the router requests. pynetdicom 3.0.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.association import Association


def keep_responses(assoc: Association) -> None:
    serve = assoc._serve_request

    def serve_or_requeue(msg: Any, context_id: int) -> None:
        if msg is not None and not msg.is_valid_request and msg.is_valid_response and not hasattr(msg, "_requeued"):
            msg._requeued = True  # once: a response nobody waits for any more is then dropped as before
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_requeue  # type: ignore[method-assign]
