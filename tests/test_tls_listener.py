"""The TLS listener (``dicom.tls``, mutual TLS) of a running router: a client with a certificate from the hospital
CA gets in, one from another CA, without a certificate or without TLS does not, each refusal announced by
``router_tls_failed``; an idle TCP connection on the TLS port does not hold up anyone else. pynetdicom clients, and
DCMTK's ``echoscu +tls`` / ``storescu +tls`` (interop)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE

from forwarding import db_rows
from peers import DCMTK_ENV, SECONDARY_CAPTURE, RouterProcess, echo, free_port, make_instance, wait_for, write_instances
from tls_peers import Certs, Pem, associate_tls, client_context, echo_tls, make_certs, recorded, write_recorder
from tools import dcmtk

ACSE_TIMEOUT = 8  # s: longer than the bound the idle-connection test asserts, so a stall could not pass it


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_router(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[RouterProcess]:
    workdir = tmp_path_factory.mktemp("tls-router")
    plugin, events = write_recorder(workdir)
    tls = {"port": free_port(), "cert": str(certs.router.cert), "key": str(certs.router.key), "ca": str(certs.ca)}
    router = RouterProcess(
        workdir, dicom={"tls": tls, "timeouts": {"acse": ACSE_TIMEOUT}}, plugin_modules=[str(plugin)]
    ).start()
    router.tls_port = tls["port"]  # type: ignore[attr-defined]
    router.events = events  # type: ignore[attr-defined]
    try:
        yield router
    finally:
        router.stop()


def tls_port(router: RouterProcess) -> int:
    return int(router.tls_port)  # type: ignore[attr-defined]


def failures(router: RouterProcess, port: int) -> list[dict[str, Any]]:
    """What ``router_tls_failed`` announced about the client that used local ``port``."""
    return [e for e in recorded(router.events, "tls_failed") if e["port"] == port]  # type: ignore[attr-defined]


def announced(router: RouterProcess, port: int, timeout: float = 10) -> dict[str, Any]:
    wait_for(lambda: failures(router, port), timeout, what=f"router_tls_failed for the client on port {port}")
    [event] = failures(router, port)
    assert (event["direction"], event["address"]) == ("inbound", "127.0.0.1")
    return event


def associate_from(port: int, ctx: ssl.SSLContext | None) -> tuple[bool, int]:
    """An association over TLS (``ctx`` None: plain TCP) from a known local port (pynetdicom's ``bind_address``), so
    that the announcement about it can be told apart: (established, that port)."""
    local = free_port()
    ae = AE(ae_title="CT1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="ROUTER", tls_args=(ctx, "127.0.0.1") if ctx else None,
        bind_address=("127.0.0.1", local),
    )  # fmt: skip
    established = assoc.is_established
    if established:
        assoc.release()
    return established, local


# -- who gets in ------------------------------------------------------------------------------------------------
def test_a_client_certificate_from_the_hospital_ca_gets_in(tls_router: RouterProcess, certs: Certs) -> None:
    ctx = client_context(certs.ca, certs.modality)
    assert echo_tls(tls_port(tls_router), ctx) == 0
    instance = make_instance()
    assoc = associate_tls(tls_port(tls_router), ctx, contexts=[SECONDARY_CAPTURE])
    try:
        assert assoc.is_established
        assert int(assoc.send_c_store(instance).Status) == 0
    finally:
        assoc.release()
    rows = db_rows(tls_router, "select calling_ae from instance where sop_uid = ?", instance.SOPInstanceUID)
    assert rows == [{"calling_ae": "CT1"}]


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("stranger", "certificate verify failed: unable to get local issuer certificate"),
        ("no certificate", "peer did not return a certificate"),
        ("plain TCP", "wrong version number (not TLS: a plain connection?)"),
    ],
)
def test_others_are_refused_and_announced(tls_router: RouterProcess, certs: Certs, who: str, reason: str) -> None:
    ctx = {
        "stranger": client_context(certs.ca, certs.stranger),
        "no certificate": client_context(certs.ca, None),
        "plain TCP": None,
    }[who]
    established, local = associate_from(tls_port(tls_router), ctx)
    assert not established
    assert announced(tls_router, local)["reason"] == reason


def test_the_plain_listener_still_serves_beside_it(tls_router: RouterProcess) -> None:
    assert echo(tls_router.port)
    assert "DICOM TLS listener ROUTER on 0.0.0.0:" in tls_router.output()


# -- the trap: an idle connection on the TLS port -------------------------------------------------------------
def test_an_idle_connection_does_not_delay_other_associations(tls_router: RouterProcess, certs: Certs) -> None:
    ctx = client_context(certs.ca, certs.modality)
    with socket.create_connection(("127.0.0.1", tls_port(tls_router))) as idle:
        idle_port = idle.getsockname()[1]
        time.sleep(0.5)  # the scenario: the idle connection is accepted and waits for its handshake first
        started = time.monotonic()
        assert echo_tls(tls_port(tls_router), ctx) == 0
        took = time.monotonic() - started
        assert took < 5, f"a second TLS association took {took:.1f} s while a connection sat idle"
        event = announced(tls_router, idle_port, timeout=ACSE_TIMEOUT + 10)
    assert event["reason"] == f"no TLS handshake within {ACSE_TIMEOUT} s"


# -- DCMTK -----------------------------------------------------------------------------------------------------
def dcmtk_tls(tool: str, pem: Pem | None, certs: Certs, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """echoscu / storescu with ``+tls`` and ``pem`` (None: without TLS), trusting the hospital CA."""
    tls = ["+tls", str(pem.key), str(pem.cert), "-pw", "+cf", str(certs.ca)] if pem is not None else []
    return subprocess.run(
        [dcmtk(tool), "-aet", "CT1", "-aec", "ROUTER", "-to", "10", "-ta", "10", *tls, "127.0.0.1", str(port), *args],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=60,
    )  # fmt: skip


@pytest.mark.interop  # DCMTK echoscu
def test_dcmtk_echoscu_tls(tls_router: RouterProcess, certs: Certs) -> None:
    ok = dcmtk_tls("echoscu", certs.modality, certs, tls_port(tls_router))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    before = len(recorded(tls_router.events, "tls_failed"))  # type: ignore[attr-defined]
    for pem in (certs.stranger, None):
        refused = dcmtk_tls("echoscu", pem, certs, tls_port(tls_router))
        assert refused.returncode != 0 and "Association Request Failed" in refused.stderr, refused.stderr
    wait_for(lambda: len(recorded(tls_router.events, "tls_failed")) == before + 2, 10,  # type: ignore[attr-defined]
             what="both refusals announced")  # fmt: skip


@pytest.mark.interop  # DCMTK storescu
def test_dcmtk_storescu_tls_stores_even_beside_an_idle_connection(
    tls_router: RouterProcess, certs: Certs, tmp_path: Path
) -> None:
    files = write_instances(tmp_path, [make_instance() for _ in range(3)])
    with socket.create_connection(("127.0.0.1", tls_port(tls_router))):
        time.sleep(0.5)  # the scenario: an idle connection is there first
        started = time.monotonic()
        sent = dcmtk_tls("storescu", certs.modality, certs, tls_port(tls_router), "-xs", *map(str, files))
        took = time.monotonic() - started
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert took < 5, f"storescu +tls took {took:.1f} s beside an idle connection"
    uids = [p.name.removesuffix(".dcm") for p in files]
    stored = db_rows(tls_router, f"select sop_uid from instance where sop_uid in ({','.join('?' * len(uids))})", *uids)
    assert sorted(r["sop_uid"] for r in stored) == sorted(uids)
    refused = dcmtk_tls("storescu", certs.stranger, certs, tls_port(tls_router), *map(str, files))
    assert refused.returncode != 0
    plain = dcmtk_tls("storescu", None, certs, tls_port(tls_router), *map(str, files))
    assert plain.returncode != 0
