"""An audit message as PS3.15 A.5.1 (the DICOM audit message schema) draws it, and its XML.

``AuditEvent`` holds what a message says: the event, the active participants, the participant objects. ``to_xml``
writes it in the schema's element order, with the audit source (``AuditSourceID``, ``AuditEnterpriseSiteID``) the
plugin's settings name. The messages of PS3.15 A.5.3 are made in ``plugins.audit.events``.

Two things the schema asks that are easy to miss: every coded value carries ``originalText``, and every participant
object has a ``ParticipantObjectName`` or a ``ParticipantObjectQuery`` (the schema's choice is not optional).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Code:
    """A coded value (``csd-code``, ``codeSystemName``, ``originalText``)."""

    code: str
    system: str
    meaning: str


@dataclass
class Participant:
    """An ActiveParticipant. ``host`` is its NetworkAccessPointID (type 2 for an IP address, else 1)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    alt_user_id: str = ""
    user_name: str = ""
    host: str = ""
    media: Code | None = None  # MediaIdentifier/MediaType (export and import)


@dataclass
class SopClass:
    uid: str
    count: int
    instances: list[str] = field(default_factory=list)  # listed only when few (see events.MAX_LISTED)


@dataclass
class Description:
    """ParticipantObjectDescription: what a study object contains."""

    mpps: list[str] = field(default_factory=list)
    accessions: list[str] = field(default_factory=list)
    sop_classes: list[SopClass] = field(default_factory=list)


@dataclass
class ParticipantObject:
    """A ParticipantObjectIdentification."""

    object_id: str
    id_type: Code
    type_code: str  # 1 person, 2 system object, 3 organization, 4 other
    role: str = ""  # ParticipantObjectTypeCodeRole: 1 patient, 3 report, 5 master file, 24 query ...
    name: str | None = None
    query: bytes | None = None
    details: list[tuple[str, bytes]] = field(default_factory=list)
    description: Description | None = None
    life_cycle: str = ""


@dataclass
class AuditEvent:
    event_id: Code
    action: str  # EventActionCode: C R U D E
    outcome: int = 0  # EventOutcomeIndicator: 0 success, 4 minor, 8 serious, 12 major failure
    types: list[Code] = field(default_factory=list)  # EventTypeCode
    outcome_description: str = ""
    participants: list[Participant] = field(default_factory=list)
    objects: list[ParticipantObject] = field(default_factory=list)
    when: datetime = field(default_factory=lambda: datetime.now(UTC))


# Characters XML 1.0 cannot carry at all (values come from the wire: AE titles, HL7 fields, reasons).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                       "displayName": code.meaning, "originalText": code.meaning})  # fmt: skip


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": clean(p.user_id)}
    if p.alt_user_id:
        attrs["AlternativeUserID"] = clean(p.alt_user_id)
    if p.user_name:
        attrs["UserName"] = clean(p.user_name)
    attrs["UserIsRequestor"] = "true" if p.requestor else "false"
    if p.host:
        attrs["NetworkAccessPointID"] = clean(p.host)
        attrs["NetworkAccessPointTypeCode"] = "2" if is_ip(p.host) else "1"
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    if p.role is not None:
        _code(el, "RoleIDCode", p.role)
    if p.media is not None:
        _code(ET.SubElement(el, "MediaIdentifier"), "MediaType", p.media)


def _description(parent: ET.Element, d: Description) -> None:
    el = ET.SubElement(parent, "ParticipantObjectDescription")
    for uid in d.mpps:
        ET.SubElement(el, "MPPS", {"UID": clean(uid)})
    for number in d.accessions:
        ET.SubElement(el, "Accession", {"Number": clean(number)})
    for sop in d.sop_classes:
        cls = ET.SubElement(el, "SOPClass", {"UID": clean(sop.uid), "NumberOfInstances": str(sop.count)})
        for uid in sop.instances:
            ET.SubElement(cls, "Instance", {"UID": clean(uid)})


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": clean(o.object_id), "ParticipantObjectTypeCode": o.type_code}
    if o.role:
        attrs["ParticipantObjectTypeCodeRole"] = o.role
    if o.life_cycle:
        attrs["ParticipantObjectDataLifeCycle"] = o.life_cycle
    el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _code(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode()
    else:  # the schema wants a name or a query: the ID itself when nothing better is known
        ET.SubElement(el, "ParticipantObjectName").text = clean(o.name if o.name is not None else o.object_id)
    for kind, value in o.details:
        ET.SubElement(el, "ParticipantObjectDetail", {"type": clean(kind), "value": base64.b64encode(value).decode()})
    if o.description is not None:
        _description(el, o.description)


def event_time(when: datetime) -> str:
    """xsd:dateTime with its zone (PS3.15 A.5.2.5), in UTC to the microsecond."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_xml(event: AuditEvent, source_id: str, site_id: str | None = None) -> str:
    """The message on one line (no line break anywhere: ``file`` keeps one message per line)."""
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": event_time(event.when),
        "EventOutcomeIndicator": str(event.outcome)})  # fmt: skip
    _code(ident, "EventID", event.event_id)
    for code in event.types:
        _code(ident, "EventTypeCode", code)
    if event.outcome_description:
        ET.SubElement(ident, "EventOutcomeDescription").text = clean(event.outcome_description)
    for p in event.participants:
        _participant(root, p)
    source = {"AuditSourceID": clean(source_id)}
    if site_id:
        source = {"AuditEnterpriseSiteID": clean(site_id), **source}
    ET.SubElement(ET.SubElement(root, "AuditSourceIdentification", source), "AuditSourceTypeCode", {"csd-code": "4"})
    for o in event.objects:
        _object(root, o)
    text = ET.tostring(root, encoding="unicode")
    return text.replace("\r", "&#13;").replace("\n", "&#10;")  # only in values: ElementTree adds no line breaks
