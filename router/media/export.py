"""``router export``: stored studies as a PS3.10 file-set with a DICOMDIR (General Purpose profile, PS3.11 and PS3.12:
file IDs of up to 8 upper-case characters per component, ``PT000000/ST000000/SE000000/IM000000``), in a folder or
a .zip, optionally with a short README.

The DICOMDIR is written by pydicom's ``FileSet``. Each object's file on the medium is then the stored file, byte
for byte (``FileSet`` re-encodes what it is given; a file-set carries objects as they are): importing the medium into
another router stores identical objects. A directory record needs some Type 1 values an object may lack (Study ID,
Study Time, Series Number, Instance Number...): as DCMTK's ``dcmmkdir +I`` does, a value is then invented for the
record only, and counted in the result.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from sqlalchemy import Connection, select

from router import storage
from router.hooks.answers import InstanceRef
from router.store.tables import INSTANCE, PATIENT, SERIES, STUDY

FILE_SET_ID = "ROUTER"
INVENTED = {  # what a record needs and an object may lack: invented for the DICOMDIR record, as dcmmkdir +I does
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "Modality": "OT",
    "SeriesNumber": "1",
    "InstanceNumber": "1",
}
README = """This medium holds a DICOM file-set (PS3.10, General Purpose profile).

DICOMDIR     the directory of the file-set: open it with a DICOM viewer
PT000000/... the DICOM objects, one file each (no extension, as PS3.10 requires)

Written by the router's `router export`: {studies} study(ies), {instances} object(s).
There is no viewer on this medium.
"""


class ExportError(Exception):
    """Nothing to export, or the destination cannot be written."""


@dataclass
class Stored:
    ref: InstanceRef
    path: Path


@dataclass
class ExportResult:
    out: Path
    instances: list[InstanceRef] = field(default_factory=list)
    studies: int = 0
    invented: int = 0  # record values invented for objects that lack them
    size: int = 0


def stored_instances(conn: Connection, data_dir: Path, studies: list[str], patient_id: str = "") -> list[Stored]:
    """The stored instances of ``studies`` (Study Instance UIDs), of the patient ``patient_id`` when given."""
    query = (
        select(INSTANCE.c.sop_uid, INSTANCE.c.sop_class_uid, INSTANCE.c.path, STUDY.c.study_uid)
        .select_from(
            INSTANCE.join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
            .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
            .join(PATIENT, PATIENT.c.id == STUDY.c.patient_fk)
        )
        .where(STUDY.c.study_uid.in_(studies))
        .order_by(STUDY.c.study_uid, SERIES.c.id, INSTANCE.c.id)
    )
    if patient_id:
        query = query.where(PATIENT.c.patient_id == patient_id)
    return [
        Stored(InstanceRef(row.study_uid, row.sop_class_uid, row.sop_uid), storage.at(data_dir).local_path(row.path))
        for row in conn.execute(query)
    ]


def write_file_set(stored: list[Stored], out: Path, readme: bool = True) -> ExportResult:
    """Write ``stored`` as a file-set at ``out`` (a folder, made or empty; or a path ending in .zip)."""
    if not stored:
        raise ExportError("no stored instance matches: nothing to export")
    as_zip = out.suffix.lower() == ".zip"
    if out.exists() and (as_zip or not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists: give a new .zip or an empty folder")
    result = ExportResult(out, studies=len({s.ref.study_uid for s in stored}))
    with tempfile.TemporaryDirectory(prefix="router-export-") as tmp:
        folder = Path(tmp) / "fileset" if as_zip else out
        folder.mkdir(parents=True, exist_ok=True)
        _write(stored, folder, result)
        if readme:
            (folder / "README.TXT").write_text(README.format(studies=result.studies,
                                                             instances=len(result.instances)))  # fmt: skip
        if as_zip:
            _zip(folder, out)
    return result


def _write(stored: list[Stored], folder: Path, result: ExportResult) -> None:
    fs = FileSet()
    fs.ID = FILE_SET_ID
    by_uid: dict[str, Stored] = {}
    for item in stored:
        header = dcmread(item.path, stop_before_pixels=True)  # the record's values; the file is copied whole
        result.invented += _fill(header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom on staging a header without pixel data
            fs.add(header)
        by_uid[item.ref.sop_instance_uid] = item
    fs.write(folder)
    for instance in fs:
        item = by_uid[str(instance.SOPInstanceUID)]
        shutil.copyfile(item.path, folder / instance.FileID)  # the stored bytes, not pydicom's re-encoding
        result.instances.append(item.ref)
        result.size += item.path.stat().st_size


def _fill(header: Dataset) -> int:
    invented = 0
    for keyword, value in INVENTED.items():
        if keyword not in header or header[keyword].VM == 0:
            setattr(header, keyword, value)
            invented += 1
    return invented


def _zip(folder: Path, out: Path) -> None:
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    partial.replace(out)
