"""Sending a DIMSE message as ready-made P-DATA-TF PDUs.

pynetdicom (3.0) turns every fragment of a message into a P-DATA primitive of its own: a queue put and a wake-up
of the DUL thread, a trip through the state machine, a PDV item object and a byte-string encoding, each time. A
512x512 CT slice sent to a peer that takes 16 KiB PDUs (DCMTK's default) is 32 such trips, 3 to 4 ms of Python per
slice, and it holds the GIL that ingest needs.

``install()`` replaces ``DIMSEServiceProvider.send_msg`` with one that encodes the message's P-DATA-TF PDUs itself,
straight into one buffer (a file-backed dataset is read into it with ``readinto``), and hands the DUL a few large
primitives instead of many small ones: each carries whole PDUs, up to ``GROUP_BYTES`` of them, so memory stays
bounded for a large object and the DUL never sends part of a PDU. The DUL's state machine sees ordinary P-DATA
requests (``DT-1``/``AR-7``); ``P_DATA_TF`` sends the bytes as they are.

The bytes on the wire are what pynetdicom sends: the same fragments (the peer's maximum PDU length less the 6
bytes of PDV item header and flags, or ``UNLIMITED_FRAGMENT`` when the peer set no limit) with the same control
headers (command 0x01/0x03, data set 0x00/0x02), in the same order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from router._pynetdicom.command import encode_command_set, encode_primitive

GROUP_BYTES = 1 << 20  # encoded PDUs per primitive handed to the DUL, at most (one PDU at least)
UNLIMITED_FRAGMENT = (1 << 20) - 12  # our own fragment size when the peer accepts PDUs of any length
_HEADER = struct.Struct(">BxLLBB")  # PDU type, reserved, PDU length, PDV item length, context ID, control header
HEADER_LEN = _HEADER.size  # 12

# Message control header (PS3.8 E.2): bit 0 command/data set, bit 1 last fragment
COMMAND, COMMAND_LAST, DATA, DATA_LAST = 0x01, 0x03, 0x00, 0x02


class EncodedPData(P_DATA):
    """A P-DATA request whose P-DATA-TF PDUs are already encoded, back to back, in ``encoded``."""

    def __init__(self, encoded: bytearray) -> None:
        super().__init__()
        self.encoded = encoded


def _fragment_size(max_pdu: int) -> int:
    """Data bytes per PDV for a peer whose maximum PDU length is ``max_pdu`` (0: no limit)."""
    if max_pdu == 0:
        return UNLIMITED_FRAGMENT
    return min(max_pdu - 6, UNLIMITED_FRAGMENT)


class _Packer:
    """Encodes PDUs into buffers of at most ``GROUP_BYTES`` (or one PDU), yielded as ``EncodedPData``.

    Each PDU is its 12-byte header and a slice of the data; a buffer is joined from them in one go when full."""

    def __init__(self, context_id: int, fragment: int) -> None:
        self.context_id = context_id
        self.fragment = fragment
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def _take(self) -> EncodedPData:
        primitive = EncodedPData(bytearray().join(self.parts))
        self.parts, self.size = [], 0
        return primitive

    def _pack(self, view: memoryview, ends: bool, last_flag: int, more_flag: int) -> Iterator[EncodedPData]:
        """PDUs for the bytes in ``view``; ``ends``: they are the last of the message part (command or data set),
        so the last PDU carries ``last_flag`` (an empty part is one empty PDU)."""
        total = len(view)
        start = 0
        while True:
            size = min(self.fragment, total - start)
            last = start + size >= total
            if self.parts and self.size + HEADER_LEN + size > GROUP_BYTES:
                yield self._take()
            flag = last_flag if last and ends else more_flag
            self.parts.append(_HEADER.pack(0x04, size + 6, size + 2, self.context_id, flag))
            self.parts.append(view[start : start + size])
            self.size += HEADER_LEN + size
            start += size
            if last:
                return

    def pack_bytes(self, data: bytes | memoryview, last_flag: int, more_flag: int) -> Iterator[EncodedPData]:
        yield from self._pack(memoryview(data), True, last_flag, more_flag)

    def pack_file(self, path: Path, offset: int) -> Iterator[EncodedPData]:
        """The data set from ``offset`` to the end of the file, read a whole number of fragments (about
        ``GROUP_BYTES``) at a time: one system call per group rather than per PDU, and bounded memory."""
        per_read = max(1, GROUP_BYTES // (HEADER_LEN + self.fragment)) * self.fragment
        with open(path, "rb", buffering=0) as f:
            total = f.seek(0, 2) - f.seek(offset)
            done = 0
            while True:
                want = min(per_read, total - done)
                chunk = bytearray(want)
                got = f.readinto(chunk) if want else 0
                while got and got < want:  # a raw read may return less than asked
                    more = f.readinto(memoryview(chunk)[got:])
                    if not more:
                        break
                    got += more
                if got != want:
                    raise OSError(f"{path} changed while it was being sent ({done + got} of {total} bytes read)")
                done += want
                yield from self._pack(memoryview(chunk), done >= total, DATA_LAST, DATA)
                if done >= total:
                    return

    def rest(self) -> Iterator[EncodedPData]:
        if self.parts:
            yield self._take()


def encode_message(dimse_msg: Any, context_id: int, max_pdu: int) -> Iterator[EncodedPData]:
    """The P-DATA requests for one DIMSE message: its command set, then its data set when it has one."""
    command = encode_command_set(dimse_msg.command_set)  # always Implicit VR Little Endian (PS3.7 6.3.1)
    yield from encode_parts(command, dimse_msg.data_set, dimse_msg._data_set_path, context_id, max_pdu)


def encode_parts(
    command: bytes, data_set: BytesIO | None, data_set_path: Any, context_id: int, max_pdu: int
) -> Iterator[EncodedPData]:
    """The P-DATA requests for an encoded command set and the message's data set: in memory (``data_set``) or in a
    file (``data_set_path``: path and offset of the data set in it), or none."""
    packer = _Packer(context_id, _fragment_size(max_pdu))
    yield from packer.pack_bytes(command, COMMAND_LAST, COMMAND)
    if data_set is not None:
        encoded = data_set.getbuffer()
        if len(encoded):
            yield from packer.pack_bytes(encoded, DATA_LAST, DATA)
        encoded.release()
    elif data_set_path is not None:
        path, offset = data_set_path
        yield from packer.pack_file(Path(path), offset)
    yield from packer.rest()


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """pynetdicom's ``DIMSEServiceProvider.send_msg`` with the message encoded by ``encode_message``; straight from
    the primitive (``command.encode_primitive``) when nobody listens for the encoded message (EVT_DIMSE_SENT)."""
    if primitive.MessageIDBeingRespondedTo is None:
        message_class = _RQ_TO_MESSAGE[primitive.__class__]
    else:
        message_class = _RSP_TO_MESSAGE[primitive.__class__]
    if not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        direct = encode_primitive(primitive, message_class)
        if direct is not None:
            command, data_set, data_set_path = direct
            for pdata in encode_parts(command, data_set, data_set_path, context_id, self.maximum_pdu_size):
                self.dul.send_pdu(pdata)
            return
    dimse_msg = message_class()
    dimse_msg.primitive_to_message(primitive)
    dimse_msg.context_id = context_id
    evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": dimse_msg})
    for pdata in encode_message(dimse_msg, context_id, self.maximum_pdu_size):
        self.dul.send_pdu(pdata)


_from_primitive = P_DATA_TF.from_primitive
_encode = P_DATA_TF.encode


def _pdu_from_primitive(self: P_DATA_TF, primitive: P_DATA) -> None:
    if isinstance(primitive, EncodedPData):
        self._router_encoded = primitive.encoded  # type: ignore[attr-defined]
        return
    _from_primitive(self, primitive)


def _pdu_encode(self: P_DATA_TF) -> Any:
    encoded = self.__dict__.get("_router_encoded")
    if encoded is None:
        return _encode(self)
    return memoryview(encoded)  # AssociationSocket.send slices what a partial send() left: no copies


def install() -> None:
    """Patch pynetdicom (3.0.x, checked by the caller); idempotent."""
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    P_DATA_TF.from_primitive = _pdu_from_primitive  # type: ignore[method-assign]
    P_DATA_TF.encode = _pdu_encode  # type: ignore[method-assign,assignment]
