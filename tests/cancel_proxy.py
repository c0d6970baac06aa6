"""A loopback TCP proxy between a DICOM SCU and the router that makes a C-CANCEL test deterministic: after the
router's first data set (the first C-FIND answer's identifier) it stops reading the router's side until the SCU's
next P-DATA (its C-CANCEL) has passed to the router. The router's sends then block on full socket buffers (the
proxy's receive buffer is small), so it cannot finish the whole answer before the cancel arrives, however slowly the
SCU reacts. Loopback only; one connection."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

P_DATA_TF = 0x04
HEADER = struct.Struct(">BxI")
ITEM = struct.Struct(">IBB")  # PDV item length, presentation context ID, message control header
RECEIVE_BUFFER = 4096  # bytes: the router can get this far ahead of the proxy, plus its own send buffer


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU, or b"" when the connection ended."""
    data = b""
    while len(data) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(data))
        if not chunk:
            return b""
        data += chunk
    _kind, length = HEADER.unpack(data)
    while len(data) < HEADER.size + length:
        chunk = sock.recv(min(65536, HEADER.size + length - len(data)))
        if not chunk:
            return b""
        data += chunk
    return data


def ends_a_data_set(pdu: bytes) -> bool:
    """A P-DATA-TF holding the last fragment of a data set (not of a command)."""
    if pdu[0] != P_DATA_TF:
        return False
    at = HEADER.size
    while at + ITEM.size <= len(pdu):
        length, _context, control = ITEM.unpack_from(pdu, at)
        if control & 0x01 == 0 and control & 0x02:
            return True
        at += 4 + length
    return False


class HoldAfterFirstAnswer:
    """``with HoldAfterFirstAnswer(router_port) as proxy:`` point the SCU at ``proxy.port``."""

    def __init__(self, target_port: int, timeout: float = 20.0) -> None:
        self.target_port = target_port
        self.timeout = timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.holding = threading.Event()
        self.cancel_passed = threading.Event()
        self.held = False  # whether the hold happened (the router answered a data set)
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def __enter__(self) -> HoldAfterFirstAnswer:
        accept = threading.Thread(target=self._serve, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.cancel_passed.set()
        for sock in [self.listener, *self._socks]:
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _serve(self) -> None:
        self.listener.settimeout(self.timeout)
        client, _ = self.listener.accept()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # before connecting: the window
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, RECEIVE_BUFFER)
        server.connect(("127.0.0.1", self.target_port))
        self._socks += [client, server]
        up = threading.Thread(target=self._pump, args=(client, server, False), daemon=True)
        up.start()
        self._threads.append(up)
        self._pump(server, client, True)

    def _pump(self, source: socket.socket, sink: socket.socket, from_router: bool) -> None:
        try:
            while pdu := read_pdu(source):
                if not from_router and self.holding.is_set() and pdu[0] == P_DATA_TF:
                    sink.sendall(pdu)
                    self.cancel_passed.set()
                    continue
                sink.sendall(pdu)
                if from_router and not self.held and ends_a_data_set(pdu):
                    self.held = True
                    self.holding.set()
                    self.cancel_passed.wait(self.timeout)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
