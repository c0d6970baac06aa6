"""Every change the router makes to pynetdicom, in one place, applied by ``install()`` at start-up.

Importing a router module changes nothing in pynetdicom. ``install()`` (idempotent, thread-safe) is called by
``Router``, the forward process, ``DicomListener`` and ``make_requestor`` (so by every CLI command that opens an
association) before the first association. It

1. sets the documented ``pynetdicom._config`` options the router relies on, on any version of pynetdicom:
   ``STORE_SEND_CHUNKED_DATASET`` (a forwarded object is sent from its file, byte for byte: without it pynetdicom
   decodes and re-encodes it, so ``install()`` refuses to go on, ``UnsupportedPynetdicom``, on a pynetdicom that
   does not have it) and ``ENFORCE_UID_CONFORMANCE`` off (forward what was received, never "fix" it);
2. checks the versions of pynetdicom and pydicom against ``SUPPORTED`` and only then imports the patch modules of
   this package (the only router modules that import pynetdicom's private names or touch its private attributes)
   and applies them. On another version it logs one warning and applies none of them: the router then runs on
   pynetdicom's own code, slower, with the races those patches close (docs/pynetdicom.md says what each buys).

The rest of the router reaches pynetdicom's internals only through the functions below, which fall back to
pynetdicom's plain behaviour when the patches are not installed.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import pydicom
import pynetdicom

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.service_class import ServiceClass
    from pynetdicom.transport import ThreadedAssociationServer

    from router._pynetdicom.gate import Gate

log = logging.getLogger(__name__)

SUPPORTED = {"pynetdicom": "3.0.", "pydicom": "3.0."}  # version prefixes the patches were written and tested for
_lock = threading.Lock()
_patched: bool | None = None  # None: install() has not run yet


class UnsupportedPynetdicom(RuntimeError):
    """This pynetdicom lacks an option the router cannot run correctly without."""


def unsupported_versions() -> list[str]:
    """The libraries whose version the patches were not written for, as "name version"; empty when all are."""
    versions = {"pynetdicom": str(pynetdicom.__version__), "pydicom": str(pydicom.__version__)}
    return [f"{name} {version}" for name, version in versions.items() if not version.startswith(SUPPORTED[name])]


def install() -> bool:
    """Configure and patch pynetdicom for the router, once per process; True when the patches are applied."""
    global _patched
    with _lock:
        if _patched is None:
            _configure()
            _patched = _apply_patches()
        return _patched


def installed() -> bool:
    """Whether ``install()`` applied the patches of pynetdicom's internals in this process."""
    return bool(_patched)


def _configure() -> None:
    from pynetdicom import _config  # documented options (pynetdicom's "Configuration Options" reference)

    if not hasattr(_config, "STORE_SEND_CHUNKED_DATASET"):
        raise UnsupportedPynetdicom(
            f"pynetdicom {pynetdicom.__version__} has no STORE_SEND_CHUNKED_DATASET option: it would re-encode "
            f"every forwarded object; install pynetdicom {SUPPORTED['pynetdicom']}x"
        )
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.ENFORCE_UID_CONFORMANCE = False


def _apply_patches() -> bool:
    problems = unsupported_versions()
    if problems:
        log.warning(
            "%s: not the versions the router's pynetdicom patches were written for (pynetdicom %sx, pydicom %sx); "
            "running on pynetdicom's own code, without them",
            ", ".join(problems), SUPPORTED["pynetdicom"], SUPPORTED["pydicom"],
        )  # fmt: skip
        return False
    from router._pynetdicom import cancels, handshake, reactor, requestor, spool  # the first private names imported

    reactor.install()
    spool.install()  # after reactor (command.py's message_to_primitive): large C-STORE data sets go to a file
    requestor.install()  # a requestor reads the acceptor's answer once it waits for it (a quick A-ASSOCIATE-RJ)
    cancels.install()  # a C-CANCEL that came before its request was served is kept for it
    handshake.install()  # TLS client sockets: readable means application data (reactor.py reads before it sends)
    return True


# -- what the rest of the router calls ---------------------------------------------------------------------------
def keep_responses(assoc: Association) -> None:
    """For an association we requested: a response the reactor takes by mistake goes back to the ``send_*()`` call
    waiting for it (``responses.keep_responses``). Nothing without the patches."""
    if installed():
        from router._pynetdicom import responses

        responses.keep_responses(assoc)


def listener_ae(ae_title: str) -> AE:
    """The listener's AE: one that counts only the associations still in use against ``maximum_associations``
    (``server.ListenerAE``); pynetdicom's own AE without the patches."""
    if installed():
        from router._pynetdicom.server import ListenerAE

        return ListenerAE(ae_title=ae_title)
    from pynetdicom import AE

    return AE(ae_title=ae_title)


def tune_server(server: ThreadedAssociationServer) -> None:
    """Copy the listener's supported contexts cheaply for each association (``server.ContextList``); nothing
    without the patches."""
    if installed():
        from router._pynetdicom.server import ContextList

        server.contexts = ContextList(server.contexts)


def tls_server(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext,
    timeout: float,
    on_failed: Callable[[str, int, str], None],
    evt_handlers: list[Any],
) -> ThreadedAssociationServer:
    """A listener for ``ae`` serving associations over TLS, each connection's handshake on its own thread within
    ``timeout`` seconds, every failed one handed to ``on_failed(address, port, reason)`` (``handshake.py``). On any
    version: it uses pynetdicom's public server API only."""
    from router._pynetdicom import handshake

    return handshake.start_server(ae, address, context, timeout, on_failed, evt_handlers)


def reply_gate(assoc: Association) -> Gate | None:
    """On an association the peer opened, from its reactor thread (an event handler): a ``Gate`` through which a
    request can be sent to the peer once our response to the request being served is out; None without the
    patches (pynetdicom offers no way to do that)."""
    if not installed():
        return None
    from router._pynetdicom import gate

    return gate.install(assoc)


def replace_service_class(original: type[ServiceClass], replacement: type[ServiceClass]) -> None:
    """Have pynetdicom serve the SOP classes of ``original`` with ``replacement`` (a subclass), idempotent. Applied on
    any version: it replaces a public function, and the listener's C-MOVE and C-GET depend on it."""
    from router._pynetdicom import services

    services.replace(original, replacement)


def find_service(base: type[ServiceClass]) -> type[ServiceClass]:
    """``base`` serving C-FIND with pre-encoded identifiers and batched pending responses
    (``findresponses.EncodedFind``); ``base`` itself without the patches."""
    if not installed():
        return base
    from router._pynetdicom import findresponses

    return findresponses.find_service(base)


def encoded_identifiers(event: Any) -> bool:
    """Whether the EVT_C_FIND handler of ``event`` may yield pending identifiers as bytes, already encoded in the
    context's transfer syntax (only ``find_service`` classes say so)."""
    return bool(getattr(event, "router_encoded_identifiers", False))


def spool_large(ae: AE, tmp_dir: Path, head: Callable[[str, str, str], bytes]) -> None:
    """Receive the large C-STORE data sets of ``ae``'s associations into files in ``tmp_dir``, each beginning with
    ``head(sop_class, instance, transfer_syntax)`` (``spool.py``); nothing without the patches (memory as before)."""
    if installed():
        from router._pynetdicom import spool

        spool.spool_large(ae, tmp_dir, head)


def spooled(request: Any) -> Any:
    """The ``spool.SpooledObject`` a C-STORE request's object was received into (bytes-like, with ``path`` and
    ``sha256``), the ``OSError`` that kept it from being written, or None (the data set is in memory)."""
    if not installed():
        return None
    from router._pynetdicom import spool

    return spool.spooled(request)


def quiet_event_logging() -> None:
    """Bind none of pynetdicom's standard logging handlers (documented option ``LOG_HANDLER_LEVEL``)."""
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"
