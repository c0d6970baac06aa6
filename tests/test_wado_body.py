"""The WADO-RS retrieve body (router.listeners.http.retrieve_body): parts a batch at a time, a large file read in
pieces, never whole; its length known in advance when everything goes as stored."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from router.listeners.http.multipart import parts
from router.listeners.http.retrieve_body import BATCH, RetrieveBody
from router.listeners.http.store_lookup import StoredRef

AS_STORED = "1.2.840.10008.1.2.1"


def refs_for(tmp_path: Path, sizes: list[int]) -> list[StoredRef]:
    refs = []
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.dcm").write_bytes(bytes([i % 256]) * size)
        refs.append(StoredRef("1.2", "1.2.3", f"1.2.3.{i}", "1.2.840.10008.5.1.4.1.1.7", AS_STORED, f"{i}.dcm"))
    return refs


def opener(tmp_path: Path, opened: list[IO[bytes]]):  # type: ignore[no-untyped-def]
    def open_object(ref: StoredRef) -> IO[bytes]:
        opened.append((tmp_path / ref.path).open("rb"))
        return opened[-1]

    return open_object


def whole(body: RetrieveBody) -> tuple[bytes, list[int]]:
    pieces = []
    while not body.finished:
        pieces.append(body.next_batch())
    return b"".join(pieces), [len(p) for p in pieces]


def test_small_parts_share_a_batch_a_large_one_is_read_in_pieces(tmp_path: Path) -> None:
    sizes = [5000] * 50 + [3 * BATCH + 17] + [10]
    refs = refs_for(tmp_path, sizes)
    opened: list[IO[bytes]] = []
    body = RetrieveBody(refs, opener(tmp_path, opened), lambda data, ref: (data, AS_STORED), "*", "b0und")
    data, pieces = whole(body)
    assert len(data) == body.length(sizes)
    assert max(pieces) <= BATCH + 5000 + 200  # a batch ends at the first part that passes BATCH
    assert len(pieces) <= 6  # not one piece (and thread hop) per part
    found = [p.body for p in parts(io.BytesIO(data), "b0und")]
    assert found == [(tmp_path / r.path).read_bytes() for r in refs]
    assert body.sent == len(refs) and all(f.closed for f in opened)


def test_a_converted_instance_is_sent_in_the_syntax_it_got(tmp_path: Path) -> None:
    refs = refs_for(tmp_path, [100, 200])
    implicit = "1.2.840.10008.1.2"
    body = RetrieveBody(refs, opener(tmp_path, []), lambda data, ref: (data[:10], implicit), implicit, "b")
    data, _ = whole(body)
    found = list(parts(io.BytesIO(data), "b"))
    assert [p.headers["content-type"] for p in found] == [f"application/dicom; transfer-syntax={implicit}"] * 2
    assert [p.body for p in found] == [b"\x00" * 10, b"\x01" * 10]


def test_a_body_closed_half_way_closes_its_file_and_counts_what_went_whole(tmp_path: Path) -> None:
    refs = refs_for(tmp_path, [10, 4 * BATCH])
    opened: list[IO[bytes]] = []
    body = RetrieveBody(refs, opener(tmp_path, opened), lambda data, ref: (data, AS_STORED), "*", "b")
    body.next_batch()  # the first part whole, the start of the second
    assert not body.finished
    body.close()  # the client went away
    assert body.sent == 1 and all(f.closed for f in opened)
