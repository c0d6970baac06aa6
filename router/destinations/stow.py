"""The DICOMweb destination: a batch of queued objects in one STOW-RS request (httpx), judged per instance.

200: every instance delivered. 202 / 409: the Referenced SOP Sequence says which were stored, the Failed SOP
Sequence why the others were not (0xA700 out of resources: retried; any other reason: dead-lettered). Other
answers: 5xx, 401, 403, 408, 429 and network errors are retried with the forward backoff; any other 4xx (the peer
says the request itself is wrong) dead-letters the batch.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from router.config import AnyPeer, DicomwebPeer
from router.destinations.base import DestinationContext, Outcome, Unreachable
from router.destinations.payload import job_file
from router.statuses import SendVerdict
from router.store.models import Job

RETRY_HTTP = {401, 403, 408, 429}
RETRY_REASONS = {0xA700}


def _auth(peer: DicomwebPeer) -> tuple[dict[str, str], httpx.BasicAuth | None]:
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


class StowDestination:
    """One HTTP client (kept alive) for the batches of a round."""

    ordered: ClassVar[bool] = False

    def __init__(self, name: str, peer: AnyPeer, context: DestinationContext) -> None:
        assert isinstance(peer, DicomwebPeer)
        headers, auth = _auth(peer)
        self.url = peer.stow_url
        self.ctx = context
        self.client: httpx.Client | None = None
        self._headers, self._auth = headers, auth

    @property
    def alive(self) -> bool:
        return self.client is not None

    def send(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        if self.client is None:
            timeout = self.ctx.config.dicom.timeouts.dimse
            self.client = httpx.Client(timeout=timeout, headers=self._headers, auth=self._auth)
        try:
            with contextlib.ExitStack() as files:  # corrected copies are removed once the request is answered
                paths = [files.enter_context(job_file(self.ctx.engine, self.ctx.config, job)) for job in jobs]
                verdicts = self._post([(job.sop_uid, path) for job, path in zip(jobs, paths, strict=True)])
        except FileNotFoundError as exc:
            verdicts = [(SendVerdict.PERMANENT, f"a stored file is missing: {exc.filename}")] * len(jobs)
        for job, (verdict, reason) in zip(jobs, verdicts, strict=True):
            yield Outcome(job, verdict, None, reason)

    def _post(self, items: Sequence[tuple[str, Path]]) -> list[tuple[SendVerdict, str]]:
        """POST (sop_uid, file) items in one request; a verdict and reason per item, in order."""
        assert self.client is not None
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}  # fmt: skip
        try:
            response = self.client.post(self.url, content=_body([p for _, p in items], boundary), headers=headers)
        except httpx.TransportError as exc:
            self.close()
            raise Unreachable(f"{self.url}: {exc}") from exc
        return _verdicts(response, [uid for uid, _ in items])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _verdicts(response: httpx.Response, uids: list[str]) -> list[tuple[SendVerdict, str]]:
    status = response.status_code
    if status == 200:
        return [(SendVerdict.DONE, "200")] * len(uids)
    if status in (202, 409):
        try:
            answer = response.json()
        except ValueError:
            return [(SendVerdict.RETRY, f"HTTP {status} without a readable body")] * len(uids)
        stored, failed = _uids(answer, "00081199"), _uids(answer, "00081198")
        verdicts = []
        for uid in uids:
            if uid in stored:
                verdicts.append((SendVerdict.DONE, str(status)))
            elif uid in failed:
                reason = failed[uid]
                kind = SendVerdict.RETRY if reason in RETRY_REASONS else SendVerdict.PERMANENT
                verdicts.append((kind, f"HTTP {status}, failure reason 0x{reason or 0:04X}"))
            else:
                verdicts.append((SendVerdict.RETRY, f"HTTP {status} does not mention the instance"))
        return verdicts
    kind = SendVerdict.RETRY if status >= 500 or status in RETRY_HTTP else SendVerdict.PERMANENT
    return [(kind, f"HTTP {status}: {response.text[:200]}")] * len(uids)
