"""TLS to peers with ``tls``: everything the router opens goes over TLS (C-STORE forward byte-identical, MPPS
N-CREATE, C-MOVE sub-associations, ``router echo``), and a handshake that fails (a certificate from another CA, a
subject that is not the pinned one, our certificate refused) is a retried job whose error says why, announced as
``router_tls_failed`` (outbound). Peers: pynetdicom over TLS (TLS 1.3, with session tickets), DCMTK ``storescp +tls``
(interop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE

from forwarding import generated, jobs, send_ok, sop_uid, wait_while_up
from peers import DCMTK_ENV, Process, RouterProcess, dataset_bytes, free_port, wait_for
from tls_peers import MPPS, Certs, TlsPeer, make_certs, recorded, server_context, subject_of, write_recorder
from tools import dcmtk

STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def trusted(certs: Certs, **more: Any) -> dict[str, Any]:
    """A peer's ``tls``: the hospital CA, and the router's certificate for peers that ask for one."""
    return {"ca": str(certs.ca), "cert": str(certs.router.cert), "key": str(certs.router.key), **more}


@pytest.fixture(scope="module")
def peers(certs: Certs) -> Iterator[dict[str, TlsPeer]]:
    """PACS: all is well. FOREIGN: its certificate comes from another CA. PINNED: pinned to a subject its certificate
    does not have. NOCERT: asks for a client certificate the router is not given."""
    made = {
        "PACS": TlsPeer("PACS", server_context(certs.ca, certs.pacs)),
        "FOREIGN": TlsPeer("FOREIGN", server_context(certs.ca, certs.stranger)),
        "PINNED": TlsPeer("PINNED", server_context(certs.ca, certs.pacs)),
        "NOCERT": TlsPeer("NOCERT", server_context(certs.ca, certs.pacs)),
    }
    with made["PACS"].serving(), made["FOREIGN"].serving(), made["PINNED"].serving(), made["NOCERT"].serving():
        yield made


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs, peers: dict[str, TlsPeer]
) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("tls-out")
    plugin, events = write_recorder(workdir)
    config = {
        "PACS": peers["PACS"].peer(trusted(certs, subject=subject_of(certs.pacs))),
        "FOREIGN": peers["FOREIGN"].peer(trusted(certs)),
        "PINNED": peers["PINNED"].peer(trusted(certs, subject="CN=PACS, O=General Hospital")),  # its OU is missing
        "NOCERT": peers["NOCERT"].peer({"ca": str(certs.ca)}),
    }
    rules = {"10-out.yaml": [
        {"name": "images", "when": {"kind": "dicom"}, "then": [{"forward": name} for name in config]},
        {"name": "steps", "when": {"kind": "mpps"}, "then": [{"forward": "PACS"}]},
    ]}  # fmt: skip
    process = RouterProcess(workdir, peers=config, rules=rules, plugin_modules=[str(plugin)])
    process.events = events  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def outbound_failures(router: RouterProcess, port: int) -> list[dict[str, Any]]:
    events = recorded(router.events, "tls_failed")  # type: ignore[attr-defined]
    return [e for e in events if e["direction"] == "outbound" and e["port"] == port]


# -- C-STORE forward ------------------------------------------------------------------------------------------------
def test_forwards_over_tls_and_failed_handshakes_are_retried_and_announced(
    router: RouterProcess, peers: dict[str, TlsPeer], tmp_path: Path
) -> None:
    files = generated(tmp_path, 3)
    uids = send_ok(router.port, files)
    pacs = peers["PACS"]
    wait_while_up(router, lambda: set(uids) <= set(pacs.stored), 30, "the objects at PACS over TLS")
    for uid, path in zip(uids, files, strict=True):
        assert pacs.stored[uid] == dataset_bytes(path), "forwarded byte-identical"
    expected = {
        "FOREIGN": "certificate verify failed: unable to get local issuer certificate",
        "PINNED": "is not the pinned CN=PACS, O=General Hospital",  # certificate subject CN=PACS, O=..., OU=...
        "NOCERT": "alert certificate required",
    }
    # NOCERT (TLS 1.3) refuses our certificate after our side of the handshake is done: its alert comes with the
    # first read, or is lost when its close resets the connection first (then that attempt's error says only that
    # the connection closed). The attempts after it say why again: wait for one.
    for name, reason in expected.items():
        port = peers[name].port
        wait_while_up(router, lambda p=port, r=reason: any(r in e["reason"] for e in outbound_failures(router, p)),
                      30, f"{name}'s failure announced")  # fmt: skip
        event = next(e for e in outbound_failures(router, port) if reason in e["reason"])
        assert event["address"] == "127.0.0.1", event
        wait_while_up(router, lambda n=name, r=reason: says_why(jobs_to(router, n), r), 30,
                      f"every job to {name} failed with the reason")  # fmt: skip
        assert not peers[name].stored


def jobs_to(router: RouterProcess, peer: str) -> list[str | None]:
    return [j["last_error"] for j in jobs(router) if j["peer"] == peer]


def says_why(errors: list[str | None], reason: str) -> bool:
    """At least the three objects' jobs, each failed with a TLS handshake failure that gives ``reason``."""
    return len(errors) >= 3 and all(e is not None and "TLS handshake failed: " in e and reason in e for e in errors)


# -- DIMSE-N ------------------------------------------------------------------------------------------------------
def step(study_uid: str) -> Dataset:
    """An MPPS N-CREATE attribute list (IN PROGRESS)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = "TLS1"
    item.RequestedProcedureID = item.ScheduledProcedureStepID = "TLS1"
    item.RequestedProcedureDescription = item.ScheduledProcedureStepDescription = ""
    item.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "TLSPID", "", ""
    ds.ReferencedPatientSequence = ds.ProcedureCodeSequence = ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle, ds.PerformedStationName, ds.PerformedLocation = "MODALITY", "", ""
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20250101", "120000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ds.PerformedProcedureTypeDescription = ""
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = ""
    ds.Modality, ds.StudyID = "CT", "1"
    return ds


def test_mpps_goes_over_tls(router: RouterProcess, peers: dict[str, TlsPeer]) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="ROUTER")
    assert assoc.is_established
    uid = generate_uid()
    try:
        status, _ = assoc.send_n_create(step(generate_uid()), MPPS, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    wait_while_up(router, lambda: uid in peers["PACS"].created, 30, "the N-CREATE at PACS over TLS")


# -- C-MOVE sub-associations and the commands ----------------------------------------------------------------------
def test_c_move_sub_associations_go_over_tls(router: RouterProcess, peers: dict[str, TlsPeer], tmp_path: Path) -> None:
    files = generated(tmp_path, 2)
    uids = send_ok(router.port, files)
    pacs = peers["PACS"]
    wait_while_up(router, lambda: set(uids) <= set(pacs.stored), 30, "the forwards first")
    for uid in uids:
        del pacs.stored[uid]
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(STUDY_MOVE)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_move(identifier, "PACS", STUDY_MOVE) if "Status" in s]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    assert set(uids) <= set(pacs.stored)


def test_router_echo_over_tls(router: RouterProcess, peers: dict[str, TlsPeer]) -> None:
    ok = router.cli("echo", "PACS")
    assert "C-ECHO status 0x0000" in ok.stdout
    refused = router.cli("echo", "FOREIGN", check=False)
    assert refused.returncode != 0
    assert "TLS handshake failed: certificate verify failed" in refused.stdout + refused.stderr


# -- DCMTK storescp +tls ---------------------------------------------------------------------------------------------
@pytest.mark.interop  # DCMTK storescp
def test_forward_over_tls_to_dcmtk_storescp_byte_identical(tmp_path: Path, certs: Certs) -> None:
    port = free_port()
    folder = tmp_path / "storescp"
    folder.mkdir()
    storescp = Process(
        [dcmtk("storescp"), "-aet", "DEST", "-od", str(folder), "+uf", "--accept-all",
         "+tls", str(certs.modality.key), str(certs.modality.cert), "-pw", "+cf", str(certs.ca), str(port)],
        tmp_path / "storescp.log", env=DCMTK_ENV,
    ).start()  # fmt: skip
    dest = {"ae_title": "DEST", "host": "127.0.0.1", "port": port, "tls": trusted(certs)}
    rules = {"10-all.yaml": [{"name": "all", "when": {"kind": "dicom"}, "then": [{"forward": "DEST"}]}]}
    router = RouterProcess(tmp_path / "router", peers={"DEST": dest}, rules=rules)
    try:
        wait_for(lambda: storescp_answers(router, storescp), 15, what="storescp +tls listening")
        router.start()
        files = generated(tmp_path / "in", 5)
        uids = send_ok(router.port, files)
        wait_while_up(router, lambda: len(list(folder.iterdir())) >= len(uids), 60, "5 objects at storescp")
        received = {sop_uid(p): p for p in folder.iterdir()}
        assert sorted(received) == sorted(uids) and len(list(folder.iterdir())) == len(uids), "each once"
        for uid, path in zip(uids, files, strict=True):
            assert dataset_bytes(received[uid]) == dataset_bytes(path), f"{uid} changed on the way"
        wait_while_up(router, lambda: all(j["state"] == "done" for j in jobs(router)), 10, "the jobs done")
    finally:
        router.stop()
        storescp.stop()


def storescp_answers(router: RouterProcess, storescp: Process) -> bool:
    """``router echo DEST`` (a command of its own, the router need not serve) succeeds over TLS."""
    assert storescp.alive(), storescp.output()
    return router.cli("echo", "DEST", check=False).returncode == 0
