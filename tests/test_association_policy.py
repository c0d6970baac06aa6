"""Association policy of the DICOM listener (PS3.8 9.3.4), seen from a real remote caller.

Who gets in (calling / called AE), how many at once, what maximum PDU the router offers, which storage classes
it accepts beyond the standard list, and when it closes an idle association.

"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.association import Association

from peers import DCMTK_ENV, RouterProcess, associate, context_of, make_instance, query, wait_for
from tools import dcmtk

VERIFICATION = "1.2.840.10008.1.1"
ALLOWED = "CT1"


def rejection(assoc: Association) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ."""
    assert assoc.is_rejected, "the association was not rejected"
    rj = assoc.acceptor.primitive
    return rj.result, rj.result_source, rj.diagnostic


# -- routers under test --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    router = RouterProcess(
        tmp_path_factory.mktemp("policy"), dicom={"allowed_calling_aets": [ALLOWED], "max_associations": 2}
    ).start()
    try:
        yield router
    finally:
        router.stop()


def echoscu(port: int, calling: str, called: str = "ROUTER") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-to", "5", "-ta", "5", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=30,
    )


# -- who gets in ---------------------------------------------------------------------------------------------
def test_unknown_calling_ae_rejected_permanent_by_service_user(policy_router: RouterProcess) -> None:
    refused = associate(policy_router.port, calling="OTHER")
    assert rejection(refused) == (1, 1, 3)  # rejected-permanent, service-user, calling-AE-title-not-recognized

    allowed = associate(policy_router.port, calling=ALLOWED)
    try:
        assert allowed.is_established
        assert allowed.send_c_echo().Status == 0x0000
    finally:
        allowed.release()


def test_wrong_called_ae_rejected_permanent_by_service_user(policy_router: RouterProcess) -> None:
    refused = associate(policy_router.port, calling=ALLOWED, called="NOTROUTER")
    assert rejection(refused) == (1, 1, 7)  # rejected-permanent, service-user, called-AE-title-not-recognized


@pytest.mark.interop  # DCMTK echoscu
@pytest.mark.parametrize(
    "calling, called, reason",
    [("OTHER", "ROUTER", "Calling AE Title Not Recognized"), (ALLOWED, "NOTROUTER", "Called AE Title Not Recognized")],
    ids=["unknown calling AE", "wrong called AE"],
)
def test_dcmtk_echoscu_is_told_why_it_was_rejected(
    policy_router: RouterProcess, calling: str, called: str, reason: str
) -> None:
    """The same rejections (above), as DCMTK's echoscu reads them; the allowed AE gets in."""
    ok = echoscu(policy_router.port, ALLOWED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused_dcmtk = echoscu(policy_router.port, calling, called=called)
    assert refused_dcmtk.returncode != 0
    assert reason in refused_dcmtk.stderr, refused_dcmtk.stderr


# -- how many at once, how large -----------------------------------------------------------------------------
def _established(port: int, timeout: float = 5) -> Association:
    """An association from the allowed AE, retried for a bounded time (a released association no longer counts
    against the limit, see test_a_released_association_frees_its_place_at_once; the retry only bounds the wait)."""
    opened: list[Association] = []

    def attempt() -> bool:
        assoc = associate(port, calling=ALLOWED)
        if assoc.is_established:
            opened.append(assoc)
        return assoc.is_established

    wait_for(attempt, timeout, interval=0.05, what="an association to be accepted")
    return opened[0]


def test_association_limit_rejected_transient_then_recovers(policy_router: RouterProcess) -> None:
    held = [_established(policy_router.port) for _ in range(2)]
    try:
        third = associate(policy_router.port, calling=ALLOWED)
        # rejected-transient, service-provider (presentation), local-limit-exceeded
        assert rejection(third) == (2, 3, 2)

        held.pop(0).release()
        again = _established(policy_router.port)
        assert again.send_c_echo().Status == 0x0000
        again.release()
        assert all(a.is_established for a in held), "the limit must not disturb the associations already open"
    finally:
        for assoc in held:
            assoc.release()


def test_a_released_association_frees_its_place_at_once(policy_router: RouterProcess) -> None:
    """At the limit, an association released and the next opened at once (a modality sending study after study)
    is never refused: the released one no longer counts while its thread winds down."""
    held = _established(policy_router.port)
    try:
        for _ in range(20):
            assoc = associate(policy_router.port, calling=ALLOWED)
            assert assoc.is_established, rejection(assoc) if assoc.is_rejected else "not established"
            assoc.release()
    finally:
        held.release()


def test_accept_advertises_maximum_pdu_of_at_least_64k(policy_router: RouterProcess) -> None:
    assoc = _established(policy_router.port)  # the previous test's associations may be counted for a moment
    try:
        assert assoc.is_established
        assert assoc.acceptor.maximum_length >= 65536
    finally:
        assoc.release()


# -- which storage classes -----------------------------------------------------------------------------------
STORAGE_BEYOND_STANDARD_LIST = {
    "1.2.840.113619.4.27": "GE private 3D model, named in the conformance statement",
    "1.3.46.670589.5.0.1": "Philips private volume, named in the conformance statement",
    "1.2.826.0.1.3680043.9.9999.1.1": "a private class nobody told us about",
    "1.2.840.10008.5.1.4.1.1.999": "a standard storage class newer than our SOP class list",
}
NOT_STORAGE = "1.2.840.10008.9.9.9"  # unknown, under the DICOM root, not under the storage branch


def test_private_and_future_storage_classes_accepted_and_indexed(policy_router: RouterProcess) -> None:
    datasets = [make_instance(sop_class=uid) for uid in STORAGE_BEYOND_STANDARD_LIST]
    contexts = [*map(context_of, datasets), (NOT_STORAGE, None)]
    assoc = associate(policy_router.port, contexts, calling=ALLOWED)
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        assert accepted == set(STORAGE_BEYOND_STANDARD_LIST)
        assert rejected == {NOT_STORAGE}
        statuses = {str(ds.SOPClassUID): assoc.send_c_store(ds).Status for ds in datasets}
    finally:
        assoc.release()
    assert statuses == dict.fromkeys(STORAGE_BEYOND_STANDARD_LIST, 0x0000)

    db = policy_router.data_dir / "router.db"
    indexed = dict(query(db, "select sop_uid, sop_class_uid from instance"))
    for ds in datasets:
        assert indexed.get(str(ds.SOPInstanceUID)) == str(ds.SOPClassUID)


# -- when an idle association is closed ----------------------------------------------------------------------
@pytest.fixture
def short_timeout_router(workdir: Path) -> Iterator[RouterProcess]:
    router = RouterProcess(workdir, dicom={"timeouts": {"network": 1}}).start()
    try:
        yield router
    finally:
        router.stop()


def test_idle_association_closed_after_network_timeout(short_timeout_router: RouterProcess) -> None:
    idle = associate(short_timeout_router.port)
    busy = associate(short_timeout_router.port)
    try:
        assert idle.is_established and busy.is_established
        opened = time.monotonic()
        # the busy one talks every 0.3 s: the timeout is about silence, not about how long an association lasts
        deadline = opened + 5
        while idle.is_established and time.monotonic() < deadline:
            assert busy.send_c_echo().Status == 0x0000
            time.sleep(0.3)  # the scenario, not a synchronisation: the busy association's pace
        closed_after = time.monotonic() - opened
        assert not idle.is_established, "idle association still open after 5 s with a 1 s network timeout"
        assert idle.is_aborted or idle.is_released
        assert closed_after >= 0.8, f"closed after {closed_after:.2f} s, before the network timeout"
        assert busy.is_established, "an association in use must not be closed by the idle timeout"
    finally:
        for assoc in (idle, busy):
            if assoc.is_established:
                assoc.release()
