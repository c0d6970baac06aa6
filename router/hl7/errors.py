"""HL7 errors as they appear in an acknowledgement: ACK code, table 0357 code, location, severity.

Raised by :func:`router.hl7.message.parse_message` and by application code; :func:`router.hl7.ack.build_ack`
turns them into ERR segments. Re-exported by ``router.hl7.message``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from router.hl7.message import Hl7Header

AckCode = Literal["AA", "AE", "AR"]

# HL7 table 0357 (message error condition codes)
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key",
    206: "Application record locked",
    207: "Application internal error",
}
SEVERITIES = ("E", "W", "I", "F")  # HL7 table 0516


class ErrorLocation(NamedTuple):
    """Where an error is: ``("PID", 1, 3, 1)`` is component 1 of PID-3 in the first PID segment.

    ``sequence`` counts occurrences of that segment ID in the message (the second OBX is 2). ``repetition`` is
    the field repetition (1 when a component is named and it is not given). In ERR-2 (HL7 type ERL) the order is
    segment^sequence^field^repetition^component^subcomponent.
    """

    segment: str
    sequence: int = 1
    field: int | None = None
    component: int | None = None
    repetition: int | None = None
    subcomponent: int | None = None

    def erl(self) -> list[str]:
        """ERL components (not yet escaped), trailing empty ones removed."""
        rep = self.repetition
        if rep is None and (self.component is not None or self.subcomponent is not None):
            rep = 1
        parts = [self.segment, str(self.sequence)]
        for value in (self.field, rep, self.component, self.subcomponent):
            parts.append("" if value is None else str(value))
        while parts and parts[-1] == "":
            parts.pop()
        return parts


class Hl7Error(Exception):
    """An HL7 error condition to acknowledge with ``ack_code`` and an ERR segment.

    ``ack_code`` is ``"AE"`` (the message was read but its content is wrong) or ``"AR"`` (rejected: unsupported
    message type, event, version or processing ID, an unreadable frame, or the router cannot process it now).
    ``error_code`` is from HL7 table 0357, ``severity`` from table 0516. ``partial`` holds the header fields
    that could be read (or ``None``), so an ACK can still be addressed: ``build_ack(e.partial, e.ack_code, [e])``.
    """

    def __init__(
        self,
        ack_code: Literal["AE", "AR"],
        error_code: int,
        text: str = "",
        *,
        location: tuple[Any, ...] | None = None,
        severity: str = "E",
        partial: Hl7Header | None = None,
    ) -> None:
        if ack_code not in ("AE", "AR"):
            raise ValueError(f"ack_code must be AE or AR, not {ack_code!r}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
        self.ack_code: Literal["AE", "AR"] = ack_code
        self.error_code = error_code
        self.text = text
        self.location = None if location is None else ErrorLocation(*location)
        self.severity = severity
        self.partial = partial
        super().__init__(str(self))

    @property
    def code_text(self) -> str:
        """The table 0357 description of ``error_code``."""
        return ERROR_CODES.get(self.error_code, "Error")

    def __str__(self) -> str:
        where = f" at {'^'.join(self.location.erl())}" if self.location else ""
        text = f": {self.text}" if self.text else ""
        return f"{self.ack_code} {self.error_code} {self.code_text}{where}{text}"
