"""The MLLP destination: queued HL7 messages to an HL7 receiver, one at a time and in order, each judged by its
acknowledgement.

AA / CA: delivered. AR / CR: the peer could not take it now: retried with backoff. AE / CE: the peer says the
message is wrong: dead-lettered (sending it again would not help). An ACK that does not acknowledge the
message sent (MSA-2 is not its MSH-10) or no ACK within the DIMSE timeout: retried.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from router import storage
from router.config import AnyPeer, MllpPeer
from router.destinations.base import DestinationContext, Outcome, Unreachable
from router.hl7.ack import ack_code_of
from router.hl7.mllp import MllpClient, MllpConnectionClosed, MllpError
from router.statuses import SendVerdict
from router.store.models import Job


def control_id_of(message: bytes) -> str:
    """MSH-10 of a message (bytes as stored)."""
    first = message.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3:4])
    return fields[9].decode("latin-1").strip() if len(fields) > 9 else ""


class MllpDestination:
    """One connection to an MLLP peer, reused for the messages of a round."""

    ordered: ClassVar[bool] = True  # an HL7 stream: one message at a time, each acknowledged before the next is claimed

    def __init__(self, name: str, peer: AnyPeer, context: DestinationContext) -> None:
        assert isinstance(peer, MllpPeer)
        host, port = peer.address
        self.client = MllpClient(host, port, context.config.dicom.timeouts.dimse)
        self.data_dir = context.config.data_dir
        self.stop = context.stop
        self._open = False

    @property
    def alive(self) -> bool:
        return self._open

    def send(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        if not self._open:
            try:
                self.client.connect()
            except MllpError as exc:
                raise Unreachable(str(exc)) from exc
            self._open = True
        for job in jobs:
            if self.stop.is_set():
                return
            try:
                verdict, reason = self._send_one(storage.at(self.data_dir).local_path(job.path))
            except FileNotFoundError:
                yield Outcome.permanent(job, f"stored message {job.path} is missing")
                continue
            except ConnectionError as exc:
                yield Outcome.retry(job, str(exc))
                self.close()
                return
            yield Outcome(job, verdict, None, reason)

    def _send_one(self, path: Path) -> tuple[SendVerdict, str]:
        """Send the message stored at ``path``; the verdict and a one-line reason."""
        message = path.read_bytes()
        try:
            ack = self.client.send(message)
        except MllpConnectionClosed as exc:
            self._open = False
            raise ConnectionError(str(exc)) from exc
        except MllpError as exc:  # timeout, oversized reply
            self._open = False
            return SendVerdict.RETRY, str(exc)
        try:
            code, acked = ack_code_of(ack)
        except ValueError:
            return SendVerdict.RETRY, "the peer's reply is not an acknowledgement"
        sent = control_id_of(message)
        if sent and acked != sent:
            return SendVerdict.RETRY, f"the peer acknowledged {acked!r}, not {sent!r}"
        if code in ("AA", "CA"):
            return SendVerdict.DONE, code
        if code in ("AE", "CE"):
            return SendVerdict.PERMANENT, f"peer answered {code}"
        return SendVerdict.RETRY, f"peer answered {code or 'no code'}"

    def close(self) -> None:
        self.client.close()
        self._open = False
