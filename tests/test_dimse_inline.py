"""router._pynetdicom.inline: an acceptor's C-STORE requests are served on the DUL thread that received them; everything
else keeps pynetdicom's path through the association's reactor thread.

The network tests run a pynetdicom SCP (with the router's loops installed) against DCMTK storescu/echoscu and a
pynetdicom SCU; the decision itself is pure logic, checked on a stand-in association."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from router import _pynetdicom
from router._pynetdicom.inline import SERVING, MessageQueue

from peers import DCMTK_ENV, SECONDARY_CAPTURE, make_instance, storescu, write_instances
from tools import dcmtk

VERIFICATION = "1.2.840.10008.1.1"


class Recorder:
    """Which thread served each request, and on which association."""

    def __init__(self) -> None:
        self.stores: list[tuple[threading.Thread, Any]] = []
        self.echoes: list[tuple[threading.Thread, Any]] = []

    def on_store(self, event: evt.Event) -> int:
        self.stores.append((threading.current_thread(), event.assoc))
        return 0x0000

    def on_echo(self, event: evt.Event) -> int:
        self.echoes.append((threading.current_thread(), event.assoc))
        return 0x0000


@pytest.fixture
def scp() -> Iterator[tuple[ThreadedAssociationServer, Recorder]]:
    assert _pynetdicom.install()
    recorder = Recorder()
    ae = AE(ae_title="INLINE")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ExplicitVRLittleEndian)
    ae.add_supported_context(VERIFICATION)
    handlers: list[Any] = [(evt.EVT_C_STORE, recorder.on_store), (evt.EVT_C_ECHO, recorder.on_echo)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert server is not None
    try:
        yield server, recorder
    finally:
        server.shutdown()


def port_of(server: ThreadedAssociationServer) -> int:
    return int(server.server_address[1])


@pytest.mark.interop  # DCMTK storescu / echoscu
def test_stores_from_storescu_are_served_on_the_dul_thread(
    scp: tuple[ThreadedAssociationServer, Recorder], tmp_path: Path
) -> None:
    """Served inline when the association is idle; otherwise by the reactor, never lost.

    A request may legitimately take the reactor's path: the first one can be decoded before pynetdicom's reactor
    thread has marked the association established (it does so after sending the A-ASSOCIATE-AC), and any one can
    arrive while the reactor is looking at its queue on a timer tick. So the test asks for every store answered,
    every one served by one of the association's two threads, and most of them on the DUL thread."""
    server, recorder = scp
    count = 20
    paths = write_instances(tmp_path / "in", [make_instance() for _ in range(count)])
    done = storescu(port_of(server), paths, aec="INLINE")
    assert done.returncode == 0, done.stderr
    assert len(recorder.stores) == count
    where = [
        "dul" if thread is assoc.dul else "reactor" if thread is assoc else "other" for thread, assoc in recorder.stores
    ]
    assert "other" not in where, where
    assert where.count("dul") >= count * 3 // 4, f"a C-STORE request should be served where it was received: {where}"


@pytest.mark.interop  # DCMTK storescu / echoscu
def test_echo_is_served_by_the_reactor_as_before(scp: tuple[ThreadedAssociationServer, Recorder]) -> None:
    server, recorder = scp
    done = subprocess.run(
        [dcmtk("echoscu"), "-aec", "INLINE", "127.0.0.1", str(port_of(server))],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [(thread, assoc)] = recorder.echoes
    assert thread is assoc, "C-ECHO keeps pynetdicom's path: the association's own (reactor) thread"


def test_stores_and_echoes_mixed_on_one_association_all_answered_in_order(
    scp: tuple[ThreadedAssociationServer, Recorder],
) -> None:
    server, recorder = scp
    ae = AE(ae_title="MIXED")
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port_of(server), ae_title="INLINE")
    assert assoc.is_established
    try:
        statuses = []
        for i in range(20):
            if i % 3 == 0:
                statuses.append(assoc.send_c_echo().Status)
            else:
                statuses.append(assoc.send_c_store(make_instance()).Status)
    finally:
        assoc.release()
    assert statuses == [0] * 20
    assert len(recorder.stores) == 13 and len(recorder.echoes) == 7


# -- the decision, on a stand-in association -----------------------------------------------------------------
class StandIn:
    """The attributes MessageQueue reads, as an idle established acceptor association would have them."""

    def __init__(self) -> None:
        self.dul = threading.current_thread()  # the inline path is only taken on the association's DUL thread
        self.is_acceptor = True
        self.is_established = True
        self._sent_release = False
        self._kill = False
        self._reactor_checkpoint = threading.Event()
        self._reactor_checkpoint.set()
        self._is_paused = True  # the reactor waits for work
        self.served: list[tuple[int, Any]] = []

    def _serve_request(self, msg: Any, context_id: int) -> None:
        self._is_paused = False  # as pynetdicom's _serve_request leaves it
        self.served.append((context_id, msg))


class IdleTimer:
    def __init__(self) -> None:
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1


def store_request() -> C_STORE:
    msg = C_STORE()
    msg.MessageID = 1
    msg.AffectedSOPClassUID = SECONDARY_CAPTURE
    msg.AffectedSOPInstanceUID = "1.2.3.4"
    msg.Priority = 0
    msg.DataSet = BytesIO(b"")
    assert msg.is_valid_request
    return msg


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.setattr(threading.current_thread(), "_idle_timer", IdleTimer(), raising=False)
    yield StandIn()


def queue_for(assoc: StandIn) -> tuple[MessageQueue, list[int]]:
    wakes: list[int] = []
    return MessageQueue(assoc, lambda: wakes.append(1)), wakes  # type: ignore[arg-type]


def test_an_idle_acceptor_serves_a_store_request_inline(stand_in: StandIn) -> None:
    q, wakes = queue_for(stand_in)
    msg = store_request()
    q.put((3, msg))
    assert stand_in.served == [(3, msg)] and q.empty() and not wakes
    assert stand_in._is_paused is True, "the reactor's paused flag is restored"
    assert threading.current_thread()._idle_timer.restarts == 1  # type: ignore[attr-defined]


def refuse_reasons() -> dict[str, Any]:
    def serving(a: StandIn) -> None:
        a.__dict__[SERVING] = True

    def paused_by_send(a: StandIn) -> None:
        a._reactor_checkpoint.clear()

    return {
        "the reactor is serving a request": serving,
        "a send_*() call has paused the reactor": paused_by_send,
        "a requestor association": lambda a: setattr(a, "is_acceptor", False),
        "not established": lambda a: setattr(a, "is_established", False),
        "release sent": lambda a: setattr(a, "_sent_release", True),
        "being killed": lambda a: setattr(a, "_kill", True),
    }


@pytest.mark.parametrize("make_busy", refuse_reasons().values(), ids=refuse_reasons().keys())
def test_a_store_request_is_queued_when_the_association_is_not_idle(stand_in: StandIn, make_busy: Any) -> None:
    make_busy(stand_in)
    q, wakes = queue_for(stand_in)
    msg = store_request()
    q.put((3, msg))
    assert stand_in.served == [] and q.get_nowait() == (3, msg) and wakes == [1]


def test_a_store_request_queues_behind_an_earlier_message(stand_in: StandIn) -> None:
    q, _ = queue_for(stand_in)
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = VERIFICATION
    q.put((1, echo))
    q.put((3, store_request()))
    assert stand_in.served == [] and [q.get_nowait()[0], q.get_nowait()[0]] == [1, 3]


def test_responses_other_requests_and_other_threads_take_the_queue(stand_in: StandIn) -> None:
    q, _ = queue_for(stand_in)
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.Status = 0
    echo = C_ECHO()
    echo.MessageID = 2
    echo.AffectedSOPClassUID = VERIFICATION
    q.put((3, response))
    q.put((1, echo))
    q.put((None, None))  # pynetdicom's "association ended" marker
    elsewhere = threading.Thread(target=q.put, args=((3, store_request()),))
    elsewhere.start()
    elsewhere.join()
    assert stand_in.served == [] and q.qsize() == 4
