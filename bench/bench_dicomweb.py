"""DICOMweb throughput benchmark: STOW-RS upload and WADO-RS retrieve, the router vs Orthanc, on 127.0.0.1.

Usage: python bench/bench_dicomweb.py [--small N] [--large N] [--batch K] [--wado-passes P] [--repeat R] [--out FILE]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from subprocess import Popen

import httpx
import numpy as np
from bench_store import (  # bench/bench_store.py: the same process handling
    ENV,
    PROCS,
    REPO_ROOT,
    StartError,
    free_port,
    http_get,
    orthanc_exe,
    start_process,
    stop,
    version,
)
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.uid import SecondaryCaptureImageStorage as SCImageStorage

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SMALL_STUDIES = 5  # the small instances are spread over this many studies (one series each)
LARGE_PER_STUDY = 30  # at most this many large instances in one study (one series)
TARGETS = ("router", "orthanc")
LIMITS = {"small": (0, 20_000), "large": (0, 1_000), "batch": (1, 200), "repeat": (1, 9), "wado_passes": (1, 50)}


@dataclass
class Corpus:
    name: str
    instances: list[bytes]  # Part 10 files
    studies: dict[str, list[int]]  # Study Instance UID -> indexes into instances
    sop_uids: list[str]

    @property
    def nbytes(self) -> int:
        return sum(map(len, self.instances))


@dataclass
class Result:
    op: str  # "stow" or "wado"
    corpus: str
    target: str
    repeat: int
    instances: int
    nbytes: int = 0  # DICOM bytes sent (stow) or received in the parts (wado)
    seconds: float | None = None
    requests: int = 0
    check: str = ""
    error: str | None = None


@dataclass
class Server:
    name: str
    proc: Popen
    stow_url: str  # POST here
    studies_url: str  # GET {studies_url}/{study}
    info: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- corpus


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["dicom-router-bench-dicomweb", *map(str, parts)])


def _p10(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _skeleton(sop_class: UID, kind: str, study: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName, ds.PatientID = f"BENCH^{kind.upper()}{study}", f"BENCH-{kind}-{study}"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(kind, "study", study), _uid(kind, "series", study)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = f"W{study}", str(study), ""
    ds.SeriesNumber, ds.Manufacturer = 1, "bench"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def make_corpus(kind: str, n: int, studies: int) -> Corpus:
    """n instances, round robin over `studies` studies. small: Secondary Capture 64x64 8-bit (about 4.6 KB);
    large: CT 512x512, 16 bits allocated / 12 stored (about 525 KB). Explicit VR Little Endian, deterministic."""
    rng = np.random.default_rng(3 if kind == "small" else 4)
    small = kind == "small"
    size, dtype, bits_stored = (64, np.uint8, 8) if small else (512, np.uint16, 12)
    base = rng.integers(0, 2**bits_stored, (size, size), dtype=dtype)
    skeletons = []
    for s in range(studies):
        ds = _skeleton(SCImageStorage if small else CTImageStorage, kind, s)
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8 * dtype().itemsize, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 0
        if small:
            ds.Modality, ds.ConversionType = "OT", "WSD"
        else:
            ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = _uid(kind, "for", s), ""
            ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [0.7, 0.7], 1.25
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        skeletons.append(ds)
    corpus = Corpus(kind, [], {str(ds.StudyInstanceUID): [] for ds in skeletons}, [])
    for i in range(n):
        ds = skeletons[i % studies]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(kind, "instance", i)
        ds.InstanceNumber = i // studies + 1
        if kind == "large":
            ds.ImagePositionPatient = [-179.2, -179.2, -1.25 * ds.InstanceNumber]
        ds.PixelData = np.roll(base, 3 * i, axis=1).tobytes()
        corpus.studies[str(ds.StudyInstanceUID)].append(i)
        corpus.instances.append(_p10(ds))
        corpus.sop_uids.append(str(ds.SOPInstanceUID))
    return corpus


def multipart_body(parts: list[bytes], boundary: str) -> bytes:
    out = bytearray()
    for payload in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += payload
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a multipart/related response. Raises ValueError when it is not one."""
    m = re.search(r'boundary="?([^";,\s]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or m is None:
        raise ValueError(f"not multipart/related with a boundary: {content_type[:100]!r}")
    pieces = (b"\r\n" + body).split(b"\r\n--" + m.group(1).encode("latin-1"))
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise ValueError("no closing boundary")
    out = []
    for piece in pieces[1:-1]:
        head_end = piece.find(b"\r\n\r\n")
        if head_end < 0:
            raise ValueError("a part has no end of headers")
        out.append(piece[head_end + 4 :])
    return out


# ---------------------------------------------------------------- servers


def answers(port: int, path: str) -> Callable[[], bool]:
    """Readiness: GET path returns JSON."""
    return lambda: http_get(port, path) is not None


def start_router(workdir: Path) -> Server:
    """`python -m router serve` with its built-in (durable) defaults; only ports, folders and hosts are set."""
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    loop = "host: 127.0.0.1"
    config = workdir / "router.yaml"
    config.write_text(
        "ae_title: ROUTER\ndata_dir: var\nrules_dir: rules\npeers: {}\n"
        f"dicom: {{port: {free_port()}, {loop}}}\nhl7: {{port: {free_port()}, {loop}}}\n"
        f"http: {{port: {http_port}, {loop}}}\n"
    )
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "router", "serve", "--config", str(config)]
    base = f"http://127.0.0.1:{http_port}/dicomweb"
    proc = start_process(
        "router", cmd, answers(http_port, "/dicomweb/openapi.json"), workdir, {**ENV, "PYTHONPATH": pythonpath}
    )
    return Server("router", proc, f"{base}/studies", f"{base}/studies")


def start_orthanc(workdir: Path) -> Server:
    """Orthanc with its DICOMweb plugin and otherwise default settings (SQLite index, files fsynced)."""
    exe = orthanc_exe()
    if exe is None:
        raise StartError("Orthanc executable not found")
    if not Path(DICOMWEB_PLUGIN).exists():
        raise StartError(f"{DICOMWEB_PLUGIN} not found (Debian package orthanc-dicomweb)")
    http_port = free_port()
    config = {
        "Name": "bench",
        "DicomAet": "ORTHANC",
        "DicomPort": free_port(),
        "HttpPort": http_port,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))
    url = f"http://127.0.0.1:{http_port}"
    proc = start_process("orthanc", [exe, str(workdir / "orthanc.json")], answers(http_port, "/system"), workdir)
    plugin = http_get(http_port, "/plugins/dicom-web") or {}
    server = Server("orthanc", proc, f"{url}/dicom-web/studies", f"{url}/dicom-web/studies")
    server.info["DICOMweb plugin"] = str(plugin.get("Version", "?"))
    return server


STARTERS: dict[str, Callable[[Path], Server]] = {"router": start_router, "orthanc": start_orthanc}


# ---------------------------------------------------------------- measurements


def stow(client: httpx.Client, server: Server, corpus: Corpus, batch: int, repeat: int) -> Result:
    """POST the corpus in requests of `batch` instances, one after the other; every answer must be 200
    with one ReferencedSOPSequence item per instance and no FailedSOPSequence."""
    res = Result("stow", corpus.name, server.name, repeat, len(corpus.instances), corpus.nbytes)
    boundary = uuid.uuid4().hex
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    bodies = [
        (multipart_body(corpus.instances[i : i + batch], boundary), min(batch, len(corpus.instances) - i))
        for i in range(0, len(corpus.instances), batch)
    ]
    problems: list[str] = []
    t0 = time.perf_counter()
    for body, count in bodies:
        resp = client.post(server.stow_url, content=body, headers=headers)
        res.requests += 1
        if resp.status_code != 200:
            problems.append(f"request {res.requests}: HTTP {resp.status_code} {resp.text[:200]!r}")
            continue
        answer = resp.json()
        stored = len(answer.get("00081199", {}).get("Value", []))
        failed = len(answer.get("00081198", {}).get("Value", []))
        if stored != count or failed:
            problems.append(f"request {res.requests}: {stored}/{count} referenced, {failed} failed")
    res.seconds = time.perf_counter() - t0
    if problems:
        res.error = f"{len(problems)} bad answer(s), first: {problems[0]}"
    else:
        res.check = "ok"
    return res


def check_study(corpus: Corpus, study: str, resp: httpx.Response) -> tuple[int, bool]:
    """(bytes in the parts, whether they are the bytes sent) of one study's answer, which must be 200 with
    one Part 10 part per instance sent, of the SOP Instance UIDs sent. Raises ValueError otherwise."""
    if resp.status_code != 200:
        raise ValueError(f"HTTP {resp.status_code} {resp.text[:200]!r}")
    got = split_multipart(resp.content, resp.headers.get("content-type", ""))
    want = corpus.studies[study]
    if len(got) != len(want):
        raise ValueError(f"{len(got)} parts, expected {len(want)}")
    try:
        uids = sorted(str(dcmread(BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in got)
    except Exception as exc:
        raise ValueError(f"a part is not a DICOM file ({exc!r})") from exc
    if uids != sorted(corpus.sop_uids[i] for i in want):
        raise ValueError("not the SOP Instance UIDs sent")
    sent = sorted(hashlib.sha256(corpus.instances[i]).digest() for i in want)
    return sum(map(len, got)), sorted(hashlib.sha256(p).digest() for p in got) == sent


def wado(client: httpx.Client, server: Server, corpus: Corpus, passes: int, repeat: int) -> Result:
    """GET each study as multipart/related application/dicom (transfer-syntax=*), one after the other, `passes`
    times over. The clock runs during the requests only; each answer is then checked (check_study). The router
    must also answer byte-identical parts: it stores what it receives."""
    res = Result("wado", corpus.name, server.name, repeat, passes * len(corpus.instances), seconds=0.0)
    problems: list[str] = []
    identical = 0
    for _ in range(passes):
        for study in corpus.studies:
            t0 = time.perf_counter()
            resp = client.get(f"{server.studies_url}/{study}", headers={"Accept": ACCEPT})
            res.seconds = (res.seconds or 0.0) + time.perf_counter() - t0
            res.requests += 1
            try:
                nbytes, same = check_study(corpus, study, resp)
            except ValueError as exc:
                problems.append(f"study {study}: {exc}")
                continue
            res.nbytes += nbytes
            identical += same
    if problems:
        res.error = f"{len(problems)} bad answer(s), first: {problems[0]}"
    elif server.name == "router" and identical != res.requests:
        res.error = f"{res.requests - identical} answer(s) not byte-identical to what was sent"
    else:
        res.check = "ok, as sent" if identical == res.requests else "ok"
    return res


def run_once(target: str, corpora: list[Corpus], args: argparse.Namespace, root: Path, repeat: int) -> list[Result]:
    """Start target fresh, STOW every corpus, then WADO-RS it back; stop target. Empty store each time."""
    workdir = root / f"{target}-{repeat}"
    workdir.mkdir()
    results: list[Result] = []
    server: Server | None = None
    steps = [("stow", c) for c in corpora] + [("wado", c) for c in corpora]
    op, corpus = steps[0]
    try:
        server = STARTERS[target](workdir)
        if repeat == 1 and server.info:
            print("\n".join(f"{k}: {v}" for k, v in server.info.items()))
        with httpx.Client(timeout=args.timeout) as client:
            for op, corpus in steps:
                if op == "stow":
                    results.append(stow(client, server, corpus, args.batch, repeat))
                else:
                    results.append(wado(client, server, corpus, args.wado_passes, repeat))
    except (StartError, httpx.HTTPError, OSError, ValueError) as exc:  # this step fails, the rest is not run
        err = f"{type(exc).__name__}: {exc}"
        results.append(Result(op, corpus.name, target, repeat, len(corpus.instances), error=err))
    finally:
        if server is not None:
            stop(server.proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


# ---------------------------------------------------------------- report


@dataclass
class Summary:
    op: str
    corpus: str
    target: str
    instances: int
    runs: int
    seconds: float | None  # median
    inst_s: float | None
    mb_s: float | None
    spread: str  # min-max inst/s of the runs
    check: str


def summarize(results: list[Result]) -> list[Summary]:
    out = []
    keys = dict.fromkeys((r.op, r.corpus, r.target) for r in results)
    for op, corpus, target in keys:
        rows = [r for r in results if (r.op, r.corpus, r.target) == (op, corpus, target)]
        ok = [r for r in rows if r.error is None and r.seconds]
        bad = [r for r in rows if r.error is not None]
        check = f"{len(bad)} failed: {bad[0].error}" if bad else rows[0].check
        if not ok:
            out.append(Summary(op, corpus, target, rows[0].instances, 0, None, None, None, "-", check))
            continue
        med = statistics.median(r.seconds or 0 for r in ok)
        rates = [r.instances / (r.seconds or 1) for r in ok]
        nbytes = statistics.median(r.nbytes for r in ok)
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        out.append(
            Summary(
                op,
                corpus,
                target,
                ok[0].instances,
                len(ok),
                med,
                ok[0].instances / med,
                nbytes / 1e6 / med,
                spread,
                check,
            )
        )
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(summary: list[Summary]) -> None:
    print(
        f"\n{'op':<6}{'corpus':<7}{'target':<9}{'instances':>10}{'runs':>5}{'median s':>10}{'inst/s':>9}"
        f"{'MB/s':>9}{'inst/s min-max':>16}  check"
    )
    for s in summary:
        print(
            f"{s.op:<6}{s.corpus:<7}{s.target:<9}{s.instances:>10}{s.runs:>5}{fmt(s.seconds):>10}"
            f"{fmt(s.inst_s, '.1f'):>9}{fmt(s.mb_s, '.1f'):>9}{s.spread:>16}  {s.check}"
        )


def ratios(summary: list[Summary]) -> dict[str, float | None]:
    rate = {(s.op, s.corpus, s.target): s.inst_s for s in summary}
    out: dict[str, float | None] = {}
    for op, corpus in dict.fromkeys((s.op, s.corpus) for s in summary):
        a, b = rate.get((op, corpus, "router")), rate.get((op, corpus, "orthanc"))
        out[f"{op} {corpus} router/orthanc"] = a / b if a and b else None
    return out


def bounded(name: str) -> Callable[[str], int]:
    lo, hi = LIMITS[name]

    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo} and {hi}")
        return value

    return parse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=bounded("small"), default=1000, help="64x64 SC instances (default 1000)")
    ap.add_argument("--large", type=bounded("large"), default=100, help="512x512 CT instances (default 100)")
    ap.add_argument("--batch", type=bounded("batch"), default=10, help="instances per STOW request (default 10)")
    ap.add_argument(
        "--wado-passes",
        type=bounded("wado_passes"),
        default=5,
        help="retrieve every study this many times per run (default 5)",
    )
    ap.add_argument("--repeat", type=bounded("repeat"), default=3, help="runs per target; median (default 3)")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=170,
        help="start no further repeat if one as slow as the slowest so far would end past this (default 170)",
    )
    ap.add_argument("--timeout", type=float, default=120, help="per HTTP request bound in s (default 120)")
    ap.add_argument("--skip-orthanc", action="store_true", help="do not benchmark Orthanc")
    ap.add_argument("--out", type=Path, help="write results to this JSON file")
    args = ap.parse_args()
    if args.small + args.large == 0:
        ap.error("nothing to send: --small and --large are both 0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    started = time.perf_counter()
    targets = [t for t in TARGETS if not (args.skip_orthanc and t == "orthanc")]
    orthanc = orthanc_exe()
    versions = {"Orthanc": version([orthanc, "--version"]) if orthanc else "not found"}
    versions |= {"httpx": httpx.__version__, "Python": sys.version.split()[0]}
    print("\n".join(f"{k}: {v}" for k, v in versions.items()))
    t0 = time.perf_counter()
    small = make_corpus("small", args.small, min(SMALL_STUDIES, max(args.small, 1)))
    large = make_corpus("large", args.large, max(1, -(-args.large // LARGE_PER_STUDY)))
    corpora = [c for c in (small, large) if c.instances]
    for c in corpora:
        print(f"corpus {c.name}: {len(c.instances)} instances in {len(c.studies)} studies, {c.nbytes / 1e6:.1f} MB")
    print(f"corpora generated in {time.perf_counter() - t0:.1f} s; {args.batch} instances per STOW request")
    tmp = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    results: list[Result] = []
    try:
        slowest = 0.0
        for repeat in range(1, args.repeat + 1):
            elapsed = time.perf_counter() - started
            if repeat > 1 and elapsed + slowest > args.max_seconds:
                print(f"--max-seconds {args.max_seconds:.0f}: stopped after {repeat - 1} run(s) of each target")
                break
            t_rep = time.perf_counter()
            order = targets if repeat % 2 else targets[::-1]  # alternate who goes first
            for target in order:
                for r in run_once(target, corpora, args, tmp, repeat):
                    results.append(r)
                    print(f"run {repeat} {target:<8}{r.op} {r.corpus:<6}{fmt(r.seconds):>7} s  {r.error or r.check}")
            slowest = max(slowest, time.perf_counter() - t_rep)
        summary = summarize(results)
        print_table(summary)
        rat = ratios(summary)
        print("\nratios of median inst/s (above 1: the router is faster):")
        for key, val in rat.items():
            print(f"  {key:<30}{fmt(val)}")
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        if args.out:
            doc = {
                "versions": versions,
                "args": {k: str(v) for k, v in vars(args).items()},
                "ratios": rat,
                "summary": [asdict(s) for s in summary],
                "results": [asdict(r) for r in results],
            }
            args.out.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"results written to {args.out}")
        return 0 if results and all(r.error is None for r in results) else 1
    finally:
        while PROCS:
            stop(PROCS[-1])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
