"""Printing to DCMTK's print SCP ``dcmprscp`` (Basic Grayscale Print Management): the router's print stage and
``router print`` queue print jobs; dcmprscp writes every image box it receives (Hardcopy Grayscale Image) and every
printed film (Stored Print) into its database folder, which these tests read back: the size of each image (its image
box at the configured resolution) and its grey levels (window, rescale, MONOCHROME1 inverted)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from audit_repo import schema_problems
from forwarding import jobs, wait_while_up
from peers import Process, RouterProcess, echo, free_port, send_datasets, wait_for
from tools import dcmtk

pytestmark = pytest.mark.interop  # dcmprscp (DCMTK)

PRINTER_AE = "IHEFULL"  # a printer of DCMTK's dcmpstat.cfg: formats 1,1 2,2 ... (not 2,1), 12 bits
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
HARDCOPY_GRAYSCALE, STORED_PRINT = "1.2.840.10008.5.1.1.29", "1.2.840.10008.5.1.1.27"
DPI = 50  # 14INX17IN at 50 dpi: a film of 700 x 850 pixels, an image box of 2x2 350 x 425
BOX = (350, 425)


class PrintSCP(Process):
    """dcmprscp with a copy of /etc/dcmtk/dcmpstat.cfg whose spool and database are in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.database = workdir / "prscp-db"
        for folder in ("prscp-db", "prscp-spool", "prscp-log"):
            (workdir / folder).mkdir()
        text = Path("/etc/dcmtk/dcmpstat.cfg").read_text()
        text = re.sub(r"(?m)^Directory = spool$", f"Directory = {workdir / 'prscp-spool'}", text)
        text = re.sub(r"(?m)^Directory = database$", f"Directory = {self.database}", text)
        text = re.sub(r"(?m)^LogDirectory = log$", f"LogDirectory = {workdir / 'prscp-log'}", text)
        section = text.index(f"[{PRINTER_AE}]")
        port_at = text.index("Port = ", section)
        end = text.index("\n", port_at)
        text = text[:port_at] + f"Port = {self.port}" + text[end:]
        cfg = workdir / "dcmpstat.cfg"
        cfg.write_text(text)
        super().__init__([dcmtk("dcmprscp"), "-c", str(cfg), "-p", PRINTER_AE, "-v"], workdir / "dcmprscp.log")

    def start(self) -> PrintSCP:
        super().start()
        wait_for(lambda: echo(self.port, PRINTER_AE), 15, what=f"dcmprscp on {self.port}")
        return self

    def written(self, sop_class: str) -> list[Dataset]:
        found = [pydicom.dcmread(p) for p in sorted(self.database.glob("*.dcm"))]
        return [ds for ds in found if ds.SOPClassUID == sop_class]


@pytest.fixture
def printer(tmp_path: Path) -> Iterator[PrintSCP]:
    scp = PrintSCP(tmp_path).start()
    try:
        yield scp
    finally:
        scp.stop()


def _router(workdir: Path, port: int, rules: dict[str, Any] | None = None) -> RouterProcess:
    film = {"format": "STANDARD\\2,2", "film_size": "14INX17IN", "dpi": DPI, "medium": "BLUE FILM"}
    peer = {"ae_title": PRINTER_AE, "host": "127.0.0.1", "port": port, "print": film}
    return RouterProcess(workdir, peers={"PRINTER": peer}, rules=rules, forward={"max_attempts": 2},
                         plugins={"audit": {"file": "audit.xml.log"}})  # fmt: skip


def film_exports(workdir: Path) -> list[etree._Element]:
    """The Export messages (PS3.15 A.5.3.4) of the audit file whose medium is film, each checked against the schema."""
    path = workdir / "audit.xml.log"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        root = etree.fromstring(line.encode())
        media = root.find("ActiveParticipant/MediaIdentifier/MediaType")
        if root.find("EventIdentification/EventID").get("csd-code") == "110106" and media is not None:
            assert schema_problems(line) == []
            if media.get("csd-code") == "110010":
                found.append(root)
    return found


def instances_accessed(workdir: Path) -> list[etree._Element]:
    """The DICOM Instances Accessed messages (PS3.15 A.5.3.6) of the audit file, each checked against the schema."""
    path = workdir / "audit.xml.log"
    lines = path.read_text().splitlines() if path.exists() else []
    found = [(line, etree.fromstring(line.encode())) for line in lines]
    accessed = [(line, root) for line, root in found
                if root.find("EventIdentification/EventID").get("csd-code") == "110103"]  # fmt: skip
    assert all(schema_problems(line) == [] for line, _root in accessed)
    return [root for _line, root in accessed]


def banded(sop_class: str, rows: int, columns: int, bands: list[int], **attrs: Any) -> Dataset:
    """An image of four vertical bands of the raw values ``bands`` (12 bits stored)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "PRINT-1", "CT" if sop_class == CT else "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    frames = int(attrs.get("NumberOfFrames", 1))
    band = np.repeat(np.array(bands, dtype=np.uint16), columns // len(bands))
    ds.PixelData = np.tile(band, (frames * rows, 1)).tobytes()
    return ds


def ct() -> Dataset:
    """CT, HU = raw - 1024, window 40/400: bands at -1024, 0, 40 and 1024 HU."""
    return banded(CT, 256, 256, [0, 1024, 1064, 2048], RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                  WindowWidth=400)  # fmt: skip


def mr_monochrome1() -> Dataset:
    """MR, MONOCHROME1 (white is low), no window: shown over its full range 0..400, then inverted."""
    return banded(MR, 256, 192, [0, 100, 200, 400], PhotometricInterpretation="MONOCHROME1")


def linear_window(hu: float, centre: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1, onto 0..1."""
    return min(1.0, max(0.0, (hu - (centre - 0.5)) / (width - 1) + 0.5))


CT_LEVELS = [round(linear_window(hu, 40, 400) * 4095) for hu in (-1024, 0, 40, 1024)]  # 0, 1642, 2053, 4095
MR_LEVELS = [round((1 - v / 400) * 4095) for v in (0, 100, 200, 400)]  # 4095, 3071, 2048, 0


def band_levels(image: Dataset) -> list[int]:
    """The grey level at the middle of each of the four bands."""
    pixels = image.pixel_array
    middle = image.Rows // 2
    return [int(pixels[middle, int((i + 0.5) * image.Columns / 4)]) for i in range(4)]


def close(found: list[int], expected: list[int]) -> bool:
    return all(abs(a - b) <= 1 for a, b in zip(found, expected, strict=True))


def test_the_print_stage_prints_a_stored_ct_in_its_window(tmp_path: Path, printer: PrintSCP) -> None:
    rules = {"10-print.yaml": [{"name": "print-ct", "when": {"kind": "dicom"}, "then": [{"print": "PRINTER"}]}]}
    router = _router(tmp_path, printer.port, rules=rules).start()
    try:
        assert send_datasets(router.port, [ct()]) == [0]
        wait_while_up(router, lambda: [j["state"] for j in jobs(router)] == ["done"], 60, "the print job done")
    finally:
        router.stop()
    (image,) = printer.written(HARDCOPY_GRAYSCALE)
    assert (image.Columns, image.Rows) == (BOX[0], BOX[0])  # 256 x 256 into 350 x 425: as wide as the box
    assert (image.BitsStored, image.PhotometricInterpretation) == (12, "MONOCHROME2")
    assert close(band_levels(image), CT_LEVELS), band_levels(image)
    (film,) = printer.written(STORED_PRINT)
    assert film.FilmBoxContentSequence[0].ImageDisplayFormat == "STANDARD\\2,2"
    assert film.FilmBoxContentSequence[0].FilmSizeID == "14INX17IN"


def _files(folder: Path, datasets: list[Dataset]) -> list[str]:
    folder.mkdir()
    paths = []
    for number, ds in enumerate(datasets):
        path = folder / f"{number:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


def test_router_print_fills_two_2x2_films_and_waits(tmp_path: Path, printer: PrintSCP) -> None:
    two_frames = banded(MR, 256, 192, [0, 100, 200, 400], NumberOfFrames=2, PhotometricInterpretation="MONOCHROME1")
    files = _files(tmp_path / "in", [ct(), mr_monochrome1(), two_frames, ct()])  # 5 images: a film and a bit
    router = _router(tmp_path, printer.port).start()
    try:
        done = router.cli("print", "PRINTER", *files, "--timeout", "90", check=False)
    finally:
        router.stop()
    assert done.returncode == 0, done.stderr
    assert "printed: job" in done.stdout
    images = printer.written(HARDCOPY_GRAYSCALE)
    assert len(images) == 5 and len(printer.written(STORED_PRINT)) == 2
    [export] = film_exports(tmp_path)  # audited as an export to film, naming the patient
    objects = export.findall("ParticipantObjectIdentification")
    patient = [o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "1"]
    assert [o.get("ParticipantObjectID") for o in patient] == ["PRINT-1"]
    assert export.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    [accessed] = instances_accessed(tmp_path)  # and as ISUDM 2.1 audits a print: the patient's instances were read
    assert accessed.find("EventIdentification").get("EventActionCode") == "R"
    read = accessed.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in read if o.get("ParticipantObjectTypeCodeRole") == "1"] == ["PRINT-1"]
    by_size: dict[tuple[int, int], list[Dataset]] = {}
    for image in images:
        by_size.setdefault((image.Columns, image.Rows), []).append(image)
    mr_size = (round(192 * BOX[1] / 256), BOX[1])  # 192 x 256 into 350 x 425: as high as the box
    assert sorted(map(len, by_size.values())) == [2, 3] and set(by_size) == {(BOX[0], BOX[0]), mr_size}
    assert all(close(band_levels(i), CT_LEVELS) for i in by_size[(BOX[0], BOX[0])])
    assert all(close(band_levels(i), MR_LEVELS) for i in by_size[mr_size]), [band_levels(i) for i in by_size[mr_size]]


def test_router_print_no_wait_returns_at_once_and_the_job_is_sent(tmp_path: Path, printer: PrintSCP) -> None:
    files = _files(tmp_path / "in", [ct()])
    router = _router(tmp_path, printer.port).start()
    try:
        queued = router.cli("print", PRINTER_AE, *files, "--copies", "2", "--no-wait")  # by its AE title
        assert re.match(r"queued print job \d+: 1 object\(s\) for PRINTER", queued.stdout), queued.stdout
        wait_while_up(router, lambda: [j["state"] for j in jobs(router)] == ["done"], 60, "the print job done")
    finally:
        router.stop()
    assert len(printer.written(HARDCOPY_GRAYSCALE)) == 1
    assert not list((router.data_dir / "print").glob("*.zip")), "a printed job's bundle is removed"


def test_a_printer_refusing_the_format_makes_a_dead_job_with_the_status_text(tmp_path: Path, printer: PrintSCP) -> None:
    files = _files(tmp_path / "in", [ct()])
    router = _router(tmp_path, printer.port).start()
    try:
        failed = router.cli("print", "PRINTER", *files, "--format", "STANDARD\\2,1", "--timeout", "60", check=False)
    finally:
        router.stop()
    assert failed.returncode == 1
    assert "Film Box N-CREATE: 0x0106 invalid attribute value" in failed.stderr, failed.stderr
    (job,) = jobs(router)
    assert (job["state"], job["last_status"]) == ("dead", 0x0106)
    assert printer.written(HARDCOPY_GRAYSCALE) == []


def test_a_printer_that_is_down_fails_then_dead_letters(tmp_path: Path) -> None:
    files = _files(tmp_path / "in", [ct()])
    down = free_port()  # nothing listens there (dcmprscp takes any called AE title: a wrong one is not refused)
    router = _router(tmp_path, down).start()
    try:
        failed = router.cli("print", "PRINTER", *files, "--timeout", "60", check=False)
    finally:
        router.stop()
    assert failed.returncode == 1
    assert f"dead after 2 attempt(s): association to {PRINTER_AE}@127.0.0.1:{down}" in failed.stderr, failed.stderr
    assert [j["state"] for j in jobs(router)] == ["dead"]


def test_router_print_refuses_what_it_cannot_print(tmp_path: Path, printer: PrintSCP) -> None:
    no_image = tmp_path / "sr.dcm"
    ds = ct()
    del ds.PixelData
    ds.save_as(no_image, enforce_file_format=True)
    router = _router(tmp_path, printer.port)  # not started: nothing is queued
    assert router.cli("print", "NOPE", str(no_image), check=False).returncode == 2
    refused = router.cli("print", "PRINTER", str(no_image), check=False)
    assert refused.returncode == 2 and "no image (no Pixel Data)" in refused.stderr
    bad_format = router.cli("print", "PRINTER", str(no_image), "--format", "STANDARD\x012", check=False)
    assert bad_format.returncode == 2 and "control character" in bad_format.stderr


def _series(count: int) -> list[Dataset]:
    """A CT series of ``count`` images, each one grey level (raw 400 * n, window 0..4095), numbered 1..count but
    created in a shuffled order."""
    study, series_uid = generate_uid(), generate_uid()
    images = []
    for number in (3, 1, 5, 2, 4, 6)[:count]:
        ds = banded(CT, 64, 64, [400 * number] * 4, WindowCenter=2048, WindowWidth=4096, InstanceNumber=number)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        images.append(ds)
    return images


def test_group_series_prints_a_series_from_two_associations_on_one_film_session(
    tmp_path: Path, printer: PrintSCP
) -> None:
    rule = {"print": {"to": "PRINTER", "group": "series", "settle_seconds": 5}}
    rules = {"10-print.yaml": [{"name": "print-series", "when": {"kind": "dicom"}, "then": [rule]}]}
    images = _series(5)
    router = _router(tmp_path, printer.port, rules=rules).start()
    try:
        assert send_datasets(router.port, images[:3]) == [0] * 3
        assert send_datasets(router.port, images[3:]) == [0] * 2  # a second association, within the settle time
        wait_while_up(router, lambda: [j["state"] for j in jobs(router)] == ["done"] * 5, 60, "the print jobs done")
    finally:
        router.stop()
    films = printer.written(STORED_PRINT)
    # dcmprscp gives each film session a Study Instance UID of its own (DVPSPrintSCP::filmSessionNCreate), which
    # its Stored Print objects (one per film) carry
    assert len(films) == 2 and len({film.StudyInstanceUID for film in films}) == 1
    hardcopies = {image.SOPInstanceUID: image for image in printer.written(HARDCOPY_GRAYSCALE)}
    on_films = []
    for film in films:
        boxes = sorted(film.ImageBoxContentSequence, key=lambda b: int(b.ImageBoxPosition))
        grey = [
            hardcopies[box.ReferencedImageSequence[0].ReferencedSOPInstanceUID].pixel_array[32, 32] for box in boxes
        ]
        on_films.append([round(int(level) / 400) for level in grey])
    assert sorted(on_films) == [[1, 2, 3, 4], [5]], on_films  # by Instance Number, not by arrival
