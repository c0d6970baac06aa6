"""The DICOM audit messages of PS3.15 A.5.3 the router sends, one function each.

Each returns an ``AuditEvent`` (``plugins.audit.message``) with the participants and participant objects its
table asks for; the hooks of the plugin (``plugins.audit``) fill them from what happened. docs/audit.md lists,
message by message, which hook sends which message with which values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from plugins.audit.facts import Patient, Study, Subject
from plugins.audit.message import AuditEvent, Code, Description, Participant, ParticipantObject, SopClass

# -- codes (PS3.16: DCM; RFC 3881 codes as PS3.15 names them) -------------------------------------------------
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
BEGIN_TRANSFERRING = Code("110102", "DCM", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
EXPORT = Code("110106", "DCM", "Export")
IMPORT = Code("110107", "DCM", "Import")
ORDER_RECORD = Code("110109", "DCM", "Order Record")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
PROCEDURE_RECORD = Code("110111", "DCM", "Procedure Record")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")

APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
LOGIN = Code("110122", "DCM", "Login")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
SOFTWARE_CONFIGURATION = Code("110131", "DCM", "Software Configuration")
RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")

APPLICATION = Code("110150", "DCM", "Application")
APPLICATION_LAUNCHER = Code("110151", "DCM", "Application Launcher")
DESTINATION = Code("110152", "DCM", "Destination Role ID")
SOURCE = Code("110153", "DCM", "Source Role ID")
DESTINATION_MEDIA = Code("110154", "DCM", "Destination Media")
SOURCE_MEDIA = Code("110155", "DCM", "Source Media")
MEDIA_URI = Code("110037", "DCM", "URI")  # CID 405 Media Type: a network destination or source
FILM = Code("110010", "DCM", "Film")  # CID 405 Media Type: printed film

STUDY_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
NODE_ID = Code("110182", "DCM", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")

PERSON, SYSTEM = "1", "2"  # ParticipantObjectTypeCode
ROLE_PATIENT, ROLE_REPORT, ROLE_MASTER_FILE, ROLE_SECURITY_RESOURCE, ROLE_JOB = "1", "3", "5", "13", "20"

SUCCESS, MINOR, SERIOUS, MAJOR = 0, 4, 8, 12
OUTCOMES = {"success": SUCCESS, "minor": MINOR, "serious": SERIOUS, "major": MAJOR}
MAX_LISTED = 100  # instance UIDs listed in a study object; above that only the counts per SOP class
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Local:
    """The router as a participant: its AE title, the host it reports (NetworkAccessPointID), its process."""

    ae_title: str
    host: str
    process: str  # serve | forward

    def participant(self, requestor: bool = False, role: Code | None = None) -> Participant:
        return Participant(self.ae_title, requestor, role, f"AETITLES={self.ae_title}",
                           f"router {self.process} (pid {os.getpid()})", self.host)  # fmt: skip


def split_address(address: str) -> tuple[str, str]:
    """``host:port`` (``[v6]:port``) as (host, port); an address without a port is all host."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, ""
    return host.strip("[]"), port


def dicom_node(ae_title: str, address: str, requestor: bool, role: Code | None = None) -> Participant:
    """A DICOM application entity at ``address`` (``host:port``, or a host)."""
    return Participant(ae_title, requestor, role, f"AETITLES={ae_title}" if ae_title else "", "",
                       split_address(address)[0])  # fmt: skip


def http_client(user: str, address: str, requestor: bool, role: Code | None = None) -> Participant:
    """An HTTP client: its authenticated user, else its host."""
    host = split_address(address)[0]
    return Participant(user or host, requestor, role, "", user, host)


def hl7_application(application: str, facility: str, address: str) -> Participant:
    """An HL7 sender: MSH-3 and MSH-4, as IHE's messages name one (``application|facility``)."""
    return Participant(f"{application}|{facility}", True, SOURCE, "", application, split_address(address)[0])


# -- participant objects ---------------------------------------------------------------------------------------
def patient_object(patient: Patient, details: list[tuple[str, bytes]] | None = None) -> ParticipantObject:
    return ParticipantObject(patient.id, PATIENT_NUMBER, PERSON, ROLE_PATIENT, name=patient.name or patient.id,
                             details=details or [])  # fmt: skip


def study_object(study: Study, life_cycle: str = "") -> ParticipantObject:
    listed = sum(len(uids) for uids in study.classes.values()) <= MAX_LISTED
    classes = [SopClass(uid, len(uids), uids if listed else []) for uid, uids in study.classes.items() if uid]
    return ParticipantObject(study.uid, STUDY_UID, SYSTEM, ROLE_REPORT, name=study.uid, life_cycle=life_cycle,
                             description=Description(study.mpps, study.accessions, classes))  # fmt: skip


def subject_objects(subject: Subject, life_cycle: str = "") -> list[ParticipantObject]:
    """The study objects of ``subject``, then its patient (the order of PS3.15's tables)."""
    return [study_object(s, life_cycle) for s in subject.studies.values()] + [patient_object(subject.patient)]


# -- the messages ------------------------------------------------------------------------------------------------
def application_activity(local: Local, start: bool, launcher: str) -> AuditEvent:
    """A.5.3.1: the router's process started or stopped; ``launcher`` is the operating system user running it."""
    started = local.participant(requestor=False, role=APPLICATION)
    users = [started]
    if launcher:
        users.append(Participant(launcher, True, APPLICATION_LAUNCHER, user_name=launcher))
    else:
        started.requestor = True
    return AuditEvent(APPLICATION_ACTIVITY, "E", types=[APPLICATION_START if start else APPLICATION_STOP],
                      participants=users)  # fmt: skip


def instances_transferred(
    subject: Subject, action: str, source: Participant, destination: Participant, others: list[Participant],
    outcome: int = SUCCESS, description: str = "",
) -> AuditEvent:  # fmt: skip
    """A.5.3.7: instances of one patient went from ``source`` to ``destination`` (C created, U updated, R other)."""
    source.role, destination.role = SOURCE, DESTINATION
    return AuditEvent(INSTANCES_TRANSFERRED, action, outcome, outcome_description=description,
                      participants=[source, destination, *others], objects=subject_objects(subject))  # fmt: skip


def instances_accessed(subject: Subject, action: str, users: list[Participant], description: str = "") -> AuditEvent:
    """A.5.3.6: instances of one patient were used (R: read, e.g. printed) by ``users`` (the requestor first)."""
    return AuditEvent(INSTANCES_ACCESSED, action, SUCCESS, outcome_description=description, participants=users,
                      objects=subject_objects(subject))  # fmt: skip


def begin_transferring(subject: Subject, source: Participant, destination: Participant) -> AuditEvent:
    """A.5.3.3: the router is about to send instances of one patient to ``destination``."""
    source.role, destination.role = SOURCE, DESTINATION
    return AuditEvent(BEGIN_TRANSFERRING, "E", participants=[source, destination],
                      objects=subject_objects(subject))  # fmt: skip


def query(
    querying: Participant, answering: Participant, sop_class: str, data_set: bytes, outcome: int, description: str
) -> AuditEvent:
    """A.5.3.10: a query was received; the SOP class queried and the query data set (Explicit VR Little Endian)."""
    querying.role, answering.role = SOURCE, DESTINATION
    asked = ParticipantObject(sop_class, SOP_CLASS_UID, SYSTEM, ROLE_REPORT, query=data_set,
                              details=[("TransferSyntax", EXPLICIT_LITTLE.encode())])  # fmt: skip
    return AuditEvent(QUERY, "E", outcome, outcome_description=description, participants=[querying, answering],
                      objects=[asked])  # fmt: skip


def record(
    event_id: Code, action: str, users: list[Participant], patient: Patient, details: list[tuple[str, bytes]],
    outcome: int = SUCCESS, studies: list[Study] | None = None,
) -> AuditEvent:  # fmt: skip
    """A.5.3.13-15: an order, patient or procedure record was created (C), read (R), updated (U) or deleted (D)."""
    objects = [study_object(s) for s in studies or []] + [patient_object(patient, details)]
    return AuditEvent(event_id, action, outcome, participants=users, objects=objects)


def security_alert(
    type_code: Code, outcome: int, reporter: Participant, performers: list[Participant],
    subjects: list[ParticipantObject],
) -> AuditEvent:  # fmt: skip
    """A.5.3.11: something was refused or changed that a security officer wants to know of."""
    for p in performers:
        p.requestor = False  # PS3.15: performing persons or processes "shall be FALSE"
    reporter.requestor = True
    return AuditEvent(SECURITY_ALERT, "E", outcome, types=[type_code], participants=[reporter, *performers],
                      objects=subjects)  # fmt: skip


def alert_subject(
    object_id: str, description: str, id_type: Code = NODE_ID, role: str = ROLE_SECURITY_RESOURCE, name: str = ""
) -> ParticipantObject:
    """An alert subject: a node (its address) or a file (its URI), with its "Alert Description"."""
    return ParticipantObject(object_id, id_type, SYSTEM, role, name=name or object_id,
                             details=[("Alert Description", description.encode())])  # fmt: skip


def user_authentication(user: Participant, router: Participant, outcome: int, description: str) -> AuditEvent:
    """A.5.3.12: a login (an authenticated HTTP request), successful or not."""
    user.requestor, router.requestor = True, False
    return AuditEvent(USER_AUTHENTICATION, "E", outcome, types=[LOGIN], outcome_description=description,
                      participants=[user, router])  # fmt: skip


def data_export(
    subjects: list[Subject], exporter: Participant, remote: Participant, media_uri: str, outcome: int,
    description: str, media: Code = MEDIA_URI,
) -> AuditEvent:  # fmt: skip
    """A.5.3.4: data left the security domain of the router (``media_uri``: where to, e.g. ``dicom://AE@host:port``)."""
    exporter.role, remote.role = SOURCE, DESTINATION
    exporter.requestor, remote.requestor = True, False
    medium = Participant(media_uri, False, DESTINATION_MEDIA, host=remote.host, media=media)
    objects = [o for s in subjects for o in subject_objects(s, life_cycle="10")]
    return AuditEvent(EXPORT, "R", outcome, outcome_description=description,
                      participants=[remote, exporter, medium], objects=objects)  # fmt: skip


def data_import(
    subjects: list[Subject], importer: Participant, remote: Participant, media_uri: str, outcome: int,
    description: str,
) -> AuditEvent:  # fmt: skip
    """A.5.3.5: data entered the router's security domain from outside (``media_uri``: where from)."""
    importer.role, remote.role = DESTINATION, SOURCE
    importer.requestor, remote.requestor = False, True
    media = Participant(media_uri, False, SOURCE_MEDIA, host=remote.host, media=MEDIA_URI)
    objects = [o for s in subjects for o in subject_objects(s, life_cycle="2")]
    return AuditEvent(IMPORT, "C", outcome, outcome_description=description,
                      participants=[importer, media, remote], objects=objects)  # fmt: skip
