"""DICOM TLS: the router's ways against pynetdicom's own (docs/pynetdicom.md, "The TLS listener" and "TLS sockets").

    python bench/tls_ab.py idle                 # a C-ECHO over TLS beside an idle TCP connection on the TLS port
    python bench/tls_ab.py tickets [--n 100]    # associations to a TLS 1.3 server that sends session tickets

idle: pynetdicom's ``start_server(ssl_context=...)`` (the handshake on the accepting thread, no timeout) against the
router's TLS listener (``router._pynetdicom.tls_server``: on the connection's thread, within the ACSE timeout); how
long a C-ECHO takes while another client holds a TCP connection open and sends nothing (the client gives up after
40 s).
tickets: a requestor with the router's pynetdicom patches (the event-driven DUL of ``reactor.py``) associates with
a pynetdicom TLS server that sends TLS 1.3 session tickets (its ARTIM timeout 2 s), with plain ``ssl.SSLSocket``
client sockets and with the router's ``TlsSocket``; how many associations fail.

In-process, on 127.0.0.1, certificates from trustme in a temporary folder removed at the end; the repo on
PYTHONPATH (the router's pynetdicom patches are installed).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import tempfile
import time
from pathlib import Path

import trustme
from pynetdicom import AE

from router import _pynetdicom, tls
from router.config import parse_config

VERIFICATION = "1.2.840.10008.1.1"


def certificates(folder: Path) -> dict[str, Path]:
    ca = trustme.CA()
    files = {"ca": folder / "ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for name in ("server", "client"):
        leaf = ca.issue_cert("127.0.0.1", common_name=name)
        files[f"{name}.pem"], files[f"{name}.key"] = folder / f"{name}.pem", folder / f"{name}.key"
        files[f"{name}.pem"].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(files[f"{name}.key"]))
    return files


def client(files: dict[str, Path], socket_class: type[ssl.SSLSocket] = tls.TlsSocket) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    ctx.load_cert_chain(files["client.pem"], files["client.key"])
    ctx.sslsocket_class = socket_class
    return ctx


def associate(port: int, ctx: ssl.SSLContext, timeout: float) -> bool:
    ae = AE("BENCH")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER", tls_args=(ctx, "127.0.0.1"))
    if not assoc.is_established:
        return False
    ok = "Status" in assoc.send_c_echo()
    assoc.release()
    return ok


def idle(files: dict[str, Path]) -> None:
    settings = {"tls": {"cert": str(files["server.pem"]), "key": str(files["server.key"]), "ca": str(files["ca"])}}
    dicom_tls = parse_config({"dicom": settings}, Path.cwd()).dicom.tls
    assert dicom_tls is not None
    ctx = tls.server_context(dicom_tls)
    for kind in ("pynetdicom", "router"):
        ae = AE("ROUTER")
        ae.add_supported_context(VERIFICATION)
        if kind == "pynetdicom":
            server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx)
        else:
            server = _pynetdicom.tls_server(ae, ("127.0.0.1", 0), ctx, 30.0, lambda *failed: None, [])
        assert server is not None
        port = int(server.server_address[1])
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.3)  # the idle connection is accepted first
            started = time.monotonic()
            ok = associate(port, client(files), 40)
            print(f"{kind}: C-ECHO beside an idle connection: {'ok' if ok else 'no association'} "
                  f"after {time.monotonic() - started:.2f} s")  # fmt: skip
        server.shutdown()


def tickets(files: dict[str, Path], n: int) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files["ca"]))
    ctx.load_cert_chain(files["server.pem"], files["server.key"])
    ctx.verify_mode = ssl.CERT_REQUIRED  # pynetdicom's own TLS server, TLS 1.3, two session tickets
    ae = AE("ROUTER")
    ae.add_supported_context(VERIFICATION)
    ae.acse_timeout = 2
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx)
    assert server is not None
    port = int(server.server_address[1])
    for socket_class in (ssl.SSLSocket, tls.TlsSocket):
        started = time.monotonic()
        failed = sum(not associate(port, client(files, socket_class), 5) for _ in range(n))
        print(f"client sockets {socket_class.__name__}: {failed} of {n} associations failed "
              f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["idle", "tickets"])
    parser.add_argument("--n", type=int, default=100, help="associations per variant (tickets)")
    args = parser.parse_args()
    _pynetdicom.install()
    with tempfile.TemporaryDirectory() as tmp:
        files = certificates(Path(tmp))
        idle(files) if args.what == "idle" else tickets(files, args.n)


if __name__ == "__main__":
    main()
