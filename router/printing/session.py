"""One print job on one association: the Basic Grayscale Print Management Meta SOP Class as SCU (PS3.4 H).

1. Printer N-GET: Printer Status and Printer Status Info (a printer in FAILURE is tried again later);
2. Basic Film Session N-CREATE (copies, priority, medium, destination, label);
3. per film: Basic Film Box N-CREATE (format, orientation, film size, densities ...), whose answer lists the image
   boxes (Referenced Image Box Sequence); Basic Grayscale Image Box N-SET of each box, the pixels in Basic
   Grayscale Image Sequence (2020,0110); Film Box N-ACTION (print); as many films as the images need;
4. Basic Film Session N-DELETE.

Every answer is judged by ``router.statuses``: success, a warning (0xB6xx: reported with the outcome), or a
failure that ends the job (``PrintFailed``, with the standard's name for the status).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.association import Association

from router.config.printing import PrintSettings
from router.printing import film, pixels
from router.statuses import SendVerdict, classify_print_failure, is_print_warning, print_status_text

META = "1.2.840.10008.5.1.1.9"  # Basic Grayscale Print Management Meta SOP Class
FILM_SESSION = "1.2.840.10008.5.1.1.1"
FILM_BOX = "1.2.840.10008.5.1.1.2"
IMAGE_BOX = "1.2.840.10008.5.1.1.4"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"  # the well-known Printer SOP Instance
PRINT_ACTION = 1
PRINTER_STATUS, PRINTER_STATUS_INFO = 0x21100010, 0x21100020


class PrintFailed(Exception):
    """The printer refused a step (or did not answer): ``verdict`` says whether trying again may help."""

    def __init__(self, reason: str, verdict: SendVerdict, status: int | None = None) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.status = status


@dataclass
class PrintReport:
    """What a printed job did: films and images, the printer's status, its warnings, notes on the images."""

    films: int = 0
    images: int = 0
    printer: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: int = 0  # the first warning the printer answered, else success

    def text(self, printer_ae: str) -> str:
        line = f"printed {self.images} image(s) on {self.films} film(s) on {printer_ae}"
        if self.printer:
            line += f" (printer {self.printer})"
        if self.notes:
            line += "; " + ", ".join(dict.fromkeys(self.notes))
        if self.warnings:
            line += "; warnings: " + "; ".join(dict.fromkeys(self.warnings))
        return line


class PrintSession:
    """One film session over ``assoc`` (the Meta SOP Class accepted)."""

    def __init__(self, assoc: Association, settings: PrintSettings) -> None:
        self.assoc = assoc
        self.settings = settings
        self.report = PrintReport()
        self.session_uid = ""

    # -- answers --------------------------------------------------------------------------------------------------
    def _judge(self, step: str, rsp: Dataset) -> int:
        """The status of ``rsp``; warnings are kept for the report, failures raise PrintFailed."""
        if "Status" not in rsp:
            raise PrintFailed(f"{step}: no answer from the printer (association lost or timed out)", SendVerdict.RETRY)
        status = int(rsp.Status)
        comment = f" ({rsp.ErrorComment})" if "ErrorComment" in rsp else ""
        if status == 0x0000:
            return status
        if is_print_warning(status):
            self.report.status = self.report.status or status
            self.report.warnings.append(f"{step}: {print_status_text(status)}{comment}")
            return status
        raise PrintFailed(f"{step}: {print_status_text(status)}{comment}", classify_print_failure(status), status)

    # -- steps ----------------------------------------------------------------------------------------------------
    def printer_status(self) -> str:
        """Printer N-GET: ``NORMAL``, ``WARNING (info)``; a printer in FAILURE raises PrintFailed (retried)."""
        rsp, attrs = self.assoc.send_n_get([], PRINTER, PRINTER_INSTANCE, meta_uid=META)
        self._judge("Printer N-GET", rsp)
        state = str(attrs.get("PrinterStatus", "") if attrs is not None else "").strip().upper()
        info = str(attrs.get("PrinterStatusInfo", "") if attrs is not None else "").strip()
        shown = f"{state} ({info})" if info and info != state else state
        if state == "FAILURE":
            raise PrintFailed(f"printer status {shown}", SendVerdict.RETRY)
        if state == "WARNING":
            self.report.warnings.append(f"printer status {shown}")
        self.report.printer = shown
        return shown

    def create_session(self) -> None:
        s = self.settings
        ds = Dataset()
        ds.NumberOfCopies = s.copies
        ds.PrintPriority = s.priority
        _put(ds, "MediumType", s.medium)
        _put(ds, "FilmDestination", s.destination)
        _put(ds, "FilmSessionLabel", s.label)
        self.session_uid = str(generate_uid())
        rsp, _attrs = self.assoc.send_n_create(ds, FILM_SESSION, self.session_uid, meta_uid=META)
        self._judge("Film Session N-CREATE", rsp)

    def delete_session(self) -> None:
        """Film Session N-DELETE; a failure to delete is a warning (the films are printed or the job failed)."""
        if not (self.session_uid and self.assoc.is_established):
            return
        try:
            rsp = self.assoc.send_n_delete(FILM_SESSION, self.session_uid, meta_uid=META)
            self._judge("Film Session N-DELETE", rsp)
        except PrintFailed as exc:
            self.report.warnings.append(str(exc))

    def _film_box(self) -> tuple[str, list[tuple[str, str]]]:
        """Film Box N-CREATE: its UID and the (class, instance) of each image box the printer made."""
        s = self.settings
        ds = Dataset()
        ds.ImageDisplayFormat = s.format  # ST: the backslash is part of the value, not a separator
        ds.FilmOrientation = s.orientation
        ds.FilmSizeID = s.film_size
        for keyword, value in (("MagnificationType", s.magnification), ("SmoothingType", s.smoothing),
                               ("BorderDensity", s.border_density), ("EmptyImageDensity", s.empty_image_density),
                               ("MinDensity", s.min_density), ("MaxDensity", s.max_density), ("Trim", s.trim),
                               ("ConfigurationInformation", s.configuration),
                               ("RequestedResolutionID", s.resolution)):  # fmt: skip
            _put(ds, keyword, value)
        ref = Dataset()
        ref.ReferencedSOPClassUID = FILM_SESSION
        ref.ReferencedSOPInstanceUID = self.session_uid
        ds.ReferencedFilmSessionSequence = [ref]
        uid = str(generate_uid())
        rsp, attrs = self.assoc.send_n_create(ds, FILM_BOX, uid, meta_uid=META)
        self._judge("Film Box N-CREATE", rsp)
        uid = str(rsp.get("AffectedSOPInstanceUID", "") or uid)
        found = [] if attrs is None else attrs.get("ReferencedImageBoxSequence", [])
        boxes = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in found]
        if not boxes:
            raise PrintFailed("Film Box N-CREATE: the printer listed no image boxes", SendVerdict.PERMANENT)
        return uid, boxes

    def _set_image(self, box: tuple[str, str], position: int, image: pixels.Printable) -> None:
        ds = Dataset()
        ds.ImageBoxPosition = position
        _put(ds, "Polarity", self.settings.polarity)
        ds.BasicGrayscaleImageSequence = [pixels.image_item(image)]  # not Pixel Data at the top level
        rsp, _attrs = self.assoc.send_n_set(ds, box[0] or IMAGE_BOX, box[1], meta_uid=META)
        self._judge(f"Image Box {position} N-SET", rsp)

    def _print_film(self, film_uid: str) -> None:
        rsp, _reply = self.assoc.send_n_action(None, PRINT_ACTION, FILM_BOX, film_uid, meta_uid=META)
        self._judge("Film Box N-ACTION (print)", rsp)
        self.report.films += 1

    # -- the job --------------------------------------------------------------------------------------------------
    def print_images(self, objects: Iterable[Dataset]) -> PrintReport:
        """Print every frame of ``objects``, filling films in order; the session is deleted at the end."""
        layout = film.boxes(self.settings)
        self.printer_status()
        self.create_session()
        film_uid, filled = "", 0
        boxes: list[tuple[str, str]] = []
        try:
            for grey, aspect in self._frames(objects):
                if not film_uid:
                    film_uid, boxes = self._film_box()
                    filled = 0
                box = layout[filled] if filled < len(layout) else layout[-1]
                self._set_image(boxes[filled], filled + 1, pixels.prepare(grey, box, aspect, self.settings))
                self.report.images += 1
                filled += 1
                if filled == len(boxes):
                    self._print_film(film_uid)
                    film_uid = ""
            if film_uid:
                self._print_film(film_uid)
            if not self.report.images:
                raise PrintFailed("nothing to print: the job holds no image", SendVerdict.PERMANENT)
        finally:
            self.delete_session()
        return self.report

    def _frames(self, objects: Iterable[Dataset]) -> Iterator[tuple[np.ndarray, float]]:
        for ds in objects:
            try:
                frames, notes = pixels.grey_frames(ds)
            except pixels.NotPrintable as exc:
                raise PrintFailed(f"{ds.get('SOPInstanceUID', '?')}: {exc}", SendVerdict.PERMANENT) from exc
            self.report.notes += [n for n in notes if n]
            aspect = pixels.aspect_of(ds)
            for grey in frames:
                yield grey, aspect


def _put(ds: Dataset, keyword: str, value: object) -> None:
    if value is not None:
        setattr(ds, keyword, value)
