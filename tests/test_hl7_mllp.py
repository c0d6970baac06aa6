"""MLLP over real sockets on 127.0.0.1: framing, ordering, concurrency, limits, failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from router.config import Hl7Listener
from router.hl7.ack import ack_code_of, build_ack
from router.hl7.message import Hl7Error, parse_message
from router.hl7.mllp import MllpClient, MllpConnectionClosed, MllpTimeout, frame
from router.listeners.mllp import MllpServer

from peers import wait_for

VT, END = b"\x0b", b"\x1c\r"


def adt(control_id: str, processing: str = "P", body: str = "PID|1||123^^^HOSP^MR||DOE^JOHN\r") -> bytes:
    return f"MSH|^~\\&|RIS|HOSP|ROUTER|RAD|20240501||ADT^A08^ADT_A01|{control_id}|{processing}|2.5\r{body}".encode()


class EchoHandler:
    """Parses, then answers AA, or AE/AR with the parse error; records every call."""

    def __init__(self, hook: Callable[[bytes], None] | None = None) -> None:
        self.calls: list[bytes] = []
        self.hook = hook
        self.lock = threading.Lock()

    def __call__(self, raw: bytes, peer: str) -> bytes:
        assert peer.startswith("127.0.0.1:")
        with self.lock:
            self.calls.append(raw)
        if self.hook:
            self.hook(raw)
        try:
            msg = parse_message(raw)
        except Hl7Error as exc:
            return build_ack(exc.partial, exc.ack_code, [exc])
        if msg.control_id.startswith("BOOM"):
            raise RuntimeError("database unavailable")
        return build_ack(msg, "AA")


@pytest.fixture
def echo() -> EchoHandler:
    return EchoHandler()


@pytest.fixture
def start_server() -> Iterator[Callable[..., MllpServer]]:
    servers: list[MllpServer] = []

    def start(handler: Callable[[bytes, str], bytes], **kwargs: object) -> MllpServer:
        server = MllpServer("127.0.0.1", 0, handler, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def connect(server: MllpServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(END) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data.count(END)} of {count} replies"
        data += chunk
    frames = data.split(END)[:count]
    assert all(f.startswith(VT) for f in frames)
    return [f[1:] for f in frames]


def closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_one_message_is_framed_and_acknowledged(start_server: Callable[..., MllpServer], echo: EchoHandler) -> None:
    server = start_server(echo)
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        reply = client.send(adt("M1"))
    assert ack_code_of(reply) == ("AA", "M1")
    assert reply.startswith(b"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|") and reply.endswith(b"\rMSA|AA|M1\r")
    assert echo.calls == [adt("M1")]  # the handler got exactly the bytes between VT and FS CR
    assert (server.stats.connections, server.stats.messages, server.stats.discarded_bytes) == (1, 1, 0)


@pytest.mark.parametrize("count", [2, 3])
def test_pipelined_messages_are_answered_in_order(start_server: Callable[..., MllpServer], count: int) -> None:
    # the first message is the slowest (the scenario, not a synchronisation): a server answering out of order
    # would send M2 first
    handler = EchoHandler(hook=lambda raw: time.sleep(0.2 if b"|M1|" in raw else 0))
    server = start_server(handler)
    ids = [f"M{n}" for n in range(1, count + 1)]
    with connect(server) as sock:
        sock.sendall(b"".join(frame(adt(i)) for i in ids))
        replies = read_frames(sock, count)
    assert [ack_code_of(r) for r in replies] == [("AA", i) for i in ids]
    assert [parse_message(raw).control_id for raw in handler.calls] == ids


def test_frames_split_across_reads_and_sharing_one_read(
    start_server: Callable[..., MllpServer], echo: EchoHandler
) -> None:
    server = start_server(echo)
    data = frame(adt("S1")) + frame(adt("S2"))
    with connect(server) as sock:
        for i in range(0, len(data), 7):  # 7-byte pieces: VT, FS and CR land in different reads
            sock.sendall(data[i : i + 7])
            time.sleep(0.002)  # the scenario, not a synchronisation: the pieces arrive apart, in separate reads
        assert [ack_code_of(r) for r in read_frames(sock, 2)] == [("AA", "S1"), ("AA", "S2")]


def test_four_connections_are_served_concurrently(start_server: Callable[..., MllpServer]) -> None:
    barrier = threading.Barrier(4, timeout=10)  # every handler call waits until four are running at once
    handler = EchoHandler(hook=lambda raw: barrier.wait())
    server = start_server(handler, handler_threads=4)
    results: dict[int, list[tuple[str, str]]] = {}

    def client(n: int) -> None:
        with MllpClient("127.0.0.1", server.port, timeout=15) as c:
            results[n] = [ack_code_of(c.send(adt(f"C{n}-{k}"))) for k in range(3)]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {n: [("AA", f"C{n}-{k}") for k in range(3)] for n in range(4)}
    assert server.stats.connections == 4 and server.stats.messages == 12


def test_garbage_before_the_start_byte_is_discarded(start_server: Callable[..., MllpServer], echo: EchoHandler) -> None:
    server = start_server(echo)
    with connect(server) as sock:
        sock.sendall(b"hello\r\n" + frame(adt("G1")) + b"\x00junk" + frame(adt("G2")))
        assert [ack_code_of(r) for r in read_frames(sock, 2)] == [("AA", "G1"), ("AA", "G2")]
    assert server.stats.discarded_bytes == 7 + 5
    assert len(echo.calls) == 2


def test_restarted_frame_and_end_block_without_cr(start_server: Callable[..., MllpServer], echo: EchoHandler) -> None:
    server = start_server(echo)
    with connect(server) as sock:
        # an unfinished frame is dropped when a new VT starts; a bare FS (no CR) still ends a frame
        sock.sendall(VT + b"MSH|^~\\&|half" + VT + adt("V1") + b"\x1c" + VT + adt("V2") + END)
        assert [ack_code_of(r) for r in read_frames(sock, 2)] == [("AA", "V1"), ("AA", "V2")]
    assert server.stats.discarded_bytes == len(b"MSH|^~\\&|half")
    assert echo.calls == [adt("V1"), adt("V2")]


def test_oversized_message_closes_only_its_connection(
    start_server: Callable[..., MllpServer], echo: EchoHandler
) -> None:
    server = start_server(echo, max_message_bytes=1024)
    exactly = adt("BIG0", body="PID|1||" + "x" * 2000)[:1024]
    assert len(exactly) == 1024
    with connect(server) as sock:  # a message of exactly the limit is fine
        sock.sendall(frame(exactly))
        assert ack_code_of(read_frames(sock, 1)[0]) == ("AA", "BIG0")
    with connect(server) as sock:
        # no end byte ever comes: the server must give up at the limit, not wait for FS CR
        sock.sendall(VT + adt("BIG1") + b"ZZZ|" + b"y" * 4000)
        assert closed_by_server(sock)
    assert server.stats.oversized == 1
    assert server.stats.max_buffered <= 1024
    assert echo.calls == [exactly]
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        assert ack_code_of(client.send(adt("AFTER"))) == ("AA", "AFTER")


def test_idle_connection_is_closed(start_server: Callable[..., MllpServer], echo: EchoHandler) -> None:
    server = start_server(echo, idle_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(frame(adt("I1")))
        assert ack_code_of(read_frames(sock, 1)[0]) == ("AA", "I1")
        started = time.monotonic()
        assert closed_by_server(sock)
        assert 0.25 <= time.monotonic() - started < 3
    with connect(server) as sock:  # silent in the middle of a message counts as idle too
        sock.sendall(VT + adt("I2")[:20])
        assert closed_by_server(sock)
    assert server.stats.idle_closed == 2
    assert len(echo.calls) == 1


def test_handler_exception_is_answered_ar_and_the_server_survives(
    start_server: Callable[..., MllpServer], echo: EchoHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(echo)
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        reply = client.send(adt("BOOM1"))
        assert ack_code_of(reply) == ("AR", "BOOM1")
        assert reply.split(b"\r")[2] == (
            b"ERR|||207^Application internal error^HL70357|E||||the router could not process the message"
        )
        assert ack_code_of(client.send(adt("OK1"))) == ("AA", "OK1")  # same connection still served
    assert server.stats.handler_errors == 1
    assert "MLLP handler failed" in caplog.text and "database unavailable" in caplog.text


def test_handler_exception_without_a_readable_header_closes(start_server: Callable[..., MllpServer]) -> None:
    def crash(raw: bytes, peer: str) -> bytes:
        raise ValueError("cannot cope")

    server = start_server(crash)
    with connect(server) as sock:
        sock.sendall(frame(b"not hl7 at all"))
        assert closed_by_server(sock)
    with connect(server) as sock:
        sock.sendall(frame(adt("X1", processing="T")))  # handler fails; header readable even though T
        reply = read_frames(sock, 1)[0]
    assert ack_code_of(reply) == ("AR", "X1") and b"|ACK^A08^ACK|" in reply
    assert server.stats.handler_errors == 2


def test_parse_errors_become_ae_and_ar_over_the_wire(
    start_server: Callable[..., MllpServer], echo: EchoHandler
) -> None:
    server = start_server(echo)
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        processing = client.send(adt("T1", processing="T"))
        no_id = client.send(adt(""))
        garbage = client.send(b"this is not HL7")
    assert ack_code_of(processing) == ("AR", "T1")
    assert processing.split(b"\r")[2] == (
        b"ERR||MSH^1^11|202^Unsupported processing id^HL70357|E||||processing ID T is not accepted"
    )
    assert ack_code_of(no_id) == ("AE", "")
    assert no_id.split(b"\r")[2] == (
        b"ERR||MSH^1^10|101^Required field missing^HL70357|E||||MSH-10 (message control ID) is empty"
    )
    assert ack_code_of(garbage) == ("AR", "")


def test_half_sent_message_then_disconnect_loses_only_that_message(
    start_server: Callable[..., MllpServer], echo: EchoHandler
) -> None:
    server = start_server(echo)
    with connect(server) as sock:
        sock.sendall(frame(adt("H1")))
        assert ack_code_of(read_frames(sock, 1)[0]) == ("AA", "H1")
        sock.sendall(VT + adt("H2")[:30])
    wait_for(lambda: server.stats.incomplete >= 1, 5, 0.01, what="the server to count the incomplete message")
    assert server.stats.incomplete == 1
    assert [parse_message(c).control_id for c in echo.calls] == ["H1"]  # the half message never reached the handler
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        assert ack_code_of(client.send(adt("H2"))) == ("AA", "H2")


def test_connections_over_the_limit_are_closed(start_server: Callable[..., MllpServer], echo: EchoHandler) -> None:
    server = start_server(echo, max_connections=1)
    with MllpClient("127.0.0.1", server.port, timeout=5) as first:
        assert ack_code_of(first.send(adt("L1"))) == ("AA", "L1")
        with connect(server) as second:
            assert closed_by_server(second)
        assert ack_code_of(first.send(adt("L2"))) == ("AA", "L2")
    assert server.stats.refused == 1


def test_client_reconnects_after_the_server_closed_an_idle_connection(
    start_server: Callable[..., MllpServer], echo: EchoHandler
) -> None:
    server = start_server(echo, idle_timeout=0.2)
    with MllpClient("127.0.0.1", server.port, timeout=5) as client:
        assert ack_code_of(client.send(adt("R1"))) == ("AA", "R1")
        wait_for(lambda: server.stats.idle_closed >= 1, 5, 0.02, what="the server to close the idle connection")
        assert ack_code_of(client.send(adt("R2"))) == ("AA", "R2")
    assert server.stats.connections == 2 and server.stats.idle_closed >= 1


def test_client_timeout_and_close_are_clear_errors(start_server: Callable[..., MllpServer]) -> None:
    release = threading.Event()

    def slow(raw: bytes, peer: str) -> bytes:
        release.wait(5)
        return build_ack(parse_message(raw), "AA")

    server = start_server(slow)
    with MllpClient("127.0.0.1", server.port, timeout=0.3) as client:
        with pytest.raises(MllpTimeout, match=r"no reply from 127\.0\.0\.1:\d+ within 0\.3s"):
            client.send(adt("SLOW"))
        release.set()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def read_then_close() -> None:  # a peer that takes the message and hangs up without an ACK
        conn = listener.accept()[0]
        with conn:
            data = b""
            while not data.endswith(b"\x1c\r"):
                data += conn.recv(65536)

    closer = threading.Thread(target=read_then_close)
    closer.start()
    with MllpClient("127.0.0.1", port, timeout=5) as client, pytest.raises(MllpConnectionClosed, match="closed"):
        client.send(adt("C1"))
    closer.join(5)
    listener.close()
    with pytest.raises(MllpConnectionClosed, match="cannot connect"):
        MllpClient("127.0.0.1", port, timeout=2).send(adt("C2"))


def test_server_defaults_match_the_configuration_defaults() -> None:
    cfg = Hl7Listener()
    server = MllpServer("127.0.0.1", 0, EchoHandler())
    assert (
        (server.max_message_bytes, server.idle_timeout, server.max_connections)
        == (
            cfg.max_message_bytes,
            cfg.idle_timeout,
            cfg.max_connections,
        )
        == (1_048_576, 300.0, 64)
    )
    assert cfg.accepted_processing_ids == ["P"]


def test_stop_closes_open_connections(echo: EchoHandler) -> None:
    server = MllpServer("127.0.0.1", 0, echo)
    port = server.start()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(frame(adt("ST1")))
    assert ack_code_of(read_frames(sock, 1)[0]) == ("AA", "ST1")
    server.stop()
    assert closed_by_server(sock)
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
