"""Deterministic DICOM Part 10 corpora (Explicit VR Little Endian) for the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.uid import SecondaryCaptureImageStorage as SCImageStorage


@dataclass
class Corpus:
    name: str
    path: Path
    count: int
    nbytes: int


def _uid(*parts: object) -> UID:
    """Deterministic UID; parts[1] names the level, so no two levels can collide."""
    return generate_uid(entropy_srcs=["dicom-router-bench", *map(str, parts)])


def _dataset(sop_class: UID, study: int, series: int, kind: str) -> Dataset:
    """Patient/study/series/image-pixel skeleton of one series (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName, ds.PatientID = f"BENCH^{kind.upper()}{study}", f"BENCH-{kind}-{study}"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID = _uid(kind, "study", study)
    ds.SeriesInstanceUID = _uid(kind, "series", study, series)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = f"A{study}", str(study), ""
    ds.SeriesNumber, ds.Manufacturer = series + 1, "bench"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def _save(ds: Dataset, sop_uid: UID, number: int, pixels: bytes, path: Path) -> None:
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.InstanceNumber, ds.PixelData = number, pixels
    ds.save_as(path, enforce_file_format=True)


def make_tiny(root: Path, n: int, studies: int = 5, series_per_study: int = 4) -> Corpus:
    """n 8x8 8-bit Secondary Capture instances spread over studies x series."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    skeletons = {}
    for i in range(n):
        study, series = i % studies, (i // studies) % series_per_study
        if (study, series) not in skeletons:
            ds = _dataset(SCImageStorage, study, series, "tiny")
            ds.Modality, ds.ConversionType, ds.Rows, ds.Columns = "OT", "WSD", 8, 8
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            skeletons[study, series] = ds
        pixels = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        sop_uid = _uid("tiny", "instance", i)
        _save(skeletons[study, series], sop_uid, i + 1, pixels, root / f"sc{i:06d}.dcm")
    return _corpus("tiny", root)


def make_ct(root: Path, n: int, size: int = 512) -> Corpus:
    """n 512x512 CT slices (16 bits allocated, 12 stored, unsigned) of one study and series."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:size, :size] - size // 2
    body = np.where(yy**2 + xx**2 < (size * 0.4) ** 2, 1000, 24).astype(np.uint16)
    base = body + rng.integers(0, 64, (size, size), dtype=np.uint16)
    ds = _dataset(CTImageStorage, 0, 0, "ct")
    ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = _uid("ct", "frame-of-reference"), ""
    ds.ImageOrientationPatient, ds.PixelSpacing = [1, 0, 0, 0, 1, 0], [0.7, 0.7]
    ds.SliceThickness, ds.KVP, ds.AcquisitionNumber = 1.25, 120, 1
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    for i in range(n):
        z = -1.25 * i
        ds.ImagePositionPatient, ds.SliceLocation = [-179.2, -179.2, z], z
        pixels = np.roll(base, 3 * i, axis=1).tobytes()
        _save(ds, _uid("ct", "instance", i), i + 1, pixels, root / f"ct{i:06d}.dcm")
    return _corpus("ct", root)


def _corpus(name: str, root: Path) -> Corpus:
    files = list(root.iterdir())
    return Corpus(name, root, len(files), sum(f.stat().st_size for f in files))
