"""DICOM TLS settings and contexts, in-process: the keys and their errors, paths relative to the config file, the
protocol versions and suites both sides allow, the bounded server handshake, pinned subjects."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router import tls
from router.config import ConfigError, DicomPeer, load_config, parse_config

from tls_peers import Certs, client_context, make_certs

BCP195_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_config(certs: Certs, **peer_tls: Any) -> dict[str, Any]:
    return {
        "dicom": {"tls": {"port": 2762, "cert": str(certs.router.cert), "key": str(certs.router.key),
                          "ca": str(certs.ca)}},
        "peers": {"PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 2762,
                           "tls": {"ca": str(certs.ca), **peer_tls}}},
    }  # fmt: skip


def problems(data: dict[str, Any], base: Path) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(data, base)
    return str(refused.value).splitlines()


# -- configuration ----------------------------------------------------------------------------------------------
def test_tls_files_are_relative_to_the_config_file(tmp_path: Path, certs: Certs) -> None:
    folder = tmp_path / "etc"
    (folder / "certs").mkdir(parents=True)
    for src in (certs.ca, certs.router.cert, certs.router.key):
        (folder / "certs" / src.name).write_bytes(src.read_bytes())
    (folder / "router.yaml").write_text(
        "dicom:\n  tls: {cert: certs/router.pem, key: certs/router.key, ca: certs/ca.pem}\n"
        "peers:\n  PACS: {ae_title: PACS, host: 127.0.0.1, port: 2762,\n"
        "         tls: {ca: certs/ca.pem, cert: certs/router.pem, key: certs/router.key}}\n"
    )
    config = load_config(folder / "router.yaml")
    assert config.dicom.tls is not None
    assert (config.dicom.tls.port, config.dicom.tls.ca) == (2762, folder / "certs" / "ca.pem")
    peer = config.peers["PACS"]
    assert isinstance(peer, DicomPeer) and peer.tls is not None
    assert (peer.tls.cert, peer.tls.key) == (folder / "certs" / "router.pem", folder / "certs" / "router.key")
    assert peer.tls.check_hostname is True and peer.tls.subject is None
    assert peer.accept_from == []


def test_no_tls_by_default() -> None:
    config = parse_config({}, Path.cwd())
    assert config.dicom.tls is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["dicom"]["tls"].update(cert="nowhere.pem"), "dicom.tls.cert: {base}/nowhere.pem: no such file"),
        (lambda d: d["dicom"]["tls"].update(ca="ca-missing.pem"), "dicom.tls.ca: {base}/ca-missing.pem: no such file"),
        (lambda d: d["dicom"]["tls"].update(port=11112), "dicom: Value error, tls.port must differ from port (11112)"),
        (lambda d: d["dicom"]["tls"].pop("key"), "dicom.tls.key: Field required"),
        (lambda d: d["peers"]["PACS"]["tls"].update(key="k.pem"),
         "peers.PACS.tls: Value error, cert and key go together"),
        (lambda d: d["peers"]["PACS"]["tls"].pop("ca"), "peers.PACS.tls.ca: Field required"),
        (lambda d: d["peers"]["PACS"]["tls"].update(ca="x.pem"), "peers.PACS.tls.ca: {base}/x.pem: no such file"),
        (lambda d: d["peers"]["PACS"]["tls"].update(subject="CN=PACS, XY=1"),
         "peers.PACS.tls.subject: Value error, 'XY=1' is not NAME=value with NAME one of"),
        (lambda d: d["peers"]["PACS"].update(accept_from=["10.0.0.0/8", "ct1.local"]),
         "peers.PACS.accept_from.1: Value error, 'ct1.local' is not an IP address or network"),
        (lambda d: d["peers"].update(RIS={"mllp": "127.0.0.1:2575", "accept_from": ["10.0.0.1"]}),
         "peers.RIS: Value error, accept_from: for DICOM peers (ae_title, host, port)"),
    ],
)  # fmt: skip
def test_errors_name_the_key(
    tmp_path: Path, certs: Certs, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = tls_config(certs)
    change(data)
    found = problems(data, tmp_path)
    wanted = expected.format(base=tmp_path)
    assert any(line.startswith(wanted) for line in found), found


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path, certs: Certs) -> None:
    data = tls_config(certs)
    data["dicom"]["tls"]["key"] = str(certs.modality.key)
    [line] = problems(data, tmp_path)
    assert line.startswith("dicom.tls (cert, key, ca): cannot be used: key values mismatch"), line


def test_accept_from_takes_addresses_and_networks(tmp_path: Path, certs: Certs) -> None:
    data = tls_config(certs)
    data["peers"]["PACS"]["accept_from"] = ["10.1.2.3", "10.1.3.7/24", "fd00::/8"]
    peer = parse_config(data, tmp_path).peers["PACS"]
    assert isinstance(peer, DicomPeer)
    for host in ("10.1.2.3", "10.1.3.200", "fd00::1", "::ffff:10.1.2.3"):
        assert peer.accepts_from(host), host
    for host in ("10.1.2.4", "10.1.4.1", "127.0.0.1", "not-an-address", ""):
        assert not peer.accepts_from(host), host


# -- what the contexts allow --------------------------------------------------------------------------------------
def test_both_sides_speak_tls_12_and_13_with_bcp195_suites_only(tmp_path: Path, certs: Certs) -> None:
    config = parse_config(tls_config(certs), tmp_path)
    assert config.dicom.tls is not None
    server = tls.server_context(config.dicom.tls)
    peer = config.peers["PACS"]
    assert isinstance(peer, DicomPeer)
    client = tls.client_context(peer)
    for ctx in (server, client):
        assert (ctx.minimum_version, ctx.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
        tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 == BCP195_TLS12
        assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname is True
    without_ca = tls.server_context(config.dicom.tls.model_copy(update={"ca": None}))
    assert without_ca.verify_mode == ssl.CERT_NONE  # no ca: no client certificate asked


@pytest.fixture
def tls_server(certs: Certs) -> Iterator[Callable[[float], tuple[int, list[str]]]]:
    """A loopback server doing ``tls.accept`` once per connection (timeout given); its port and the outcomes."""
    listener = socket.create_server(("127.0.0.1", 0))
    outcomes: list[str] = []
    settings = parse_config(tls_config(certs), Path.cwd()).dicom.tls
    assert settings is not None
    ctx = tls.server_context(settings)

    def start(timeout: float) -> tuple[int, list[str]]:
        def serve() -> None:
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    return
                try:
                    conn = tls.accept(sock, ctx, timeout)
                    outcomes.append(f"ok {conn.version()}")
                    conn.close()
                except OSError as exc:
                    outcomes.append(tls.describe(exc))

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1], outcomes

    yield start
    listener.close()


def handshake(port: int, ctx: ssl.SSLContext) -> str:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            version = conn.version()
            conn.recv(1)  # TLS 1.3: the server's verdict on our certificate arrives after our handshake
            return f"ok {version}"
    except OSError as exc:
        return tls.describe(exc)


def old_client(certs: Certs, version: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    ctx = client_context(certs.ca, certs.modality)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    return ctx


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")  # on purpose
def test_the_server_refuses_old_protocols_and_weak_suites(tls_server: Any, certs: Certs) -> None:
    port, outcomes = tls_server(5.0)
    assert handshake(port, client_context(certs.ca, certs.modality)) == "ok TLSv1.3"
    tls12 = old_client(certs, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake(port, tls12) == "ok TLSv1.2"
    for ctx in (
        old_client(certs, ssl.TLSVersion.TLSv1_1, "ALL"),  # TLS 1.1
        old_client(certs, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA"),  # CBC, no AEAD
        old_client(certs, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA256"),
    ):
        assert not handshake(port, ctx).startswith("ok")
    time_limit = time.monotonic() + 5
    while len(outcomes) < 5 and time.monotonic() < time_limit:
        time.sleep(0.05)  # the server thread records its side of the fifth handshake
    assert outcomes[:2] == ["ok TLSv1.3", "ok TLSv1.2"]
    assert outcomes[2] == "unsupported protocol", outcomes
    assert outcomes[3:] == ["no shared cipher", "no shared cipher"], outcomes


def test_a_client_dripping_bytes_cannot_stretch_the_handshake(tls_server: Any) -> None:
    port, outcomes = tls_server(1.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as drip:
        hello = bytes.fromhex("160301")  # the start of a TLS record, one byte at a time
        for byte in hello * 10:
            try:
                drip.send(bytes([byte]))
            except OSError:
                break  # the server closed the connection
            if outcomes:
                break
            time.sleep(0.2)  # the drip: each byte well within the timeout
    while not outcomes and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert outcomes == ["no TLS handshake within 1 s"]
    assert time.monotonic() - started < 3


# -- pinned subjects ------------------------------------------------------------------------------------------------
def test_subjects_compare_whatever_the_order_and_spelling(tmp_path: Path, certs: Certs) -> None:
    data = tls_config(certs, subject="organizationName=General Hospital, cn=ROUTER, OU=x\\, y")
    peer = parse_config(data, tmp_path).peers["PACS"]
    assert isinstance(peer, DicomPeer) and peer.tls is not None
    assert peer.tls.pinned == (("CN", "ROUTER"), ("O", "General Hospital"), ("OU", "x, y"))
