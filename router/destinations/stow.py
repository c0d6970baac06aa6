"""Forwarding to a DICOMweb peer: a batch of queued objects in one STOW-RS request (httpx), judged per instance.

200: every instance delivered. 202 / 409: the Referenced SOP Sequence says which were stored, the Failed SOP
Sequence why the others were not (0xA700 out of resources: retried; any other reason: dead-lettered). Other
answers: 5xx, 401, 403, 408, 429 and network errors are retried with the forward backoff; any other 4xx (the peer
says the request itself is wrong) dead-letters the batch.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from router.config import Peer

RETRY_HTTP = {401, 403, 408, 429}
RETRY_REASONS = {0xA700}


class StowVerdict(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    PERMANENT = "permanent"


class StowUnreachable(ConnectionError):
    pass


def _auth(peer: Peer) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if peer.auth is None:
        return {}, None
    if peer.auth.bearer_token:
        return {"Authorization": f"Bearer {peer.auth.bearer_token}"}, None
    assert peer.auth.username is not None and peer.auth.password is not None
    return {}, httpx.BasicAuth(peer.auth.username, peer.auth.password)


def _body(paths: Sequence[Path], boundary: str) -> Iterator[bytes]:
    for path in paths:  # one file in memory at a time
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("latin-1")
        yield path.read_bytes()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def _uids(answer: dict[str, Any], key: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in answer.get(key, {}).get("Value", []) or []:
        uid = (item.get("00081155", {}).get("Value") or [""])[0]
        reason = (item.get("00081197", {}).get("Value") or [None])[0]
        out[str(uid)] = int(reason) if reason is not None else None
    return out


class StowLink:
    """One HTTP client (kept alive) for the batches of a round."""

    def __init__(self, peer: Peer, timeout: float) -> None:
        assert peer.stow_url is not None
        headers, auth = _auth(peer)
        self.url = peer.stow_url
        self.client = httpx.Client(timeout=timeout, headers=headers, auth=auth)
        self.alive = True

    def send(self, items: Sequence[tuple[str, Path]]) -> list[tuple[StowVerdict, str]]:
        """POST (sop_uid, file) items in one request; a verdict and reason per item, in order."""
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}  # fmt: skip
        try:
            response = self.client.post(self.url, content=_body([p for _, p in items], boundary), headers=headers)
        except httpx.TransportError as exc:
            self.alive = False
            raise StowUnreachable(f"{self.url}: {exc}") from exc
        status = response.status_code
        if status == 200:
            return [(StowVerdict.DONE, "200")] * len(items)
        if status in (202, 409):
            try:
                answer = response.json()
            except ValueError:
                return [(StowVerdict.RETRY, f"HTTP {status} without a readable body")] * len(items)
            stored, failed = _uids(answer, "00081199"), _uids(answer, "00081198")
            verdicts = []
            for uid, _ in items:
                if uid in stored:
                    verdicts.append((StowVerdict.DONE, str(status)))
                elif uid in failed:
                    reason = failed[uid]
                    kind = StowVerdict.RETRY if reason in RETRY_REASONS else StowVerdict.PERMANENT
                    verdicts.append((kind, f"HTTP {status}, failure reason 0x{reason or 0:04X}"))
                else:
                    verdicts.append((StowVerdict.RETRY, f"HTTP {status} does not mention the instance"))
            return verdicts
        kind = StowVerdict.RETRY if status >= 500 or status in RETRY_HTTP else StowVerdict.PERMANENT
        return [(kind, f"HTTP {status}: {response.text[:200]}")] * len(items)

    def close(self) -> None:
        self.client.close()
        self.alive = False
