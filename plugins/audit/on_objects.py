"""Hooks about objects: received, forwarded, exported, queried; MPPS steps (docs/audit.md, message by message)."""

from __future__ import annotations

import logging
import zipfile
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from sqlalchemy import select

from plugins.audit import events, facts, on_hl7, stage
from plugins.audit.message import Participant
from plugins.audit.state import Running, running
from router import storage
from router.hl7.message import parse_message
from router.hooks.answers import ImportedInstance, InstanceRef
from router.hooks.specs import hookimpl
from router.intake.envelope import Envelope, dataset_text
from router.outbox.jobs import PRINT_KINDS, JobKind
from router.printing import bundle as print_bundle
from router.store.models import Job, JobState
from router.store.tables import JOB

log = logging.getLogger("router.audit")

STORE_ACTIONS = {"stored": "C", "overwritten": "U"}  # else R: the router held the object already
OBJECT_JOBS = {JobKind.DICOM_STORE, JobKind.DICOM_STORE_COMMIT, JobKind.DICOM_CORRECTED}
MPPS_JOBS = {JobKind.MPPS_CREATE, JobKind.MPPS_SET}
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # QIDO-RS is the Study Root query model over HTTP (PS3.18)
DIMSE_SUCCESS = {0x0000, 0xFE00}  # success, cancelled at the caller's request


def _sender(env: Envelope) -> Participant:
    src = env.source
    if src.protocol == "stow":
        return events.http_client("", src.address, True)
    if src.protocol == "media":  # router import: the medium it was read from
        return Participant(media_uri(src.address), True, media=events.SOURCE_MEDIA)
    return events.dicom_node(src.calling_ae, src.address, True)


@hookimpl
def router_instance_stored(envelope: Envelope, outcome: str, jobs: int) -> None:
    state = running()
    if state is None:
        return
    subject = facts.from_envelope(envelope)
    action = STORE_ACTIONS.get(outcome, "R")
    state.record(events.instances_transferred(subject, action, _sender(envelope), state.local.participant(), []))
    if jobs:
        _begin_transferring(state, envelope.sop_instance_uid, subject)
    stage.flush(state, stage.key_of(envelope))


def _begin_transferring(state: Running, sop_uid: str, subject: facts.Subject) -> None:
    """The object is queued for its peers: one Begin Transferring message per peer it will go to."""
    query = (
        select(JOB.c.peer)
        .distinct()
        .where(
            JOB.c.sop_uid == sop_uid, JOB.c.state == JobState.PENDING, JOB.c.kind.in_([k.value for k in OBJECT_JOBS])
        )
    )
    with state.engine().connect() as conn:
        peers = sorted(row.peer for row in conn.execute(query))
    for peer in peers:
        remote, _ = state.peer(peer)
        state.record(events.begin_transferring(subject, state.local.participant(requestor=True), remote))


@hookimpl
def router_instance_refused(sop_instance_uid: str) -> None:
    stage.drop(("dicom", sop_instance_uid))


@hookimpl
def router_forwarded(job: Job, status: int) -> None:
    state = running()
    if state is None:
        return
    remote, _ = state.peer(job.peer)
    if job.kind in OBJECT_JOBS:
        with state.engine().connect() as conn:
            subjects = facts.instances(conn, [job.sop_uid])
        for subject in subjects:
            state.record(events.instances_transferred(subject, "R", state.local.participant(True), remote, [],
                                                      description=f"delivered, status 0x{status:04X}"))  # fmt: skip
    elif job.kind in PRINT_KINDS:
        _printed(state, job, remote, status)
    elif job.kind in MPPS_JOBS or job.kind == JobKind.HL7:
        try:
            raw = storage.of(state.config).read_bytes(job.path)
        except OSError as exc:  # its file went with the job: what was sent cannot be told any more
            log.warning("audit: forwarded %s job %s: its message cannot be read (%s); not audited", job.kind,
                        job.id, exc.strerror)  # fmt: skip
            return
        users = [state.local.participant(True), remote]
        if job.kind == JobKind.HL7:
            on_hl7.record_message(state, parse_message(raw), "R", users)
        else:
            _procedure(state, "R", job.sop_uid, dcmread(BytesIO(raw), force=True), users)


def _printed(state: Running, job: Job, printer: Participant, status: int) -> None:
    """A print job was printed: an Export message (A.5.3.4: "recording on film"), the printer as the destination
    and the film as the medium, and a DICOM Instances Accessed message (A.5.3.6, action R) per patient; the objects
    from the job's payload, or from the index when it is gone."""
    subjects: dict[str, facts.Subject] = {}
    try:
        for ds in print_bundle.objects(storage.of(state.config).local_path(job.path)):
            one = facts.from_dataset(ds)
            subject = subjects.setdefault(one.patient.id, facts.Subject(one.patient))
            subject.study(dataset_text(ds, "StudyInstanceUID")).add(
                dataset_text(ds, "SOPClassUID"), dataset_text(ds, "SOPInstanceUID"), dataset_text(ds, "AccessionNumber")
            )
    except (OSError, InvalidDicomError, zipfile.BadZipFile):  # its file went with the job: the index may know
        with state.engine().connect() as conn:
            subjects = {str(n): subject for n, subject in enumerate(facts.instances(conn, [job.sop_uid]))}
    film = f"dicom://{printer.user_id}@{printer.host}"
    text = f"printed on film, status 0x{status:04X}"
    state.record(events.data_export(list(subjects.values()), state.local.participant(True), printer, film,
                                    events.SUCCESS, text, media=events.FILM))  # fmt: skip
    for subject in subjects.values():  # and, as ISUDM 2.1 audits a print ("Study-used"), each patient's instances read
        state.record(events.instances_accessed(subject, "R", [state.local.participant(True), printer], text))


@hookimpl
def router_instances_exported(service: str, calling_ae: str, user: str, address: str, destination: str,
                              instances: list[InstanceRef], failed: int, status: int) -> None:  # fmt: skip
    state = running()
    if state is None or not instances:
        return
    with state.engine().connect() as conn:
        subjects = facts.from_index(conn, [(i.study_uid, i.sop_class_uid, i.sop_instance_uid) for i in instances])
    if service == "media":  # router export wrote a file-set: an Export message (A.5.3.4)
        operator = Participant(user, True, user_name=user)
        state.record(events.data_export(subjects, state.local.participant(True), operator, media_uri(destination),
                                        events.MINOR if failed else events.SUCCESS,
                                        f"file-set of {len(instances)} object(s) written"))  # fmt: skip
        return
    others: list[Participant] = []
    if service.startswith("WADO"):
        to = events.http_client(user, address, True)
    elif service == "C-GET":
        to = events.dicom_node(calling_ae, address, True)
    else:  # C-MOVE: the requestor asks, the move destination receives
        to = state.peer_by_ae(destination)
        others = [events.dicom_node(calling_ae, address, True)]
    outcome = events.MINOR if failed else events.SUCCESS
    text = f"{service}: {len(instances)} sent, {failed} not sent, status " + (
        f"{status}" if service.startswith("WADO") else f"0x{status:04X}"
    )
    for subject in subjects:
        state.record(events.instances_transferred(subject, "R", state.local.participant(), to, others, outcome, text))


def media_uri(path: str) -> str:
    """A medium's path as the URI an Export or Import message names."""
    return path if "://" in path else f"file://{path}"


@hookimpl
def router_instances_imported(media: str, user: str, destination: str, instances: list[ImportedInstance],
                              refused: int, damaged: int) -> None:  # fmt: skip
    """``router import``: one Import message (A.5.3.5) for all that was read from the media."""
    state = running()
    if state is None or not instances:
        return
    subjects: dict[facts.Patient, facts.Subject] = {}
    for i in instances:
        patient = facts.Patient(facts.patient_id(i.patient_id, i.issuer), i.patient_name)
        subjects.setdefault(patient, facts.Subject(patient)).study(i.study_uid).add(
            i.sop_class_uid, i.sop_instance_uid, i.accession
        )
    operator = Participant(user, True, user_name=user)
    text = f"{len(instances)} object(s) imported{f' and sent to {destination}' if destination else ''}, " + (
        f"{refused} refused, {damaged} damaged"
    )
    state.record(events.data_import(list(subjects.values()), state.local.participant(), operator,
                                    media_uri(media.split(", ")[0]), events.MINOR if refused or damaged
                                    else events.SUCCESS, text))  # fmt: skip


def encode(identifier: Dataset | None) -> bytes:
    """The query keys as PS3.15 A.5.3.10 asks: the data set, Explicit VR Little Endian."""
    if identifier is None:
        return b""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    try:
        write_dataset(out, identifier)
    except Exception:  # an identifier pydicom cannot write back (odd values): audit the query without its keys
        log.warning("audit: a query's keys could not be encoded; its message carries none")
        return b""
    return out.getvalue()


@hookimpl
def router_query_answered(service: str, calling_ae: str, user: str, address: str, sop_class_uid: str, level: str,
                          identifier: Dataset | None, matches: int, status: int) -> None:  # fmt: skip
    state = running()
    if state is None:
        return
    if service == "QIDO-RS":
        querying = events.http_client(user, address, True)
        ok = 200 <= status < 300
        shown = f"HTTP {status}"
    else:
        querying = events.dicom_node(calling_ae, address, True)
        ok = status in DIMSE_SUCCESS
        shown = f"status 0x{status:04X}"
    text = f"{service} {level or 'worklist'} query: {matches} match(es), {shown}"
    state.record(events.query(querying, state.local.participant(), sop_class_uid or STUDY_ROOT_FIND,
                              encode(identifier), events.SUCCESS if ok else events.MINOR, text))  # fmt: skip


def _procedure(state: Running, action: str, sop_uid: str, step: Dataset, users: list[Participant]) -> None:
    subject = facts.from_dataset(step)
    for study in subject.studies.values():
        study.mpps.append(sop_uid)
    state.record(events.record(events.PROCEDURE_RECORD, action, users, subject.patient, [],
                               studies=list(subject.studies.values())))  # fmt: skip


def _mpps(action: str, sop_instance_uid: str, calling_ae: str, address: str, dataset: Dataset) -> None:
    state = running()
    if state is None:
        return
    users = [events.dicom_node(calling_ae, address, True), state.local.participant()]
    _procedure(state, action, sop_instance_uid, dataset, users)
    stage.flush(state, ("mpps", sop_instance_uid))


@hookimpl
def router_mpps_created(sop_instance_uid: str, calling_ae: str, address: str, dataset: Dataset) -> None:
    _mpps("C", sop_instance_uid, calling_ae, address, dataset)


@hookimpl
def router_mpps_updated(sop_instance_uid: str, calling_ae: str, address: str, dataset: Dataset) -> None:
    _mpps("U", sop_instance_uid, calling_ae, address, dataset)
