"""Sending one queued HL7 message to an MLLP peer and judging its acknowledgement.

AA / CA: delivered. AR / CR: the peer could not take it now: retried with backoff. AE / CE: the peer says the
message is wrong: dead-lettered (sending it again would not help). An ACK that does not acknowledge the
message sent (MSA-2 is not its MSH-10) or no ACK within the DIMSE timeout: retried.
"""

from __future__ import annotations

import enum
from pathlib import Path

from router.config import Peer
from router.hl7.ack import ack_code_of
from router.hl7.mllp import MllpClient, MllpConnectionClosed, MllpError


class HL7Verdict(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    PERMANENT = "permanent"


def control_id_of(message: bytes) -> str:
    """MSH-10 of a message (bytes as stored)."""
    first = message.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3:4])
    return fields[9].decode("latin-1").strip() if len(fields) > 9 else ""


class MllpLink:
    """One connection to an MLLP peer, reused for the messages of a round."""

    def __init__(self, peer: Peer, timeout: float) -> None:
        host, port = peer.mllp_address
        self.client = MllpClient(host, port, timeout)
        self.alive = True

    def open(self) -> MllpLink:
        try:
            self.client.connect()
        except MllpError as exc:
            raise ConnectionError(str(exc)) from exc
        return self

    def send(self, path: Path) -> tuple[HL7Verdict, str]:
        """Send the message stored at ``path``; the verdict and a one-line reason."""
        message = path.read_bytes()
        try:
            ack = self.client.send(message)
        except MllpConnectionClosed as exc:
            self.alive = False
            raise ConnectionError(str(exc)) from exc
        except MllpError as exc:  # timeout, oversized reply
            self.alive = False
            return HL7Verdict.RETRY, str(exc)
        try:
            code, acked = ack_code_of(ack)
        except ValueError:
            return HL7Verdict.RETRY, "the peer's reply is not an acknowledgement"
        sent = control_id_of(message)
        if sent and acked != sent:
            return HL7Verdict.RETRY, f"the peer acknowledged {acked!r}, not {sent!r}"
        if code in ("AA", "CA"):
            return HL7Verdict.DONE, code
        if code in ("AE", "CE"):
            return HL7Verdict.PERMANENT, f"peer answered {code}"
        return HL7Verdict.RETRY, f"peer answered {code or 'no code'}"

    def close(self) -> None:
        self.client.close()
        self.alive = False
