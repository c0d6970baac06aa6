"""``router import --to PEER``: the selected objects straight to a DICOM peer by C-STORE, not through the router's
store, as syngo.share import does. ``router.scu.commands.send`` does the sending: as few associations as the
presentation contexts allow (one for up to 128 SOP class and transfer syntax pairs), each object as read unless the
peer only takes another syntax (then the uncompressed fallback of ``router.scu.association``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from router.config import RouterConfig
from router.media.report import IMPORTED, REFUSED

if TYPE_CHECKING:
    from router.media.importer import Taken


def send_taken(config: RouterConfig, peer_name: str, taken: list[Taken], progress: bool = False) -> None:
    """Send ``taken`` to the peer; each one's outcome becomes imported or refused (with the peer's status)."""
    from router.scu import commands as scu
    from router.scu.association import AssociationFailed

    with tempfile.TemporaryDirectory(prefix="router-import-") as tmp:  # 0700: corrected objects, zip members
        paths: dict[Path, Taken] = {}
        for n, item in enumerate(taken):
            path = item.path
            if path is None:
                path = Path(tmp) / f"{n:06d}.dcm"
                path.write_bytes(item.raw)
            paths[path] = item
        try:
            peer = scu.peer_named(config, peer_name)
            outcome = scu.send(config, peer, list(paths), scu.Progress(f"C-STORE to {peer_name}", enabled=progress))
        except AssociationFailed as exc:
            for item in taken:
                item.outcome.outcome, item.outcome.reason = REFUSED, f"not sent to {peer_name}: {exc}"
            return
    failed = dict(outcome.failed)
    for path, item in paths.items():
        if path in failed:
            item.outcome.outcome, item.outcome.reason = REFUSED, f"{peer_name}: {failed[path]}"
        else:
            item.outcome.outcome, item.outcome.reason = IMPORTED, f"sent to {peer_name}"
