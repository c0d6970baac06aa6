"""The router's pynetdicom patches against pynetdicom's supported ways, alternated (docs/pynetdicom.md).

    python bench/pynetdicom_ab.py receive [--tiny N] [--ct N] [--pairs P]  # (a) C-STORE SCP: how the bytes arrive
    python bench/pynetdicom_ab.py subops [--ct N] [--pairs P]              # (b) C-MOVE sub-operations: files/datasets
    python bench/pynetdicom_ab.py commit [--requests N] [--pairs P]        # (c) storage commitment report latency

Each run of a variant is a fresh interpreter (so the patches are on or off for the whole run); the variants of a
pair run back to back in a rotating order, and the medians over the pairs are printed with their ratio. Everything
runs on 127.0.0.1 in a temporary folder removed at the end. Needs DCMTK (storescu, storescp) and the repo on
PYTHONPATH. The machine is shared: compare the variants of one run, not runs of different days.

Variants "patched-X" leave one patch out (X: loops, inline, recv, pdata, command; see ``setup``): what it buys;
for subops, "files:plain" or "files:patched-pdata" say which (default "patched").

receive: a pynetdicom C-STORE SCP (only what the router's listener does to get the object's bytes: ``p10(event)``
from memory, or ``event.dataset_path`` read back under ``STORE_RECV_CHUNKED_DATASET``) takes a DCMTK storescu run
of the corpus over one association; objects/s, and the SCP process's CPU per object.
  patched:   router._pynetdicom.install(), data set in memory (the router today)
  chunked:   pynetdicom's own code, STORE_RECV_CHUNKED_DATASET (the supported way)
  plain:     pynetdicom's own code, data set in memory
  patched+chunked: both
subops: the C-STORE sub-operations of a C-MOVE of the CT corpus to DCMTK storescp, over one association, patches
installed: each file sent as stored (the router's Retriever) or read into a pydicom Dataset and sent from it (what a
pynetdicom C-MOVE handler must yield).
commit: a router (in-process) answers N-ACTION requests of a pynetdicom SCU; milliseconds from the request to the
N-EVENT-REPORT, sent on the requesting association (the gate) or over a new association (commit_new_association).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
ENV = {
    **os.environ,
    "TCP_NODELAY": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
VARIANTS = {
    "receive": ["patched", "chunked", "plain", "patched+chunked"],
    "subops": ["files", "datasets"],
    "commit": ["same-association", "new-association"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk(tool: str) -> str:
    for folder in ["/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        exe = os.path.join(folder, tool)
        if (
            folder
            and os.access(exe, os.X_OK)
            and "dcmtk" in subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout.lower()
        ):
            return exe
    raise SystemExit(f"DCMTK {tool} not found")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- children: one variant, one run ------------------------------------------------------------------------------
def setup(variant: str) -> None:
    """Configure this interpreter for ``variant``: "plain" (pynetdicom's own code) or "patched" (install()), the
    latter optionally less one patch ("patched-loops", "-inline", "-recv", "-pdata", "-command"), put back to
    pynetdicom's original after install() to see what that patch alone buys."""
    from pynetdicom import _config
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.dsutils import encode
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.pdu import P_DATA_TF

    from router import _pynetdicom

    _pynetdicom.quiet_event_logging()
    if not variant.startswith("patched"):
        _config.STORE_SEND_CHUNKED_DATASET = True  # the router's documented options, without its patches
        return

    def saved(cls: Any, *names: str) -> dict[tuple[Any, str], Any]:
        return {(cls, name): getattr(cls, name) for name in names}

    originals: dict[str, dict[tuple[Any, str], Any]] = {
        "loops": saved(DULServiceProvider, "__init__", "run_reactor", "send_pdu", "kill_dul")
        | saved(Association, "_run_reactor")
        | saved(DIMSEServiceProvider, "__init__"),
        "recv": saved(DULServiceProvider, "_read_pdu_data"),
        "pdata": saved(DIMSEServiceProvider, "send_msg") | saved(P_DATA_TF, "from_primitive", "encode"),
        "command": saved(DIMSEMessage, "_set_command_group_length", "message_to_primitive"),
    }
    assert _pynetdicom.install()
    left_out = variant.split("-")[1:]
    for name in left_out:
        if name == "inline":
            from router._pynetdicom import reactor
            from router._pynetdicom.queues import WakingQueue

            def dimse_init(self: Any, assoc: Any) -> None:
                reactor._dimse_init(self, assoc)
                self.msg_queue = WakingQueue(reactor.wake_event(assoc).set)

            DIMSEServiceProvider.__init__ = dimse_init  # type: ignore[method-assign]
            continue
        for (cls, attr), value in originals[name].items():
            setattr(cls, attr, value)
        if name == "command":  # pdata's own use of the command encoders too
            from router._pynetdicom import pdata

            pdata.encode_primitive = lambda *args: None
            pdata.encode_command_set = lambda ds: encode(ds, True, True) or b""


def child_receive(variant: str, corpus: Path) -> dict[str, Any]:
    from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage
    from pynetdicom import AE, _config, evt

    from router.listeners.dimse.p10 import p10
    from router.scu.association import set_nodelay

    chunked = variant.endswith("+chunked") or variant == "chunked"
    setup(variant.removesuffix("+chunked").replace("chunked", "plain"))
    _config.STORE_RECV_CHUNKED_DATASET = chunked
    digest, count = hashlib.sha256(), [0]

    def on_store(event: evt.Event) -> int:
        raw = Path(event.dataset_path).read_bytes() if chunked else p10(event)
        digest.update(hashlib.sha256(raw).digest())
        count[0] += 1
        return 0x0000

    ae = AE(ae_title="AB")
    for sop_class in (CTImageStorage, SecondaryCaptureImageStorage):
        ae.add_supported_context(sop_class, "1.2.840.10008.1.2.1")
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, on_store)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert server is not None
    port = str(server.server_address[1])
    cmd = [dcmtk("storescu"), "-aet", "BENCH", "-aec", "AB", "--scan-directories", "--recurse", "127.0.0.1", port]
    before, started = cpu(), time.perf_counter()
    subprocess.run([*cmd, str(corpus)], env=ENV, check=True, capture_output=True, timeout=600)
    seconds, used = time.perf_counter() - started, cpu() - before
    server.shutdown()
    return {"per_s": count[0] / seconds, "cpu_ms": 1000 * used / max(count[0], 1), "n": count[0],
            "digest": digest.hexdigest()[:16]}  # fmt: skip


def child_subops(variant: str, corpus: Path) -> dict[str, Any]:
    from pydicom import dcmread
    from pydicom.uid import CTImageStorage
    from pynetdicom import AE, build_context

    files_or_datasets, _, patches = variant.partition(":")
    setup(patches or "patched")
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        scp = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "-od", out, str(port)], env=ENV)
        try:
            ae = AE(ae_title="ROUTER")
            ae.maximum_pdu_size = 0
            deadline = time.monotonic() + 10
            while True:
                assoc = ae.associate("127.0.0.1", port, [build_context(CTImageStorage, "1.2.840.10008.1.2.1")], "DEST")
                if assoc.is_established or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            files = sorted(corpus.iterdir())
            before, started = cpu(), time.perf_counter()
            statuses = [
                _send(assoc, f if files_or_datasets == "files" else dcmread(f), i + 1) for i, f in enumerate(files)
            ]
            seconds, used = time.perf_counter() - started, cpu() - before
            assoc.release()
            sent = {hashlib.sha256(_data_set(f)).digest() for f in files}
            same = sum(hashlib.sha256(_data_set(p)).digest() in sent for p in Path(out).iterdir())
        finally:
            scp.terminate()
            scp.wait(10)
    return {"per_s": len(files) / seconds, "cpu_ms": 1000 * used / len(files), "ok": statuses.count(0),
            "no_response": statuses.count(None), "byte_identical": same}  # fmt: skip


def _send(assoc: Any, what: Any, msg_id: int) -> int | None:
    """One C-STORE; the response's status, None when there was none (DIMSE timeout, then the association is gone)."""
    try:
        rsp = assoc.send_c_store(what, msg_id=msg_id)
    except RuntimeError:  # pynetdicom: the association is no longer established
        return None
    return int(rsp.Status) if "Status" in rsp else None


def _data_set(path: Path) -> bytes:
    """A Part 10 file's data set: what follows the preamble and the file meta group (its length at byte 140)."""
    data = path.read_bytes()
    (length,) = struct.unpack_from("<L", data, 140)
    return data[144 + length :]


def child_commit(variant: str, requests: int) -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt

    commitment, instance = "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1"
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    got: dict[str, float] = {}
    arrived = threading.Condition()

    def on_report(event: evt.Event) -> tuple[int, None]:
        with arrived:
            got[str(event.event_information.TransactionUID)] = time.perf_counter()
            arrived.notify_all()
        return 0x0000, None

    sink = AE(ae_title="MODALITY")
    sink.add_supported_context(commitment, syntaxes, scu_role=True, scp_role=True)
    sink_port = free_port()
    server = sink.start_server(
        ("127.0.0.1", sink_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    work = Path(tempfile.mkdtemp())
    router = _router(work, sink_port, new_association=variant == "new-association")
    router.start()
    assert server is not None and router.dicom_port is not None
    latencies = []
    try:
        scu = AE(ae_title="MODALITY")
        scu.add_requested_context(commitment, syntaxes)
        for _ in range(requests):
            action = Dataset()
            action.TransactionUID = uid = generate_uid()
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
            action.ReferencedSOPSequence = Sequence([item])
            assoc = scu.associate("127.0.0.1", router.dicom_port, ae_title="ROUTER",
                                  evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])  # fmt: skip
            started = time.perf_counter()
            assoc.send_n_action(action, 1, commitment, instance)
            with arrived:
                arrived.wait_for(lambda uid=uid: uid in got, 30)  # type: ignore[misc]
            latencies.append(1000 * (got.get(uid, float("nan")) - started))
            time.sleep(0.05)  # our answer to the report leaves before we release
            assoc.release()
    finally:
        router.stop()
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return {"ms": statistics.median(latencies), "max_ms": max(latencies), "n": len(latencies)}


def _router(work: Path, sink_port: int, new_association: bool) -> Any:
    """A router (not started) whose peer MODALITY listens on ``sink_port``; its data under ``work``."""
    from router.app import Router
    from router.config import parse_config

    (work / "rules").mkdir()
    peer = {"ae_title": "MODALITY", "host": "127.0.0.1", "port": sink_port, "commit_new_association": new_association}
    settings = {"data_dir": "var", "rules_dir": "rules", "log_level": "WARNING", "peers": {"MODALITY": peer},
                "dicom": {"host": "127.0.0.1", "port": free_port()}, "hl7": {"host": "127.0.0.1", "port": free_port()},
                "http": {"host": "127.0.0.1", "port": free_port()}}  # fmt: skip
    return Router(parse_config(settings, work))


# -- parent: pairs, medians ----------------------------------------------------------------------------------------
def run_child(mode: str, variant: str, arg: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "_child", mode, variant, arg], capture_output=True, text=True,
                          env=ENV, timeout=900)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{mode}/{variant} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(mode: str, arg: str, pairs: int, variants: list[str]) -> None:
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for pair in range(pairs):
        order = variants[pair % len(variants) :] + variants[: pair % len(variants)]
        for variant in order:
            rows[variant].append(run_child(mode, variant, arg))
        print(f"pair {pair + 1}: " + ", ".join(f"{v} {_short(rows[v][-1])}" for v in variants), flush=True)
    key = "ms" if mode == "commit" else "per_s"
    medians = {v: statistics.median(r[key] for r in rows[v]) for v in variants}
    for v in variants:
        extra = ""
        if mode != "commit":
            extra = f", cpu {statistics.median(r['cpu_ms'] for r in rows[v]):.3f} ms/object"
        print(f"{mode} {arg} {v}: median {medians[v]:.1f} {'ms' if key == 'ms' else 'objects/s'}{extra}")
    first = variants[0]
    for v in variants[1:]:
        print(f"ratio {first}/{v}: {medians[first] / medians[v]:.2f}")


def _short(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        mode, variant, arg = sys.argv[2:5]
        if mode == "commit":
            result = child_commit(variant, int(arg))
        else:
            result = (child_receive if mode == "receive" else child_subops)(variant, Path(arg))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=sorted(VARIANTS))
    parser.add_argument("--tiny", type=int, default=1000, help="receive: tiny objects (0: none)")
    parser.add_argument("--ct", type=int, default=100, help="receive, subops: CT slices (0: none)")
    parser.add_argument("--requests", type=int, default=30, help="commit: N-ACTION requests per run")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--variants", help="comma-separated subset, the first one compared with the others")
    args = parser.parse_args()
    variants = args.variants.split(",") if args.variants else VARIANTS[args.mode]
    if args.mode == "commit":
        compare("commit", str(args.requests), args.pairs, variants)
        return
    from dicom_corpus import make_ct, make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        corpora = []
        if args.mode == "receive" and args.tiny:
            corpora.append(make_tiny(Path(tmp) / "tiny", args.tiny).path)
        if args.ct:
            corpora.append(make_ct(Path(tmp) / "ct", args.ct).path)
        subprocess.run(["sync"], check=False)
        for corpus in corpora:
            compare(args.mode, str(corpus), args.pairs, variants)


if __name__ == "__main__":
    main()
