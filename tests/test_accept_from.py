"""``peers.NAME.accept_from``: a calling AE title bound to the addresses it may come from. Presented from another
one it is rejected (A-ASSOCIATE-RJ rejected-permanent, service-user, calling-AE-title-not-recognized) and announced
(``router_association_rejected``); 127.0.0.2 is the other loopback address the caller binds to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE

from plugins import access
from router.config import parse_config
from router.hooks.answers import Reject

from peers import RouterProcess, free_port, wait_for
from tls_peers import VERIFICATION, recorded, write_recorder

OTHER_LOOPBACK = "127.0.0.2"


def peers_config() -> dict[str, dict[str, Any]]:
    return {
        "CT1": {"ae_title": "CT1", "host": "127.0.0.1", "port": free_port(), "accept_from": ["127.0.0.1"]},
        "CT2": {"ae_title": "CT2", "host": "127.0.0.2", "port": free_port(), "accept_from": ["127.0.0.2/32"]},
        "CT2B": {"ae_title": "CT2", "host": "10.1.2.3", "port": 104, "accept_from": ["10.1.2.0/24"]},
        "CT3": {"ae_title": "CT3", "host": "127.0.0.1", "port": free_port()},
    }


# -- the policy itself ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("calling", "address", "refused"),
    [
        ("CT1", "127.0.0.1:40000", False),
        ("CT1", "127.0.0.2:40000", True),
        ("CT1", "::ffff:127.0.0.1:40000", False),  # an IPv4 caller on a dual-stack listener
        ("CT2", "127.0.0.2:40000", False),
        ("CT2", "10.1.2.77:40000", False),  # two peers with one AE title: either's addresses
        ("CT2", "127.0.0.1:40000", True),
        ("CT3", "192.0.2.1:40000", False),  # no accept_from: from anywhere
        ("UNKNOWN", "192.0.2.1:40000", False),  # not a peer: allowed_calling_aets decides, empty here
    ],
)
def test_policy(calling: str, address: str, refused: bool) -> None:
    config = parse_config({"peers": peers_config()}, Path.cwd())
    verdict = access.router_association_policy(calling_ae=calling, called_ae="ROUTER", address=address, config=config)
    if not refused:
        assert verdict is None
        return
    assert isinstance(verdict, Reject)
    assert (verdict.result, verdict.source, verdict.diagnostic) == (1, 1, 3)
    host = address.rpartition(":")[0]
    assert f"calling AE title {calling!r} may not come from {host}" in verdict.reason
    assert f"peers.{calling}.accept_from" in verdict.reason


# -- a running router -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("accept-from")
    plugin, events = write_recorder(workdir)
    process = RouterProcess(workdir, peers=peers_config(), plugin_modules=[str(plugin)])
    process.events = events  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def associate_from(router: RouterProcess, calling: str, source: str) -> tuple[int, int, int] | None:
    """An association calling ``calling`` from the loopback address ``source``: None when accepted (then released),
    else the A-ASSOCIATE-RJ (result, source, reason)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="ROUTER", bind_address=(source, 0))
    if assoc.is_established:
        assoc.release()
        return None
    assert assoc.is_rejected, "neither accepted nor rejected"
    rj = assoc.acceptor.primitive
    return int(rj.result), int(rj.result_source), int(rj.diagnostic)


def test_an_ae_title_from_another_address_is_rejected_and_announced(router: RouterProcess) -> None:
    assert associate_from(router, "CT1", "127.0.0.1") is None
    assert associate_from(router, "CT1", OTHER_LOOPBACK) == (1, 1, 3)
    events: Path = router.events  # type: ignore[attr-defined]
    wait_for(lambda: recorded(events, "rejected"), 10, what="router_association_rejected")
    [event] = recorded(events, "rejected")
    assert event["calling_ae"] == "CT1" and event["address"].startswith(f"{OTHER_LOOPBACK}:")
    assert event["codes"] == [1, 1, 3]
    assert "may not come from 127.0.0.2 (peers.CT1.accept_from)" in event["reason"]
    assert "calling AE title 'CT1' may not come from 127.0.0.2" in router.output()


def test_each_ae_title_from_its_own_addresses(router: RouterProcess) -> None:
    assert associate_from(router, "CT2", OTHER_LOOPBACK) is None
    assert associate_from(router, "CT2", "127.0.0.1") == (1, 1, 3)
    assert associate_from(router, "CT3", OTHER_LOOPBACK) is None
    assert associate_from(router, "CT3", "127.0.0.1") is None
