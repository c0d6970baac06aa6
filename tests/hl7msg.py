"""Building HL7 v2 test messages by field number (no counting pipes) and sending them over real MLLP."""

from __future__ import annotations

import itertools
from typing import Any

from router.hl7.mllp import MllpClient

_ids = itertools.count(1)


def seg(name: str, fields: dict[int, str], sep: str = "|") -> str:
    """A segment with ``fields[n]`` at HL7 position n (for MSH, n >= 3)."""
    last = max(fields, default=0)
    first = 3 if name == "MSH" else 1
    values = [fields.get(n, "") for n in range(first, last + 1)]
    return sep.join([name, *values]) if name != "MSH" else name + sep + "^~\\&" + sep + sep.join(values)


def message(
    kind: str,
    *segments: str,
    control_id: str | None = None,
    version: str = "2.5",
    charset: str = "UNICODE UTF-8",
    sender: tuple[str, str] = ("HIS", "HOSP"),
    processing_id: str = "P",
) -> str:
    code, event = kind.split("^")[:2]
    msh = seg(
        "MSH",
        {3: sender[0], 4: sender[1], 5: "ROUTER", 6: "RAD", 7: "20241101120000", 9: f"{code}^{event}",
         10: control_id or f"MSG{next(_ids):06d}", 11: processing_id, 12: version, 18: charset},
    )  # fmt: skip
    return "\r".join([msh, *segments]) + "\r"


def encode(text: str) -> bytes:
    charset = text.split("\r", 1)[0].split("|")[17] if text.count("|") > 17 else ""
    return text.encode("latin-1" if charset == "8859/1" else "utf-8")


def send(port: int, text: str | bytes, timeout: float = 20) -> str:
    """Send one message; the ACK as text."""
    raw = text if isinstance(text, bytes) else encode(text)
    with MllpClient("127.0.0.1", port, timeout) as client:
        return client.send(raw).decode("utf-8", errors="replace")


def ack_segments(ack: str) -> dict[str, list[str]]:
    """``{"MSA": [...fields...], "ERR": [...]}`` (fields split on |; MSA[1] is MSA-1)."""
    out: dict[str, Any] = {}
    for line in ack.split("\r"):
        if line:
            out.setdefault(line[:3], line.split("|"))
    return out


def adt(event: str, pid: dict[int, str], *extra: str, **kw: Any) -> str:
    return message(f"ADT^{event}", seg("EVN", {1: event}), seg("PID", {1: "1", **pid}), *extra, **kw)
