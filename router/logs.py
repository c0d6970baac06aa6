"""Logging for the router's processes: the serving process and its forward process log alike.

Log lines carry UIDs, AE titles, addresses and codes, never a patient's name, ID or birth date, at every level the
router ships with from INFO up (docs/security.md). Two helpers keep error texts that way:

- ``redact(text)`` for an error text made from what a peer sent (an HL7 refusal, a query the router cannot match,
  a stage or decoding error): the values it quotes (``{value!r}``, the project's habit) become ``'...'``, UIDs stay.
  The peer itself still gets the whole text (ERR segment, Error Comment): those are its own values.
- ``database_error(exc)`` for a database failure: the driver's first line, without SQLAlchemy's statement and
  without PostgreSQL's DETAIL, which quotes the values of a violated key (a patient identifier, say).

pydicom's WARNING messages quote values too ("Invalid value for VR DA: '19470312'"): below DEBUG its logger shows
only errors and its Python warnings are not printed.
"""

from __future__ import annotations

import logging
import re
import warnings

_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_UID = re.compile(r"[0-9]+(\.[0-9]+)+")  # a UID: digits with dots (a date has none)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pynetdicom", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if level != "DEBUG":  # pydicom's validation warnings quote the value they judge: a birth date, a name
        logging.getLogger("pydicom").addFilter(_errors_only)  # a filter: importing pydicom resets its level
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    # pynetdicom's standard event handlers describe every PDU and DIMSE message for INFO and DEBUG lines that the
    # WARNING level above then drops: about 6 % of the DUL thread's time per small C-STORE. Do not bind them.
    from router._pynetdicom import quiet_event_logging

    quiet_event_logging()


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def redact(text: object) -> str:
    """``text`` for a log line: every value it quotes replaced by ``'...'``, except UIDs (numbers joined by dots)."""

    def keep_uids(match: re.Match[str]) -> str:
        return match.group(0) if _UID.fullmatch(match.group(0)[1:-1]) else "'...'"

    return _QUOTED.sub(keep_uids, str(text))


def database_error(exc: BaseException) -> str:
    """A database failure for a log line or a status comment: the driver's exception and its first line only."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0]}" if lines else type(orig).__name__
