"""The router's resident memory, and the multi-frame object the memory tests send (tests/test_stow_memory.py,
tests/test_cstore_memory.py)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture Image Storage
FRAME = 512 * 512 * 2
FRAMES = 400  # 400 frames of 512 KiB: 200 MiB of pixel data


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    fields = (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(value.split()[0]) * 1024 for key, _, value in fields if key in ("VmRSS", "VmHWM")}


def write_frames(path: Path, frames: int = FRAMES, patient_id: str = "MEM1") -> tuple[str, str]:
    """A multi-frame object of ``frames`` 512 KiB frames, written a frame at a time (never held whole); its Study and
    SOP Instance UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MF_WORD_SC
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = patient_id, "OT", 1, "MONOCHROME2"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, 512, 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    head = BytesIO()
    ds.save_as(head, enforce_file_format=True)
    with path.open("wb") as f:
        f.write(head.getvalue())
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * FRAME).to_bytes(4, "little"))  # (7FE0,0010) OW
        for n in range(frames):
            f.write(bytes([(n * 7) % 256]) * FRAME)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
