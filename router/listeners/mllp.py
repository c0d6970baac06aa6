"""The MLLP listener: a threaded asyncio server for HL7 v2 over MLLP.

The server answers the messages of one connection one at a time and in order (pipelined messages wait in the
socket), serves connections concurrently, and calls the synchronous handler in a bounded thread pool, never on the
event loop. Framing and the client are ``router.hl7.mllp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from router.hl7.ack import build_ack
from router.hl7.errors import Hl7Error
from router.hl7.message import Hl7Header, parse_message
from router.hl7.mllp import CR, FS, READ_CHUNK, VT, frame

log = logging.getLogger(__name__)

Handler = Callable[[bytes, str], bytes]


@dataclass
class MllpStats:
    """Counters of one server (updated on its event loop thread; reading them elsewhere is fine)."""

    connections: int = 0  # accepted and served
    refused: int = 0  # closed at once: max_connections reached
    messages: int = 0  # frames handed to the handler
    handler_errors: int = 0  # handler raised or returned no bytes (answered AR, or closed)
    discarded_bytes: int = 0  # outside a frame, or of a frame restarted by a new VT
    oversized: int = 0  # connections closed because a message exceeded max_message_bytes
    idle_closed: int = 0  # connections closed after idle_timeout without data
    slow_closed: int = 0  # connections closed because a message took longer than message_timeout to arrive
    incomplete: int = 0  # connections that ended in the middle of a frame
    max_buffered: int = 0  # largest message buffer held, bytes (never above max_message_bytes)


class MessageTooLarge(Exception):
    """A message passed ``max_message_bytes`` before its end block."""


class Deframer:
    """MLLP framing of one connection's byte stream (``VT message FS``, the CR after FS optional): ``feed`` a chunk as
    it was read and get the complete messages in it, as they complete. Bytes outside a frame, and a frame restarted
    by a new VT before its end, are discarded (counted in ``discarded`` until ``take_discarded``). The buffer never
    holds more than ``max_message_bytes``: ``feed`` raises ``MessageTooLarge`` as soon as a message passes it."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.buf = bytearray()
        self.inside = False  # between a VT and its FS
        self.skip_cr = False  # an FS was the last byte seen: a CR right after it belongs to the frame
        self.discarded = 0
        self.max_buffered = 0

    def take_discarded(self) -> int:
        count, self.discarded = self.discarded, 0
        return count

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        pos = 0
        while pos < len(chunk):
            if self.skip_cr:
                self.skip_cr = False
                if chunk[pos] == CR:
                    pos += 1
                    continue
            if not self.inside:
                vt = chunk.find(VT, pos)
                self.discarded += (vt if vt >= 0 else len(chunk)) - pos
                if vt < 0:
                    return
                self.inside, pos = True, vt + 1
                continue
            fs = chunk.find(FS, pos)
            end = fs if fs >= 0 else len(chunk)
            restart = chunk.find(VT, pos, end)
            if restart >= 0:  # a new frame began before this one ended: the sender gave up on it
                self.discarded += len(self.buf) + restart - pos
                self.buf.clear()
                pos = restart + 1
                continue
            if len(self.buf) + end - pos > self.max_message_bytes:
                raise MessageTooLarge(f"a message exceeds {self.max_message_bytes} bytes")
            self.buf += chunk[pos:end]
            self.max_buffered = max(self.max_buffered, len(self.buf))
            if fs < 0:
                return
            self.inside, self.skip_cr, pos = False, True, fs + 1
            message = bytes(self.buf)
            self.buf.clear()
            yield message

    @property
    def pending(self) -> int:
        """Bytes of a message begun and not ended (0 between messages)."""
        return len(self.buf) + int(self.inside)


class MllpServer:
    """Listen for MLLP on ``host:port``; ``handler(raw, "host:port") -> ack bytes`` answers each message.

    ``start()`` returns the bound port (ask for 0 to get a free one); ``stop()`` closes the listener and every
    connection and waits for running handlers. A handler exception is logged and answered with an AR ACK
    (error 207) when the message's MSH can be read, else the connection is closed; the server keeps serving.
    A message longer than ``max_message_bytes`` closes its connection as soon as the limit is passed (the
    buffer never grows beyond it); so does ``idle_timeout`` seconds without data, and a message that has not ended
    ``message_timeout`` seconds after the first byte that followed the previous one (a slow drip, or bytes outside
    any frame, cannot hold a connection either). A connection over ``max_connections`` is closed at once. A
    connection lost mid-message loses only that unacknowledged message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_message_bytes: int = 1_048_576,
        idle_timeout: float = 300.0,
        message_timeout: float = 120.0,
        max_connections: int = 64,
        handler_threads: int = 4,
    ) -> None:
        self.host, self.port, self.handler = host, port, handler
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.max_connections = max_connections
        self.handler_threads = handler_threads
        self.stats = MllpStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def start(self) -> int:
        if self._thread is not None:
            raise RuntimeError("the MLLP server is already running")
        self._executor = ThreadPoolExecutor(self.handler_threads, thread_name_prefix="mllp-handler")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="mllp-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._executor.shutdown()
            raise failure[0]
        log.info("MLLP listening on %s:%d", self.host, self.port)
        return self.port

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        asyncio.get_running_loop().stop()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be gone
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._thread = self._loop = self._server = self._executor = None
        log.info("MLLP listener on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> MllpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_info = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{peer_info[0]}:{peer_info[1]}"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self._connections) >= self.max_connections:
            self.stats.refused += 1
            log.warning("MLLP connection from %s refused: %d connections open", peer, len(self._connections))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.stats.connections += 1
        try:
            await self._converse(reader, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.info("MLLP connection from %s ended: %s", peer, exc or type(exc).__name__)
        except asyncio.CancelledError:  # stop(): end quietly (the stream's done-callback would log it)
            log.info("MLLP connection from %s closed: the listener stops", peer)
        except Exception:
            log.exception("MLLP connection from %s failed", peer)
        finally:
            writer.close()
            try:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            finally:  # only now: stop() waits for (and cancels) a connection still closing
                self._connections.pop(task, None)

    async def _read(self, reader: asyncio.StreamReader, deadline: float | None, peer: str) -> bytes | None:
        """The next chunk ("" at the end of the stream); None when the connection must close: idle for
        ``idle_timeout``, or ``deadline`` (the message's, on the loop's clock) passed."""
        loop = asyncio.get_running_loop()
        wait = self.idle_timeout if deadline is None else min(self.idle_timeout, deadline - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0)):  # not wait_for: it can swallow a cancellation
                return await reader.read(READ_CHUNK)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                self.stats.slow_closed += 1
                log.warning("MLLP connection from %s: no whole message within %ss: closed", peer, self.message_timeout)
            else:
                self.stats.idle_closed += 1
                log.info("MLLP connection from %s idle for %ss: closed", peer, self.idle_timeout)
            return None

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        frames = Deframer(self.max_message_bytes)
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # the current message must end by then (set by its first byte)
        while True:
            chunk = await self._read(reader, deadline, peer)
            if chunk is None:
                return
            if not chunk:
                if frames.inside:
                    self.stats.incomplete += 1
                    log.warning("MLLP connection from %s closed mid-message (%d bytes dropped)", peer, len(frames.buf))
                return
            if deadline is None:
                deadline = loop.time() + self.message_timeout
            try:
                for message in frames.feed(chunk):
                    self.stats.max_buffered = max(self.stats.max_buffered, frames.max_buffered)
                    self._discarded(peer, frames.take_discarded())
                    reply = await self._handle(message, peer)
                    if reply is None:
                        return
                    writer.write(frame(reply))
                    async with asyncio.timeout(self.idle_timeout):
                        await writer.drain()
                    deadline = loop.time() + self.message_timeout if frames.pending else None
            except MessageTooLarge:
                self.stats.oversized += 1
                limit = self.max_message_bytes
                log.warning("MLLP message from %s exceeds %d bytes: connection closed", peer, limit)
                return
            self.stats.max_buffered = max(self.stats.max_buffered, frames.max_buffered)
            self._discarded(peer, frames.take_discarded())

    def _discarded(self, peer: str, count: int) -> None:
        if not count:
            return
        self.stats.discarded_bytes += count
        log.warning("MLLP connection from %s: %d bytes outside a frame discarded", peer, count)

    async def _handle(self, raw: bytes, peer: str) -> bytes | None:
        self.stats.messages += 1
        loop = asyncio.get_running_loop()
        reply, failed = await loop.run_in_executor(self._executor, self._call_handler, raw, peer)
        if failed:
            self.stats.handler_errors += 1
        return reply

    def _call_handler(self, raw: bytes, peer: str) -> tuple[bytes | None, bool]:
        """Runs in the pool: the handler's reply, or an AR (None: close) when it fails."""
        try:
            reply = self.handler(raw, peer)
            if not isinstance(reply, bytes | bytearray) or not reply:
                raise TypeError(f"the MLLP handler returned {type(reply).__name__}, not ACK bytes")
            return bytes(reply), False
        except Exception:
            log.exception("MLLP handler failed on a message from %s", peer)
        error = Hl7Error("AR", 207, "the router could not process the message")
        header: Hl7Header | None
        try:
            header = parse_message(raw, accepted_processing_ids=("P", "T", "D"), use_hl7apy=False)
        except Hl7Error as exc:
            header = exc.partial
        except Exception:
            log.exception("cannot read the header of a message from %s", peer)
            header = None
        if header is None:
            return None, True
        try:
            return build_ack(header, "AR", [error]), True
        except Exception:
            log.exception("cannot build an AR for a message from %s", peer)
            return None, True
