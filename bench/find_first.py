"""Time to the first C-FIND response, and to the last, from a pynetdicom client (bench_find.py --first-response).

findscu cannot show when the first pending response arrived, so a pynetdicom SCU keeps one association open and
sends each query ``repeat`` times (after one warm-up): ``send_c_find`` yields each response as it is read off the
socket, and the time from sending the request to the first pending response (the first match an SCU could show)
and to the final one is taken with ``time.perf_counter``. The client decodes every response, so "last" includes
pynetdicom's own per-response work on this side; "first" is the server's time to its first answer plus one decode.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

RETURN_KEYS = ("PatientID", "StudyDate", "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


@dataclass
class FirstTiming:
    target: str
    query: str
    matches: int
    first_ms: float  # median time to the first pending response
    last_ms: float  # median time to the final response
    first_max_ms: float
    runs: int


def queries(studies: int) -> dict[str, dict[str, str]]:
    """Study-level queries by name prefix, date range, accession number and a leading wildcard."""
    return {
        "PatientName=SMITH*": {"PatientName": "SMITH*"},
        "StudyDate=20240101-20240110": {"StudyDate": "20240101-20240110"},
        f"AccessionNumber=A{studies // 2}": {"AccessionNumber": f"A{studies // 2}"},
        "PatientName=*SON*": {"PatientName": "*SON*"},
    }


def identifier(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("PatientName", "AccessionNumber", *RETURN_KEYS):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _one(assoc: object, ds: Dataset) -> tuple[float, float, int]:
    started = time.perf_counter()
    first, matches, final = 0.0, 0, None
    for status, _identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):  # type: ignore[attr-defined]
        if not status:
            raise RuntimeError("C-FIND: no response (association aborted or timed out)")
        if status.Status in (0xFF00, 0xFF01):
            if not matches:
                first = time.perf_counter() - started
            matches += 1
        else:
            final = status.Status
    if final != 0x0000:
        raise RuntimeError(f"C-FIND ended with status 0x{final or 0:04X}")
    last = time.perf_counter() - started
    return (first or last) * 1000, last * 1000, matches


def measure_first(target: str, aet: str, port: int, studies: int, repeat: int, deadline: float) -> list[FirstTiming]:
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise RuntimeError(f"{target}: association refused or failed")
    # the request goes out as two PDUs: without TCP_NODELAY the second waits for a delayed ACK (40 ms)
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    out = []
    try:
        for label, keys in queries(studies).items():
            ds = identifier(keys)
            firsts, lasts, matches = [], [], 0
            for run in range(repeat + 1):  # the first run warms caches and is not counted
                first, last, matches = _one(assoc, ds)
                if run:
                    firsts.append(first)
                    lasts.append(last)
                if time.monotonic() > deadline:
                    break
            out.append(FirstTiming(target, label, matches, statistics.median(firsts), statistics.median(lasts),
                                   max(firsts), len(firsts)))  # fmt: skip
    finally:
        assoc.release()
    return out


def print_first(results: list[FirstTiming]) -> None:
    print(f"\n{'target':<8} {'query (pynetdicom SCU, one association)':<40} {'matches':>8} {'first ms':>9} "
          f"{'max first':>9} {'last ms':>8} {'runs':>5}")  # fmt: skip
    for t in results:
        print(f"{t.target:<8} {t.query:<40} {t.matches:>8} {t.first_ms:>9.1f} {t.first_max_ms:>9.1f} "
              f"{t.last_ms:>8.1f} {t.runs:>5}")  # fmt: skip
