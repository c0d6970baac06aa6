"""Query/Retrieve SCP: C-FIND on the index, and the negotiation around it.

The listener (``router.listeners.dimse.scp``) accepts the contexts of ``QR_SOP_CLASSES``, hands C-FIND requests of those
classes to ``QueryRetrieveSCP.on_find`` and answers SOP Class Extended Negotiation with ``on_extended``. C-MOVE
and C-GET are served by ``router.listeners.dimse.qr_retrieve``.

A C-FIND runs in the thread of its association (pynetdicom gives each association one); it reads the index one
page at a time without holding a connection in between, so it never blocks other associations or the writers.
Every outcome is a status (docs/query.md), never an exception that ends the association.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from router import _pynetdicom
from router.config import RouterConfig
from router.logs import database_error, redact
from router.query.find import FindPlan, QueryError, plan_find, run_find, run_find_encoded
from router.query.model import FIND, SOP_CLASSES
from router.statuses import (
    QR_CANCELLED,
    QR_CANNOT_DECODE,
    QR_INTERNAL_ERROR,
    QR_OUT_OF_RESOURCES,
    QR_PENDING,
    SUCCESS,
)

log = logging.getLogger(__name__)

QR_SOP_CLASSES = tuple(SOP_CLASSES)
FIND_SOP_CLASSES = tuple(uid for uid, (_m, service) in SOP_CLASSES.items() if service == FIND)
# SOP Class Extended Negotiation (PS3.4 C.5.1.1.2, C.5.2.1.2, C.5.3.1.2): which option bytes we support.
# C-FIND: relational queries, combined date-time matching; not fuzzy names, time zone adjustment, enhanced images.
# C-MOVE/C-GET: relational retrieval; not enhanced multi-frame conversion.
FIND_OPTIONS = (1, 1, 0, 0, 0)
RETRIEVE_OPTIONS = (1, 0)
OUT_OF_RESOURCES_ERRORS = (OperationalError, PoolTimeout, MemoryError)

FindResult = tuple[int, Dataset | bytes | None]  # bytes: an identifier encoded for EncodedFind (_encoded_syntax)


def negotiated(assoc: Association, sop_class: str) -> bytes:
    """The option bytes we accepted for ``sop_class`` on this association (``b""``: none)."""
    try:
        return bytes(assoc.acceptor.sop_class_extended.get(UID(sop_class), b"") or b"")
    except Exception:  # pragma: no cover - pynetdicom internals
        return b""


def on_extended(event: evt.Event) -> dict[UID, bytes]:
    """EVT_SOP_EXTENDED: agree to the options we support, byte for byte, for the Q/R SOP classes."""
    reply: dict[UID, bytes] = {}
    for uid, info in (getattr(event, "app_info", None) or {}).items():
        entry = SOP_CLASSES.get(str(uid))
        if entry is None or not info:
            continue
        supported = FIND_OPTIONS if entry[1] == FIND else RETRIEVE_OPTIONS
        reply[UID(uid)] = bytes(
            1 if i < len(supported) and supported[i] and byte == 1 else 0 for i, byte in enumerate(bytes(info))
        )
    return reply


def _encoded_syntax(event: evt.Event) -> bool | None:
    """Implicit VR (True) or Explicit VR (False) Little Endian when the service takes identifiers as bytes in the
    context's transfer syntax (``router._pynetdicom.find_service``); None: answer Datasets."""
    if not _pynetdicom.encoded_identifiers(event):
        return None
    syntax = UID(str(event.context.transfer_syntax))
    if syntax == ImplicitVRLittleEndian:
        return True
    return False if syntax == ExplicitVRLittleEndian else None


class QueryRetrieveSCP:
    def __init__(self, config: RouterConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.on_patients_used: Callable[[set[int]], None] | None = None  # the storage keeper's use times

    def on_find(self, event: evt.Event) -> Iterator[FindResult]:
        """EVT_C_FIND for the Q/R information models: one pending response per match, then the final status."""
        started = time.monotonic()
        sop_class = str(event.context.abstract_syntax)
        calling = str(event.assoc.requestor.ae_title).strip()
        model, _service = SOP_CLASSES[sop_class]
        count = 0
        level = "?"
        try:
            try:
                identifier = event.identifier
            except Exception as exc:
                raise QueryError(QR_CANNOT_DECODE, f"cannot decode the identifier: {exc}") from exc
            options = negotiated(event.assoc, sop_class)
            plan = plan_find(
                model,
                identifier,
                relational=options[:1] == b"\x01",
                combined_datetime=options[1:2] == b"\x01",
            )
            level = plan.level
            for match in self._matches(event, plan):
                if event.is_cancelled:
                    log.info("C-FIND %s %s from %s cancelled after %d match(es)", model.name, level, calling, count)
                    yield QR_CANCELLED, None
                    return
                count += 1
                yield QR_PENDING, match
        except QueryError as exc:
            log.warning("C-FIND %s from %s refused (0x%04X): %s", model.name, calling, exc.status, redact(exc.reason))
            yield exc.status, None
            return
        except OUT_OF_RESOURCES_ERRORS as exc:
            log.error("C-FIND %s from %s: out of resources: %s", model.name, calling, exc)
            yield QR_OUT_OF_RESOURCES, None
            return
        except DBAPIError as exc:
            log.error("C-FIND %s from %s: database error: %s", model.name, calling, database_error(exc))
            yield QR_INTERNAL_ERROR, None
            return
        except Exception:
            log.exception("C-FIND %s from %s failed unexpectedly", model.name, calling)
            yield QR_INTERNAL_ERROR, None
            return
        if event.is_cancelled:
            yield QR_CANCELLED, None
            return
        log.info(
            "C-FIND %s %s from %s: %d match(es) in %.0f ms",
            model.name,
            level,
            calling,
            count,
            (time.monotonic() - started) * 1000,
        )
        yield SUCCESS, None

    def _matches(self, event: evt.Event, plan: FindPlan) -> Iterator[Dataset | bytes]:
        """The response identifiers: encoded straight from the index rows where the service takes bytes."""
        implicit_vr = _encoded_syntax(event)
        if implicit_vr is None:
            return run_find(self.engine, plan, retrieve_ae=self.config.ae_title, used=self.on_patients_used)
        return run_find_encoded(
            self.engine, plan, implicit_vr=implicit_vr, retrieve_ae=self.config.ae_title, used=self.on_patients_used
        )
