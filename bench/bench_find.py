"""C-FIND benchmark: study-level queries with a wildcard on Patient's Name, the router vs Orthanc, same data.

Usage: python bench/bench_find.py [--instances N] [--repeat R] [--skip-orthanc] [--first-response] [--timeout S]
                                  [--out results.json]

The router's index is filled directly (rows inserted into a fresh SQLite database before ``router serve`` starts:
C-FIND reads only the index). Orthanc gets the same patients, studies, series and instances as real (pixel-less
Secondary Capture) objects over C-STORE, since it has no other way in. Both are then asked the same queries with
DCMTK findscu (a native client, as a viewer would be), ``--repeat`` times after one warm-up; the median wall time of
a findscu run (process start, association, query, every response, release) is printed with the number of matches
(which must agree), the median echoscu run beside it (the part of that time that is not the query), and the
router/Orthanc ratio (below 1: the router answers faster). With ``--first-response`` a pynetdicom client also
times the first and the last response of study-level queries by name prefix, date range, accession number and a
leading wildcard (``find_first.py``). Everything runs on 127.0.0.1 on free ports, in a temporary folder removed at
the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_store import (  # type: ignore[import-not-found]
    ENV,
    PROCS,
    REPO_ROOT,
    StartError,
    dcmtk,
    echo_ok,
    free_port,
    http_get,
    orthanc_exe,
    start_process,
    start_router,
    stop,
    version,
)
from find_first import FirstTiming, measure_first, print_first  # type: ignore[import-not-found]
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

sys.path.insert(0, str(REPO_ROOT))

SURNAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
]  # fmt: skip
GIVEN = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth"]
QUERIES = ["SMITH*", "*SON*"]  # a literal prefix (index), and a pattern no index can help with
STUDIES_PER_PATIENT, SERIES_PER_STUDY, INSTANCES_PER_SERIES = 2, 5, 5
MODALITIES = ["CT", "MR", "CR", "US", "SR"]


@dataclass(frozen=True)
class Row:
    """One instance and its patient/study/series, deterministic from its number."""

    patient: int
    study: int
    series: int
    instance: int

    @property
    def name(self) -> str:
        return f"{SURNAMES[self.patient % len(SURNAMES)]}^{GIVEN[(self.patient // len(SURNAMES)) % len(GIVEN)]}"

    def uid(self, level: str, n: int) -> str:
        return generate_uid(entropy_srcs=["bench-find", level, str(n)])


def rows(instances: int) -> Iterator[Row]:
    per_patient = STUDIES_PER_PATIENT * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    for i in range(instances):
        series = i // INSTANCES_PER_SERIES
        study = series // SERIES_PER_STUDY
        yield Row(i // per_patient, study, series, i)


# ---------------------------------------------------------------- the router: rows straight into its index
def fill_router_index(data_dir: Path, instances: int) -> float:
    """Create the router's SQLite index under data_dir and insert the rows; returns seconds taken."""
    from sqlalchemy import insert

    from router.query.matching import normalize_name
    from router.store.db import make_engine
    from router.store.index import INSTANCE, PATIENT, SERIES, STUDY

    started = time.monotonic()
    engine = make_engine(f"sqlite:///{data_dir / 'router.db'}")
    patients, studies, series, images = [], [], [], []
    for r in rows(instances):
        if r.instance % (STUDIES_PER_PATIENT * SERIES_PER_STUDY * INSTANCES_PER_SERIES) == 0:
            patients.append({"id": r.patient + 1, "patient_id": f"BP{r.patient:06d}", "issuer": "", "name": r.name,
                             "name_norm": normalize_name(r.name), "birth_date": "19700101", "sex": "O"})  # fmt: skip
        if r.instance % (SERIES_PER_STUDY * INSTANCES_PER_SERIES) == 0:
            studies.append({"id": r.study + 1, "study_uid": r.uid("study", r.study), "patient_fk": r.patient + 1,
                            "study_date": f"2024{1 + r.study % 12:02d}{1 + r.study % 28:02d}", "study_time": "120000",
                            "accession_number": f"A{r.study}", "study_id": str(r.study), "description": "BENCH",
                            "referring_physician": "", "referring_physician_norm": ""})  # fmt: skip
        if r.instance % INSTANCES_PER_SERIES == 0:
            series.append({"id": r.series + 1, "series_uid": r.uid("series", r.series), "study_fk": r.study + 1,
                           "modality": MODALITIES[r.series % SERIES_PER_STUDY], "series_number": str(r.series % 5 + 1),
                           "description": "", "body_part": "", "pps_start_date": "", "pps_start_time": ""})  # fmt: skip
        images.append({"sop_uid": r.uid("image", r.instance), "sop_class_uid": str(SecondaryCaptureImageStorage),
                       "series_fk": r.series + 1, "instance_number": str(r.instance % 5 + 1),
                       "transfer_syntax": str(ExplicitVRLittleEndian), "path": f"objects/{r.instance}.dcm",
                       "size": 0, "sha256": "", "calling_ae": "BENCH"})  # fmt: skip
    with engine.begin() as conn:
        for table, values in ((PATIENT, patients), (STUDY, studies), (SERIES, series), (INSTANCE, images)):
            for start in range(0, len(values), 5000):
                conn.execute(insert(table), values[start : start + 5000])
    engine.dispose()
    return time.monotonic() - started


# ---------------------------------------------------------------- Orthanc: the same objects over C-STORE
def write_files(folder: Path, instances: int) -> None:
    folder.mkdir(parents=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientBirthDate, ds.PatientSex, ds.StudyTime, ds.StudyDescription = "19700101", "O", "120000", "BENCH"
    for r in rows(instances):
        ds.PatientName, ds.PatientID = r.name, f"BP{r.patient:06d}"
        ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = r.uid("study", r.study), str(r.study), f"A{r.study}"
        ds.StudyDate = f"2024{1 + r.study % 12:02d}{1 + r.study % 28:02d}"
        ds.SeriesInstanceUID, ds.Modality = r.uid("series", r.series), MODALITIES[r.series % SERIES_PER_STUDY]
        ds.SeriesNumber, ds.InstanceNumber = r.series % 5 + 1, r.instance % 5 + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = r.uid("image", r.instance)
        ds.save_as(folder / f"{r.instance:07d}.dcm", enforce_file_format=True)


def start_orthanc(workdir: Path, dicom_port: int) -> subprocess.Popen[bytes]:
    exe = orthanc_exe()
    if exe is None:
        raise StartError("Orthanc executable not found")
    http_port = free_port()
    config = {
        "Name": "bench-find", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "StorageDirectory": str(workdir / "storage"), "IndexDirectory": str(workdir / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomModalities": {"bench": ["BENCHSCU", "127.0.0.1", free_port()]},  # allowed to C-FIND
    }  # fmt: skip
    (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))

    def ready() -> bool:
        return http_get(http_port, "/system") is not None and echo_ok("ORTHANC", dicom_port)

    proc: subprocess.Popen[bytes] = start_process("orthanc", [exe, str(workdir / "orthanc.json")], ready, workdir)
    return proc


def load_orthanc(port: int, folder: Path, timeout: float) -> float:
    started = time.monotonic()
    cmd = [dcmtk("storescu"), "-aec", "ORTHANC", "+sd", "127.0.0.1", str(port), str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if done.returncode != 0:
        raise StartError(f"storescu to Orthanc failed: {done.stderr.strip()[-300:]}")
    return time.monotonic() - started


# ---------------------------------------------------------------- measuring
@dataclass
class Timing:
    target: str
    query: str
    matches: int
    median_ms: float
    min_ms: float
    runs: int


RETURN_KEYS = ("PatientID", "StudyDate", "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=ENV, timeout=120)
    return (time.perf_counter() - started) * 1000, done.stdout + done.stderr


def measure(target: str, aet: str, port: int, name: str, repeat: int, deadline: float) -> Timing:
    """Median wall time of a DCMTK findscu run (process start, association, query, all responses, release)."""
    keys = [a for k in ("QueryRetrieveLevel=STUDY", f"PatientName={name}", *RETURN_KEYS) for a in ("-k", k)]
    cmd = [dcmtk("findscu"), "-v", "-S", "-aet", "BENCHSCU", "-aec", aet, *keys, "127.0.0.1", str(port)]
    times, matches = [], -1
    for run in range(repeat + 1):  # the first run warms caches and is not counted
        elapsed, log = timed(cmd)
        if "Received Final Find Response (Success)" not in log:
            raise StartError(f"{target}: C-FIND failed: {log.strip()[-300:]}")
        matches = log.count("(Pending)")
        if run:
            times.append(elapsed)
        if time.monotonic() > deadline:
            break
    return Timing(target, name, matches, statistics.median(times), min(times), len(times))


def baseline(aet: str, port: int, repeat: int) -> float:
    """Median wall time of an echoscu run: what every findscu run costs besides the query."""
    cmd = [dcmtk("echoscu"), "-aet", "BENCHSCU", "-aec", aet, "127.0.0.1", str(port)]
    return statistics.median(timed(cmd)[0] for _ in range(repeat))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=100_000, help="instances in the index (default 100000)")
    ap.add_argument("--repeat", type=int, default=15, help="timed queries per target and query (default 15)")
    ap.add_argument("--skip-orthanc", action="store_true", help="the router only")
    ap.add_argument("--first-response", action="store_true", help="also time first/last responses (pynetdicom)")
    ap.add_argument("--timeout", type=float, default=900, help="upper bound for loading Orthanc, seconds")
    ap.add_argument("--out", help="also write the results as JSON")
    args = ap.parse_args()
    if not 50 <= args.instances <= 1_000_000 or not 1 <= args.repeat <= 200:
        ap.error("--instances must be within 50..1000000 and --repeat within 1..200")
    orthanc = None if args.skip_orthanc else orthanc_exe()
    print(f"DCMTK {version([dcmtk('storescu'), '--version'])}; Orthanc "
          f"{version([orthanc, '--version']) if orthanc else 'not used'}; {args.instances} instances")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-find-"))
    results: list[Timing] = []
    firsts: list[FirstTiming] = []
    studies = max(1, args.instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES))
    echo_ms: dict[str, float] = {}
    try:
        router_dir = work / "router"
        (router_dir / "var").mkdir(parents=True)
        print(f"router: index filled in {fill_router_index(router_dir / 'var', args.instances):.1f} s", flush=True)
        port = free_port()
        proc = start_router(router_dir, port)
        try:
            deadline = time.monotonic() + 300
            results += [measure("router", "ROUTER", port, q, args.repeat, deadline) for q in QUERIES]
            echo_ms["router"] = baseline("ROUTER", port, args.repeat)
            if args.first_response:
                firsts += measure_first("router", "ROUTER", port, studies, args.repeat, time.monotonic() + 300)
        finally:
            stop(proc)
        if orthanc:
            orthanc_dir = work / "orthanc"
            orthanc_dir.mkdir()
            write_files(orthanc_dir / "files", args.instances)
            port = free_port()
            proc = start_orthanc(orthanc_dir, port)
            try:
                seconds = load_orthanc(port, orthanc_dir / "files", args.timeout)
                print(f"orthanc: loaded over C-STORE in {seconds:.1f} s", flush=True)
                shutil.rmtree(orthanc_dir / "files")
                deadline = time.monotonic() + 300
                results += [measure("orthanc", "ORTHANC", port, q, args.repeat, deadline) for q in QUERIES]
                echo_ms["orthanc"] = baseline("ORTHANC", port, args.repeat)
                if args.first_response:
                    firsts += measure_first("orthanc", "ORTHANC", port, studies, args.repeat, time.monotonic() + 300)
            finally:
                stop(proc)
    except (StartError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for leftover in list(PROCS):
            stop(leftover)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'target':<8} {'PatientName':<12} {'matches':>8} {'median ms':>10} {'min ms':>8} {'runs':>5}")
    for t in results:
        print(f"{t.target:<8} {t.query:<12} {t.matches:>8} {t.median_ms:>10.1f} {t.min_ms:>8.1f} {t.runs:>5}")
    for target, ms in echo_ms.items():
        print(f"{target:<8} {'(C-ECHO)':<12} {'':>8} {ms:>10.1f}   echoscu: process start, association, release")
    ratios = {}
    for q in QUERIES:
        r = next((t for t in results if t.target == "router" and t.query == q), None)
        o = next((t for t in results if t.target == "orthanc" and t.query == q), None)
        if r and o:
            ratios[q] = r.median_ms / o.median_ms
            agree = "same matches" if r.matches == o.matches else f"MATCHES DIFFER ({r.matches} vs {o.matches})"
            print(f"router/orthanc median time, {q}: {ratios[q]:.2f} ({agree})")
    if firsts:
        print_first(firsts)
    if args.out:
        Path(args.out).write_text(json.dumps({"instances": args.instances, "ratios": ratios, "echo_ms": echo_ms,
                                              "results": [t.__dict__ for t in results],
                                              "first_response": [t.__dict__ for t in firsts]}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
