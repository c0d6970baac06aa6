"""C-FIND responses whose identifiers arrive already encoded, sent several to a P-DATA hand-off.

pynetdicom's ``_c_find_scp`` (3.0) encodes each identifier a handler yields with pydicom and hands every response
to the DUL thread on its own: a queue put, a wake-up and a trip through the state machine per match, about 0.4 ms
here, as much again as finding and encoding the match. ``EncodedFind._c_find_scp`` is that method (same statuses,
same checks, same order of messages) with two differences:

- a pending answer may be ``bytes``: the identifier already encoded in the context's transfer syntax
  (``router.query.encode``); a ``Dataset`` is encoded by pydicom as before. The event says so (``ENCODED``,
  read through ``router._pynetdicom.encoded_identifiers``): another service class never gets bytes;
- the first pending response goes out alone, at once (an SCU shows its first match early); the ones after it are
  encoded into P-DATA-TF PDUs back to back (``pdata.encode_parts``, the bytes pynetdicom would send) and handed to
  the DUL up to ``BATCH_MESSAGES`` or ``pdata.GROUP_BYTES`` at a time, or when ``BATCH_SECONDS`` passed since the
  first one waiting. Every response is out before the final one.

With a handler bound to EVT_DIMSE_SENT each message goes through ``send_msg`` (which announces it), unbatched.
``find_service(base)`` makes the subclass of a Q/R service class that does this; ``router._pynetdicom`` hands it
out only with the patches installed (``pdata`` encodes the P-DATA primitives this sends).
"""

from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom._globals import STATUS_PENDING, STATUS_WARNING
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.service_class import ServiceClass, attempt

from router._pynetdicom.command import encode_primitive
from router._pynetdicom.pdata import GROUP_BYTES, EncodedPData, encode_parts

log = logging.getLogger(__name__)

ENCODED = "router_encoded_identifiers"  # set on the EVT_C_FIND events whose handler may yield bytes
BATCH_MESSAGES = 64
BATCH_SECONDS = 0.005
ENCODING_FAILED = 0xC312  # pynetdicom's status when a handler's identifier cannot be encoded
HANDLER_FAILED = 0xC311
PENDING = (0xFF00, 0xFF01)


class _Batch:
    """Pending responses encoded as P-DATA-TF PDUs, waiting to be handed to the DUL together."""

    def __init__(self, service: ServiceClass, req: C_FIND, cx_id: int) -> None:
        self.dimse = service.dimse
        self.cx_id = cx_id
        self.req = req
        self.direct = not service.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        self.commands: dict[int, bytes | None] = {}
        self.parts: list[bytearray] = []
        self.size = 0
        self.since = 0.0
        self.sent = 0

    def _command(self, status: int) -> bytes | None:
        if status not in self.commands:
            rsp = self.response(status)
            rsp.Identifier = BytesIO(b"\0\0")  # present: Command Data Set Type says so
            encoded = encode_primitive(rsp, C_FIND_RSP)
            self.commands[status] = encoded[0] if encoded is not None else None
        return self.commands[status]

    def response(self, status: int) -> C_FIND:
        rsp = C_FIND()
        rsp.MessageID = self.req.MessageID
        rsp.MessageIDBeingRespondedTo = self.req.MessageID
        rsp.AffectedSOPClassUID = self.req.AffectedSOPClassUID
        rsp.Status = status
        return rsp

    def add(self, status: int, identifier: bytes, rsp: C_FIND | None = None) -> None:
        """Send a pending response: ``status`` and ``identifier``, or ``rsp`` when it carries more than a status (a
        handler's status dataset: error comment ...)."""
        command = self._command(status) if self.direct and rsp is None else None
        if command is None:
            self.flush()
            rsp = rsp or self.response(status)
            rsp.Identifier = BytesIO(identifier)
            self.dimse.send_msg(rsp, self.cx_id)
            self.sent += 1
            return
        for pdata in encode_parts(command, BytesIO(identifier), None, self.cx_id, self.dimse.maximum_pdu_size):
            if self.parts and self.size + len(pdata.encoded) > GROUP_BYTES:
                self.flush()
            if not self.parts:
                self.since = time.monotonic()
            self.parts.append(pdata.encoded)
            self.size += len(pdata.encoded)
        self.sent += 1
        if self.sent == 1 or len(self.parts) >= BATCH_MESSAGES or time.monotonic() - self.since > BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            encoded = self.parts[0] if len(self.parts) == 1 else bytearray().join(self.parts)
            self.parts, self.size = [], 0
            self.dimse.dul.send_pdu(EncodedPData(encoded))


class EncodedFind(ServiceClass):
    """``_c_find_scp`` taking pre-encoded identifiers and batching pending responses (module docstring)."""

    def _c_find_scp(self, req: C_FIND, context: Any) -> None:
        cx_id = int(context.context_id)
        syntax = context.transfer_syntax[0]
        batch = _Batch(self, req, cx_id)
        rsp = batch.response(0x0000)
        with attempt(rsp, self.dimse, cx_id, self.assoc) as ctx:
            ctx.error_msg = "Exception in handler bound to 'evt.EVT_C_FIND'"
            ctx.error_status = HANDLER_FAILED
            generator = evt.trigger(
                ctx.assoc,
                evt.EVT_C_FIND,
                {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled, ENCODED: True},
            )
        if not ctx.success or not self.assoc.is_established:
            return
        status: Any
        answer: Any
        for result, exc in self._wrap_handler(generator if generator is not None else iter([(0x0000, None)])):
            if exc:
                log.error("exception in the EVT_C_FIND handler", exc_info=exc)
                status, answer = HANDLER_FAILED, None
            else:
                status, answer = result  # type: ignore[misc]
            if not self.assoc.is_established:
                return
            if type(status) is int and status in PENDING and isinstance(answer, bytes) and answer:
                batch.add(status, answer)  # the usual pending response: no primitive to build and check
                continue
            rsp = self.validate_status(status, batch.response(0x0000))
            category = self.statuses[rsp.Status][0] if rsp.Status in self.statuses else None
            if category == STATUS_PENDING:
                data = answer if isinstance(answer, bytes) else _encoded(answer, syntax)
                if data:
                    batch.add(int(rsp.Status or 0), data, None if type(status) is int else rsp)
                    continue
                rsp.Status = ENCODING_FAILED
                log.error("failed encoding the response identifier")
            batch.flush()
            self.dimse.send_msg(rsp, cx_id)
            if category != STATUS_WARNING:
                return  # cancel, failure, success or an unknown status ends the responses
        batch.flush()
        if self.assoc.is_established:
            self.dimse.send_msg(batch.response(0x0000), cx_id)


def _encoded(answer: Dataset | None, syntax: Any) -> bytes | None:
    if not isinstance(answer, Dataset):
        return None
    return encode(answer, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)


_services: dict[type[ServiceClass], type[ServiceClass]] = {}


def find_service(base: type[ServiceClass]) -> type[ServiceClass]:
    """``base`` with ``EncodedFind``'s C-FIND, one class per base."""
    found = _services.get(base)
    if found is None:
        found = _services.setdefault(base, type(base.__name__, (EncodedFind, base), {}))
    return found
