"""Datasets the router keeps that are not composite objects (MPPS messages, commitment reports) as Part 10 files:
written once like every stored object, read back byte for byte after a restart."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian


def to_part10(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """``ds`` as a Part 10 file in Explicit VR Little Endian (``ds`` itself is not changed)."""
    out = Dataset()
    for elem in ds:
        out.add(elem)
    out.file_meta = FileMetaDataset()
    out.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    out.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()


def from_part10(data: bytes) -> Dataset:
    """The dataset of a file written by ``to_part10``, without its file meta."""
    plain = Dataset()
    for elem in dcmread(BytesIO(data)):
        plain.add(elem)
    return plain
