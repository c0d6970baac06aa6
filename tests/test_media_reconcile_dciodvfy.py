"""An object reconciliation changed passes dicom3tools' dciodvfy with no error or warning it did not have before
(issue 19): the local patient and order, the procedure code with a DICOM coding scheme, new UIDs, a name that
needs UTF-8. The check is shown to notice the bug it guards against: HL7's coding system copied as it came. The
demographics coercion of the ``coerce`` stage, from an HL7 order with a Requesting Physician, adds no finding either
(Requesting Physician is in no image IOD: dciodvfy called such an object a Standard Extended SOP Class)."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread, examples
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from sqlmodel import Session

from router.hl7.coding import dicom_coding_scheme
from router.media.reconcile import ReconcileOptions, Reconciler
from router.media.worklists import WorklistEntry

from tools import dciodvfy

pytestmark = pytest.mark.interop  # dciodvfy (Debian dicom3tools)


def findings(path: Path) -> set[str]:
    """dciodvfy's errors and warnings for the object at ``path``."""
    result = subprocess.run([dciodvfy(), str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith(("Error", "Warning"))}


class OneOrder:
    name = "test"

    def __init__(self, scheme: str, name: str = "Jansen^Anna") -> None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPCT1", scheme, "CT Thorax"
        self.entry = WorklistEntry(
            {"PatientID": "MRN500", "IssuerOfPatientID": "HOSP", "PatientName": name, "PatientBirthDate": "19750304",
             "PatientSex": "F"},
            {"AccessionNumber": "ACC500", "ReferringPhysicianName": "Huisarts^Karel",
             "RequestingPhysician": "Aanvrager^Ria", "ProcedureCodeSequence": Sequence([code])},
        )  # fmt: skip

    def by_accession(self, accession: str) -> list[WorklistEntry]:
        return [self.entry]

    def by_patient_id(self, patient_id: str, issuer: str) -> list[WorklistEntry]:
        return []

    def by_name_and_birth_date(self, name: str, birth_date: str) -> list[WorklistEntry]:
        return []


def new_findings(tmp_path: Path, original: Dataset, worklist: OneOrder, new_uids: bool = False) -> set[str]:
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    buffer = BytesIO()
    dcmwrite(buffer, original, enforce_file_format=True)
    before.write_bytes(buffer.getvalue())
    raw, _, changed = Reconciler(worklist, ReconcileOptions(new_uids=new_uids)).apply(buffer.getvalue())
    assert raw is not None and "ProcedureCodeSequence" in changed
    after.write_bytes(raw)
    return findings(after) - findings(before)


@pytest.mark.parametrize("example", ["ct", "mr"])
def test_a_reconciled_object_has_no_new_findings(example: str, tmp_path: Path) -> None:
    original = getattr(examples, example)
    assert new_findings(tmp_path, original, OneOrder(dicom_coding_scheme("SNM")), new_uids=True) == set()
    utf8 = new_findings(tmp_path, original, OneOrder(dicom_coding_scheme("LN"), name="Łukasz^Zoë"))
    assert utf8 == set(), "declared ISO_IR 192 for a name Latin-1 cannot hold"


def test_the_check_notices_an_hl7_coding_system_copied_as_it_came(tmp_path: Path) -> None:
    added = new_findings(tmp_path, examples.ct, OneOrder("SNM"))
    assert any("Coding Scheme Designator" in line and "<SNM>" in line for line in added), added


def test_a_local_code_adds_only_dciodvfys_warning_for_every_private_scheme(tmp_path: Path) -> None:
    # PS3.16 8.2 lets a site name its own scheme with a 99 prefix; dciodvfy (dicom3tools 2022) knows only the
    # designators of PS3.16 table 8-1 and warns on any other, 99-prefixed or not (checked: 99LOCAL, 99ZZZ). HL7's
    # own "L" draws the same warning, so a local code cannot be written without one.
    added = new_findings(tmp_path, examples.ct, OneOrder(dicom_coding_scheme("L")))
    assert added == {
        "Warning - Unrecognized defined term <99LOCAL> for value 1 of attribute <Coding Scheme Designator>"
    }
    assert dcmread(examples.get_path("ct")).get("ProcedureCodeSequence") is None, "the original had no code"


def test_the_demographics_coercion_adds_no_finding_and_no_requesting_physician(tmp_path: Path) -> None:
    from plugins.coerce import CoerceStage
    from router.config import parse_config
    from router.intake.envelope import Envelope, Source
    from router.intake.stage import StageContext
    from router.store.db import make_engine
    from router.store.models import Patient, WorklistItem

    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    with Session(engine) as session:
        patient = Patient(patient_id="MRN500", issuer="HOSP", name="Jansen^Anna", birth_date="19750304", sex="F")
        session.add(patient)
        session.flush()
        assert patient.id is not None
        session.add(WorklistItem(patient_fk=patient.id, accession_number="ACC500", referring_physician="Huisarts^Karel",
                                 requesting_physician="Aanvrager^Ria", procedure_code_value="RPCT1",
                                 procedure_code_scheme="SNM", procedure_code_meaning="CT Thorax"))  # fmt: skip
        session.commit()
    original = dcmread(examples.get_path("ct"))
    original.AccessionNumber = "ACC500"
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    original.save_as(before, enforce_file_format=True)
    env = Envelope.from_p10(before.read_bytes(), Source("dimse", calling_ae="CT"))
    ctx = StageContext(parse_config({}, tmp_path), engine=engine)
    assert "demographics from order ACC500" in CoerceStage().run(env, {"demographics": True}, ctx)
    after.write_bytes(env.payload())
    coerced = dcmread(after)
    assert (coerced.PatientID, str(coerced.ReferringPhysicianName)) == ("MRN500", "Huisarts^Karel")
    assert "RequestingPhysician" not in coerced
    assert findings(after) - findings(before) == set()
