"""SIGKILL the router while four MLLP connections send (group commit, issue 21): every message answered AA has its
patient, its forward job with its message file and its log row on disk; after a restart the acknowledged ones are
acknowledged again, not applied twice, and the rest are applied once."""

from __future__ import annotations

import threading
from pathlib import Path

from router.hl7.ack import ack_code_of
from router.hl7.mllp import MllpClient, MllpError

from hl7msg import adt, encode
from peers import RouterProcess, free_port, query, wait_for

SENDERS, PER_SENDER = 4, 150  # bounded: 600 messages at most


def messages(sender: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(PER_SENDER):
        control = f"K{sender}-{i:04d}"
        pid = {3: f"KP{sender}{i:04d}^^^HOSP^MR", 5: f"Kill^Nine{i}", 7: "19700101", 8: "F"}
        out.append((control, encode(adt("A01", pid, control_id=control))))
    return out


def send_until_gone(port: int, batch: list[tuple[str, bytes]], acked: list[str], lock: threading.Lock) -> None:
    with MllpClient("127.0.0.1", port, timeout=20) as client:
        for control, raw in batch:
            try:
                code = ack_code_of(client.send(raw))[0]
            except MllpError:
                return  # the router is gone: this message was not acknowledged
            assert code == "AA", f"{control}: {code}"
            with lock:
                acked.append(control)


def test_sigkill_under_four_connections_loses_no_acknowledged_message(workdir: Path) -> None:
    rule = {"name": "adt", "when": {"kind": "hl7", "message": "ADT^*"}, "then": [{"forward": "RIS"}]}
    # nobody listens at RIS: the jobs stay in the outbox
    router = RouterProcess(workdir, peers={"RIS": {"mllp": f"127.0.0.1:{free_port()}"}}, rules={"20-hl7.yaml": [rule]})
    db = router.data_dir / "router.db"
    batches = [messages(s) for s in range(SENDERS)]
    acked: list[str] = []
    lock = threading.Lock()
    router.start()
    try:
        threads = [threading.Thread(target=send_until_gone, args=(router.hl7_port, b, acked, lock)) for b in batches]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 200 or not any(t.is_alive() for t in threads), 120, what="200 AA")
        router.kill9()
        for t in threads:
            t.join(30)
        assert 200 <= len(acked) < SENDERS * PER_SENDER, f"the kill should land mid-load ({len(acked)} AA)"

        # before any restart: every acknowledged message's rows and its job's file are on disk
        logged = {r[0] for r in query(db, "SELECT control_id FROM hl7log")}
        assert set(acked) <= logged, f"acknowledged but not logged: {sorted(set(acked) - logged)[:5]}"
        patients = {r[0] for r in query(db, "SELECT patient_id FROM patient")}
        assert {f"KP{c[1]}{c.split('-')[1]}" for c in acked} <= patients
        jobs = query(db, "SELECT path FROM job WHERE kind='hl7' AND peer='RIS'")
        in_files = {(router.data_dir / path).read_bytes().split(b"|")[9].decode() for (path,) in jobs}
        assert set(acked) <= in_files and len(jobs) == len(logged)

        router.start()  # the same data: every message again, acknowledged or not
        for batch in batches:
            send_until_gone(router.hl7_port, batch, [], lock)
        rows = query(db, "SELECT control_id, count(*) FROM hl7log GROUP BY control_id")
        assert len(rows) == SENDERS * PER_SENDER and {n for _c, n in rows} == {1}
        assert query(db, "SELECT count(*) FROM job WHERE kind='hl7'") == [(SENDERS * PER_SENDER,)]
        assert query(db, "SELECT count(*) FROM patient WHERE patient_id LIKE 'KP%'") == [(SENDERS * PER_SENDER,)]
    finally:
        router.stop()
