"""Serving a pynetdicom service class's SOP classes with a subclass of it.

pynetdicom picks the service class of a request with ``uid_to_service_class`` (``pynetdicom.sop_class``), which
``Association`` imported into its module; ``register_uid`` accepts only pynetdicom's own service classes. The
listener's C-MOVE and C-GET send stored files as they are, which pynetdicom's Query/Retrieve service cannot (its
handlers must yield decoded datasets), so ``replace`` has ``Association`` look up the router's subclass instead:
``router.listeners.dimse.qr_retrieve.RetrieveService``. Written for pynetdicom 3.0; the name it replaces is public,
so it is applied on any version (``router._pynetdicom.replace_service_class``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import association
from pynetdicom.service_class import ServiceClass

_lock = threading.Lock()
_replacements: dict[type[ServiceClass], type[ServiceClass]] = {}


def replace(original: type[ServiceClass], replacement: type[ServiceClass]) -> None:
    """Serve ``original``'s SOP classes with ``replacement`` from now on (idempotent)."""
    if not issubclass(replacement, original):
        raise TypeError(f"{replacement.__name__} is not a subclass of {original.__name__}")
    with _lock:
        _replacements[original] = replacement
        lookup = association.uid_to_service_class
        if getattr(lookup, "router_replacements", None) is not _replacements:
            association.uid_to_service_class = _lookup_through(lookup)  # type: ignore[assignment]


def _lookup_through(lookup: Callable[[str], Any]) -> Callable[[str], Any]:
    def router_lookup(uid: str) -> Any:
        found = lookup(uid)
        return _replacements.get(found, found)

    router_lookup.router_replacements = _replacements  # type: ignore[attr-defined]
    return router_lookup
