"""Audit messages on the wire: RFC 5424 syslog messages, framed for TLS (RFC 5425) or one per datagram (RFC 5426).

PS3.15 A.6/A.7 and IHE ITI-20: facility 10 (security/authorization), severity 5 (notice), so PRI ``<85>``; the
MSGID names the payload (``IHE+RFC-3881``: the DICOM audit message schema); the MSG is the XML message in UTF-8,
after a byte order mark as RFC 5424 asks of a UTF-8 MSG. No structured data (``-``).

    <85>1 2024-05-01T10:00:00.123456Z ct-router router 4242 IHE+RFC-3881 - \\xef\\xbb\\xbf<AuditMessage>...

Over TLS each message is sent as ``MSG-LEN SP SYSLOG-MSG`` (octet counting, RFC 5425 section 4.3), never with a
line-feed trailer: an audit message may hold line breaks (as character references) and the receiver must not have
to guess where it ends.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime

PRI = 10 * 8 + 5  # facility security/authorization (10), severity notice (5)
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
NIL = "-"


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII), at most ``limit`` long."""
    cleaned = re.sub(r"[^!-~]", "_", value)[:limit]
    return cleaned or NIL


def hostname() -> str:
    """The HOSTNAME field: the fully qualified name when it is known, else the host name."""
    name = socket.getfqdn() or socket.gethostname()
    return _field(name, 255)


def timestamp(when: datetime) -> str:
    """RFC 5424 TIMESTAMP: RFC 3339 in UTC, to the microsecond."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def syslog_message(xml: str, when: datetime, host: str, app_name: str, procid: int | None = None) -> bytes:
    """One SYSLOG-MSG carrying one audit message."""
    fields = [timestamp(when), _field(host, 255), _field(app_name, 48), str(procid or os.getpid()), MSGID, NIL]
    header = f"<{PRI}>1 {' '.join(fields)} "
    return header.encode("ascii") + BOM + xml.encode("utf-8")


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(message) + message


MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4 (RFC 5426 3.2: no fragmentation at the syslog layer)
