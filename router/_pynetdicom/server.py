"""The listener's AE and server, where pynetdicom's own take time or refuse what they should accept.

- ``ListenerAE`` counts against ``maximum_associations`` only the associations still in use. pynetdicom counts
  every association thread still alive, so one that was released, aborted or rejected a moment ago and is only
  winding down (its DUL waiting for the peer to close the connection) took a place: a modality that releases and
  at once opens the next association could be refused "local limit exceeded". It reads ``Association._kill``.
- ``ContextList`` holds the server's supported contexts. pynetdicom deep-copies them for every association it
  accepts: with ~190 contexts of ~35 transfer syntaxes each that took about 40 ms per association. UIDs are
  immutable strings, so a copy of each context with its own list of the same UIDs (``_transfer_syntax``) is as good
  and takes well under a millisecond.

pynetdicom 3.0; used through ``router._pynetdicom.listener_ae`` and ``tune_server``.
"""

from __future__ import annotations

import copy
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association


class ListenerAE(AE):
    """pynetdicom's AE, counting against ``maximum_associations`` only the associations still in use."""

    @property
    def active_associations(self) -> list[Association]:
        return [
            assoc
            for assoc in super().active_associations
            if not (assoc._kill or assoc.is_released or assoc.is_aborted or assoc.is_rejected)
        ]


class ContextList(list[Any]):
    """The listener's supported contexts, copied per association without a deep copy of every UID."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        out = []
        for cx in self:
            dup = copy.copy(cx)
            dup._transfer_syntax = list(cx._transfer_syntax)
            out.append(dup)
        return out
