"""Orders to worklist items: ORM^O01 (v2.3-2.5, IHE RAD-2/RAD-4 with ZDS) and OMI^O23 (v2.5+, with IPC).

One ORC starts an order; its OBR (and TQ1, ZDS, IPC segments) describe it. Mapping (IHE Radiology TF-2):

| worklist item | ORM^O01 | OMI^O23 |
| --- | --- | --- |
| placer / filler order number | ORC-2 / ORC-3 (else OBR-2 / OBR-3) | same |
| Accession Number | OBR-18 | IPC-1 (else OBR-18) |
| Requested Procedure ID | OBR-19 (else the accession number) | IPC-2 |
| Requested Procedure Code Sequence, Description | OBR-44 (else OBR-4): code, text, scheme | same |
| Scheduled Procedure Step ID | OBR-20 (else the requested procedure id) | IPC-4 |
| Modality | OBR-24 | IPC-5 (else OBR-24) |
| SPS start date/time | TQ1-7, else OBR-27.4, else ORC-7.4 | same |
| priority | TQ1-9, else OBR-27.6, else ORC-7.6 (S STAT, A/P/T HIGH, else ROUTINE) | same |
| Study Instance UID | ZDS-1 | IPC-3 (else ZDS-1); generated when neither |
| Scheduled Station AE Title | ``hl7.worklist.station_ae_by_modality`` | IPC-9 |
| Scheduled Station Name / location | — | IPC-7 / IPC-8 |
| Referring Physician | PV1-8 | same |
| Requesting Physician | ORC-12, else OBR-16 | same |
| Scheduled Performing Physician | OBR-34 (technician) | same |
| Reason for the Requested Procedure | OBR-31 | same |

Order control (ORC-1): NW new (an NW for an order already known updates it: a re-sent order is not an error),
XO update, CA / DC / OC cancel (the item leaves the worklist), SC status change from ORC-5 (IP in progress,
CM completed, CA cancelled, DC discontinued, SC scheduled).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select, update

from router.config import RouterConfig
from router.hl7.codes import DATA_TYPE_ERROR, REQUIRED_FIELD_MISSING, TABLE_VALUE_NOT_FOUND, UNKNOWN_KEY
from router.hl7.coding import dicom_coding_scheme
from router.hl7.errors import Hl7Error
from router.hl7.patients import hl7_date, person_name
from router.hl7.segments import HL7_NULL, Segment
from router.store.models import SpsStatus, utcnow
from router.store.tables import WORKLIST_ITEM as WORKLIST

CANCEL_CONTROLS = {"CA": SpsStatus.CANCELED, "OC": SpsStatus.CANCELED, "DC": SpsStatus.DISCONTINUED}
ORDER_CONTROLS = {"NW", "XO", "SC", *CANCEL_CONTROLS}
ORDER_STATUS = {
    "SC": SpsStatus.SCHEDULED,
    "IP": SpsStatus.IN_PROGRESS,
    "CM": SpsStatus.COMPLETED,
    "CA": SpsStatus.CANCELED,
    "DC": SpsStatus.DISCONTINUED,
}
PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "T": "HIGH", "R": "ROUTINE", "C": "ROUTINE"}


@dataclass
class OrderGroup:
    orc: Segment
    obr: Segment | None = None
    tq1: Segment | None = None
    zds: Segment | None = None
    ipcs: list[Segment] = field(default_factory=list)


def order_groups(segments: Sequence[Segment]) -> list[OrderGroup]:
    groups: list[OrderGroup] = []
    for seg in segments:
        if seg.name == "ORC":
            groups.append(OrderGroup(seg))
        elif groups and seg.name in ("OBR", "TQ1", "ZDS"):
            current = groups[-1]
            if getattr(current, seg.name.lower()) is None:
                setattr(current, seg.name.lower(), seg)
        elif groups and seg.name == "IPC":
            groups[-1].ipcs.append(seg)
    return groups


def _first(*values: str) -> str:
    return next((v for v in values if v and v != HL7_NULL), "")


def _uid_ok(uid: str) -> bool:
    return 0 < len(uid) <= 64 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in uid.split("."))


def _start(group: OrderGroup) -> tuple[str, str]:
    """(date, time) of the scheduled start, as DICOM DA and TM."""
    for seg, fld, comp in ((group.tq1, 7, 1), (group.obr, 27, 4), (group.orc, 7, 4)):
        if seg is None:
            continue
        value = seg.get(fld, comp)
        if value and value != HL7_NULL:
            date = hl7_date(seg, fld, comp)
            time = value[8:].split("+")[0].split("-")[0].split(".")[0]
            return date, time.ljust(6, "0") if time else ""  # HHMMSS: date + time sorts as one date-time
    return "", ""


def _priority(group: OrderGroup) -> str:
    code = _first(
        group.tq1.get(9) if group.tq1 else "",
        group.obr.get(27, 6) if group.obr else "",
        group.orc.get(7, 6),
    ).upper()
    return PRIORITY.get(code, "ROUTINE" if not code else code[:16])


def item_values(group: OrderGroup, patient_fk: int, config: RouterConfig, ipc: Segment | None) -> dict[str, Any]:
    """The worklist item columns for one step of one order."""
    orc, obr = group.orc, group.obr
    if obr is None:
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "an order needs an OBR segment", location=("OBR", 1))
    accession = _first(ipc.get(1) if ipc else "", obr.get(18))
    rp_id = _first(ipc.get(2) if ipc else "", obr.get(19), accession)
    code_field = 44 if obr.get(44) else 4
    modality = _first(ipc.get(5) if ipc else "", obr.get(24)).upper()
    if not modality:
        where = ("IPC", 1, 5, 1) if ipc else ("OBR", 1, 24, 1)
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no modality for the scheduled step", location=where)
    date, time = _start(group)
    if not date:
        where = ("TQ1", 1, 7, 1) if group.tq1 else ("OBR", 1, 27, 4)
        raise Hl7Error("AE", REQUIRED_FIELD_MISSING, "no scheduled start date/time", location=where)
    station_ae = ipc.get(9) if ipc else ""
    if not station_ae:
        stations = config.hl7.worklist.station_ae_by_modality.get(modality, [])
        station_ae = stations[0] if stations else ""
    study_uid = _first(ipc.get(3) if ipc else "", group.zds.get(1) if group.zds else "")
    if study_uid and not _uid_ok(study_uid):
        where = ("IPC", 1, 3, 1) if ipc and ipc.get(3) else ("ZDS", 1, 1, 1)
        raise Hl7Error("AE", DATA_TYPE_ERROR, f"{study_uid!r} is not a valid UID", location=where)
    return {
        "patient_fk": patient_fk,
        "accession_number": accession[:16],
        "requested_procedure_id": rp_id[:16],
        "requested_procedure_description": _first(obr.get(code_field, 2), obr.get(4, 2))[:64],
        "procedure_code_value": obr.get(code_field, 1)[:16],
        "procedure_code_scheme": dicom_coding_scheme(obr.get(code_field, 3), config.hl7.local_coding_scheme),
        "procedure_code_meaning": obr.get(code_field, 2)[:64],
        "sps_id": _first(ipc.get(4) if ipc else "", obr.get(20), rp_id)[:16],
        "sps_description": _first(ipc.get(6, 2) if ipc else "", obr.get(4, 2))[:64],
        "sps_start_date": date,
        "sps_start_time": time,
        "modality": modality[:16],
        "station_ae": station_ae[:16],
        "station_name": (ipc.get(7) if ipc else "")[:16],
        "location": (ipc.get(8) if ipc else "")[:16],
        "performing_physician": person_name(obr, 34) if obr.get(34) not in ("", HL7_NULL) else "",
        "requesting_physician": _first(person_name_at(orc, 12), person_name_at(obr, 16)),
        "reason": obr.get(31, 2) or obr.get(31, 1),
        "priority": _priority(group),
        "study_uid": study_uid,
    }


def person_name_at(seg: Segment, fld: int) -> str:
    """An XCN (id^family^given^second^suffix^prefix) as a DICOM PN."""
    if seg.get(fld) in ("", HL7_NULL):
        return ""
    parts = [seg.get(fld, c) for c in (2, 3, 4, 6, 5)]
    return "^".join(parts).rstrip("^")


def _order_numbers(group: OrderGroup) -> tuple[str, str]:
    obr = group.obr
    placer = _first(group.orc.get(2), obr.get(2) if obr else "")
    filler = _first(group.orc.get(3), obr.get(3) if obr else "")
    if not placer and not filler:
        raise Hl7Error(
            "AE", REQUIRED_FIELD_MISSING, "an order needs a placer or filler order number", location=("ORC", 1, 2, 1)
        )
    return placer[:64], filler[:64]


def _existing(conn: Connection, placer: str, filler: str) -> list[Any]:
    conds = []
    if placer:
        conds.append(WORKLIST.c.placer_order == placer)
    if filler:
        conds.append(WORKLIST.c.filler_order == filler)
    query = select(WORKLIST.c.id, WORKLIST.c.sps_id, WORKLIST.c.study_uid, WORKLIST.c.status).where(
        conds[0] if len(conds) == 1 else conds[0] | conds[1]
    )
    return list(conn.execute(query).all())


def apply_order(conn: Connection, group: OrderGroup, patient_fk: int, config: RouterConfig, referring: str) -> str:
    """Apply one ORC group; returns what was done (one line)."""
    control = group.orc.get(1).upper()
    if control not in ORDER_CONTROLS:
        raise Hl7Error(
            "AE",
            TABLE_VALUE_NOT_FOUND,
            f"order control {control!r} is not supported (NW, XO, CA, DC, OC, SC)",
            location=("ORC", 1, 1, 1),
        )
    placer, filler = _order_numbers(group)
    existing = _existing(conn, placer, filler)  # whatever their status
    if control in CANCEL_CONTROLS or control == "SC":
        return _change_status(conn, group, control, existing, placer or filler, bool(placer))
    if control == "XO" and existing and all(row.status not in SpsStatus.ACTIVE for row in existing):
        raise Hl7Error(
            "AE",
            UNKNOWN_KEY,
            f"order {placer or filler!r} is {existing[0].status.lower()}: send NW to schedule it again",
            location=("ORC", 1, 1, 1),
        )
    if control == "XO" and not existing:
        raise _unknown_order(placer or filler, bool(placer))
    written = _write_steps(conn, group, control, existing, patient_fk, config, (placer, filler, referring))
    verb = "new" if control == "NW" and not existing else "updated"
    return f"{control} order {placer or filler}: {written} step(s) {verb}"


def _unknown_order(number: str, by_placer: bool) -> Hl7Error:
    return Hl7Error("AE", UNKNOWN_KEY, f"unknown order {number!r}", location=("ORC", 1, 2 if by_placer else 3, 1))


def _change_status(
    conn: Connection, group: OrderGroup, control: str, existing: list[Any], number: str, by_placer: bool
) -> str:
    """CA / DC / OC / SC: every step of the order takes the status the message gives."""
    if not existing:
        raise _unknown_order(number, by_placer)
    if control == "SC":
        status = ORDER_STATUS.get(group.orc.get(5).upper())
        if status is None:
            raise Hl7Error(
                "AE",
                TABLE_VALUE_NOT_FOUND,
                f"order status {group.orc.get(5)!r} is not supported (SC, IP, CM, CA, DC)",
                location=("ORC", 1, 5, 1),
            )
    else:
        status = CANCEL_CONTROLS[control]
    ids = [row.id for row in existing]
    conn.execute(update(WORKLIST).where(WORKLIST.c.id.in_(ids)).values(status=status, updated_at=utcnow()))
    return f"{control} order {number}: {len(ids)} step(s) {status}"


def _write_steps(
    conn: Connection,
    group: OrderGroup,
    control: str,
    existing: list[Any],
    patient_fk: int,
    config: RouterConfig,
    order: tuple[str, str, str],
) -> int:
    """NW / XO: insert or update one worklist item per scheduled step (IPC, or one without); how many."""
    placer, filler, referring = order
    now = utcnow()
    known_uid = next((row.study_uid for row in existing if row.study_uid), "")
    steps: list[Segment | None] = list(group.ipcs) or [None]
    for ipc in steps:
        values = item_values(group, patient_fk, config, ipc)
        values["study_uid"] = values["study_uid"] or known_uid or f"2.25.{uuid.uuid4().int}"
        known_uid = values["study_uid"]
        values.update(placer_order=placer, filler_order=filler, updated_at=now)
        if referring:
            values["referring_physician"] = referring
        match = next((row for row in existing if row.sps_id == values["sps_id"]), None)
        if match is None and len(existing) == 1 and len(steps) == 1:
            match = existing[0]  # the step id itself changed
        if match is None:
            conn.execute(insert(WORKLIST).values(status=SpsStatus.SCHEDULED, **values))
        else:
            if control == "NW" and match.status not in SpsStatus.ACTIVE:  # the number of a cancelled/done order
                values["status"] = SpsStatus.SCHEDULED
            conn.execute(update(WORKLIST).where(WORKLIST.c.id == match.id).values(**values))
    return len(steps)
