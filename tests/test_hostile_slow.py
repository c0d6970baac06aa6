"""Slow clients against a live router: a slow-drip HTTP client (slowloris, headers or body), an HTTP connection that
sends nothing, a slow-drip MLLP client (a message, or junk outside any frame). Each is closed after its timeout,
while another client of the same listener is served (docs/security.md).

The router runs as a process (``router serve``) with timeouts of 2 s: ``http.header_timeout``,
``http.body_timeout``, ``hl7.message_timeout``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from router.hl7.mllp import frame

from hl7msg import ack_segments, adt, encode, send
from peers import RouterProcess

TIMEOUT = 2.0
DRIP = 0.25  # s between two bytes of a slow client: well under every timeout, so only a deadline can end it


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    proc = RouterProcess(
        tmp_path_factory.mktemp("hostile-slow"),
        http={"header_timeout": TIMEOUT, "body_timeout": TIMEOUT},
        hl7={"message_timeout": TIMEOUT, "idle_timeout": 30},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def still_open(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def drip(sock: socket.socket, data: bytes, during: float, served_meanwhile: Callable[[], bool]) -> tuple[float, bytes]:
    """Send ``data`` a byte every ``DRIP`` s until the router closes the connection (or ``during`` s passed); after
    a few bytes, ``served_meanwhile()`` must succeed. How long the connection lasted, and what the router sent."""
    started = time.monotonic()
    checked = False
    for byte in data:
        if not still_open(sock) or time.monotonic() - started > during:
            break
        with contextlib.suppress(OSError):
            sock.sendall(bytes([byte]))
        if not checked and time.monotonic() - started > DRIP * 3:
            t = time.monotonic()
            assert served_meanwhile(), "another client was not served during the drip"
            assert time.monotonic() - t < 2, "another client waited for the slow one"
            assert still_open(sock), "the slow client was closed before the other was served: the test proves nothing"
            checked = True
        time.sleep(DRIP)  # the drip is the scenario
    sock.settimeout(5)
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            answer += chunk
    return time.monotonic() - started, answer


# -- HTTP -----------------------------------------------------------------------------------------------------
def qido_served(router: RouterProcess) -> bool:
    response = httpx.get(f"http://127.0.0.1:{router.http_port}/dicomweb/studies", timeout=5)
    return response.status_code in (200, 204)


def test_slowloris_headers_are_answered_408_and_closed(router: RouterProcess) -> None:
    request = b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=5) as sock:
        lasted, answer = drip(sock, request, 30, lambda: qido_served(router))
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert TIMEOUT - 0.5 < lasted < TIMEOUT + 2, f"closed after {lasted:.1f}s, expected about {TIMEOUT}s"


def test_connection_that_sends_nothing_is_closed(router: RouterProcess) -> None:
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=TIMEOUT + 5) as sock:
        started = time.monotonic()
        assert qido_served(router)
        answer = sock.recv(4096)
        lasted = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408")
    assert TIMEOUT - 0.5 < lasted < TIMEOUT + 2


def test_second_request_dripped_on_a_kept_alive_connection_is_closed(router: RouterProcess) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request: the header deadline still holds."""
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=5) as sock:
        sock.sendall(b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith((b"HTTP/1.1 200", b"HTTP/1.1 204"))
        lasted, answer = drip(sock, b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 40, 30,
                              lambda: qido_served(router))  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 408")
    assert lasted < TIMEOUT + 2


def test_body_that_stops_half_way_is_closed(router: RouterProcess) -> None:
    head = (
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n\r\n'
    )
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=TIMEOUT + 5) as sock:
        sock.sendall(head + b"--b\r\n" + b"x" * 1000)
        started = time.monotonic()
        assert qido_served(router)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(4096):
                pass
        lasted = time.monotonic() - started
    assert TIMEOUT - 0.5 < lasted < TIMEOUT + 2, f"closed after {lasted:.1f}s, expected about {TIMEOUT}s"


# -- MLLP -----------------------------------------------------------------------------------------------------
def a01(control_id: str) -> str:
    return adt("A01", {3: f"{control_id}^^^HOSP^MR", 5: "SLOW^CLIENT"}, control_id=control_id)


def hl7_served(router: RouterProcess, control_id: str) -> bool:
    return ack_segments(send(router.hl7_port, a01(control_id), timeout=5))["MSA"][1] == "AA"


@pytest.mark.parametrize(
    "payload",
    [frame(encode(a01("DRIP1"))), b"junk outside any frame, a byte at a time " * 3],
    ids=["a message", "junk outside a frame"],
)
def test_slow_drip_mllp_client_is_closed(router: RouterProcess, payload: bytes) -> None:
    served = iter(range(100))
    with socket.create_connection(("127.0.0.1", router.hl7_port), timeout=5) as sock:
        lasted, answer = drip(sock, payload, 30, lambda: hl7_served(router, f"MEANWHILE{next(served)}"))
    assert answer == b"", "the dripped message was acknowledged: the drip ended before the deadline"
    assert TIMEOUT - 0.5 < lasted < TIMEOUT + 2, f"closed after {lasted:.1f}s, expected about {TIMEOUT}s"


def test_the_servers_defaults_are_the_configuration_defaults() -> None:
    """The timeouts a server built without a configuration uses are the documented defaults."""
    from router.config import Hl7Listener, HttpListener
    from router.listeners.http.server import GuardedH11Protocol
    from router.listeners.mllp import MllpServer

    server = MllpServer("127.0.0.1", 0, lambda raw, peer: b"")
    assert server.message_timeout == Hl7Listener().message_timeout == 120
    http = HttpListener()
    assert (
        (GuardedH11Protocol.header_timeout, GuardedH11Protocol.body_timeout)
        == (
            http.header_timeout,
            http.body_timeout,
        )
        == (30, 60)
    )
