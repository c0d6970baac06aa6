"""The STOW-RS body reader: a multipart body given in pieces of any size reads as the whole body does, and a large
part goes to a flushed, hashed temp file that reads as bytes (router.listeners.http.multipart_stream, received)."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.listeners.http.multipart import MultipartError, build, parts
from router.listeners.http.multipart_stream import MAX_HEADER_AREA, PartParser
from router.listeners.http.received import ReceivedFile, Spill

BOUNDED = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def read_in_pieces(body: bytes, boundary: str, cuts: list[int]) -> list[tuple[dict[str, str], bytes]] | str:
    """The parts read from ``body`` fed in pieces cut at ``cuts``, or the error's message."""
    try:
        parser = PartParser(boundary)
        found = []
        edges = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
        for start, end in itertools.pairwise(edges):
            found += [(p.headers, p.body) for p in parser.feed(body[start:end])]
        parser.close()
        return found
    except MultipartError as exc:
        return str(exc)


def read_whole(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]] | str:
    try:
        return [(p.headers, p.body) for p in parts(io.BytesIO(body), boundary)]
    except MultipartError as exc:
        return str(exc)


@BOUNDED
@given(
    payloads=st.lists(st.binary(max_size=200), max_size=4),
    boundary=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=70),
    noise=st.sampled_from([b"", b"\r\n--", b"--", b"\r\n\r\n", b"\r\n", b"x"]),
    cut=st.integers(0, 5),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_a_body_in_pieces_reads_as_the_whole_body(
    payloads: list[bytes], boundary: str, noise: bytes, cut: int, cuts: list[int]
) -> None:
    body = b"preamble\r\n" + build([("application/dicom", p + noise) for p in payloads], boundary)
    body = body[: len(body) - cut]  # also bodies that end too early
    assert read_in_pieces(body, boundary, cuts) == read_whole(body, boundary)
    assert read_in_pieces(body, boundary, list(range(len(body)))) == read_whole(body, boundary)  # a byte at a time


def test_a_delimiter_line_without_end_is_refused_once_past_the_bound() -> None:
    parser = PartParser("b")
    parser.feed(b"--b")
    with pytest.raises(MultipartError, match="longer than"):
        parser.feed(b"x" * (MAX_HEADER_AREA + 1))


def test_a_large_part_goes_to_a_hashed_file_that_reads_as_bytes(tmp_path: Path) -> None:
    big, small = bytes(range(256)) * 400, b"small part"  # 102,400 bytes: over the part limit below
    spill = Spill(tmp_path, part_in_memory=64 * 1024)
    parser = PartParser("sep", spill.sink)
    body = build([("application/dicom", big), ("application/dicom", small)], "sep")
    found = [p.body for i in range(0, len(body), 7000) for p in parser.feed(body[i : i + 7000])]
    parser.close()
    on_disk, in_memory = found
    assert isinstance(on_disk, ReceivedFile) and on_disk[:] == big and len(on_disk) == len(big)
    assert on_disk.sha256 == hashlib.sha256(big).hexdigest() and on_disk.path.read_bytes() == big
    assert on_disk.path.parent == tmp_path and on_disk.path.suffix == ".part"  # start-up removes leftovers
    assert type(in_memory) is bytes and in_memory == small
    on_disk.close()
    spill.discard()
    assert list(tmp_path.iterdir()) == []


def test_the_request_budget_sends_later_parts_to_files(tmp_path: Path) -> None:
    spill = Spill(tmp_path, part_in_memory=1000, request=1500)
    parser = PartParser("sep", spill.sink)
    found = parser.feed(build([("application/dicom", b"a" * 900)] * 3, "sep"))
    parser.close()
    assert [isinstance(p.body, ReceivedFile) for p in found] == [False, True, True]
    assert all(p.body[:] == b"a" * 900 for p in found)  # a mapped file reads as bytes
    for p in found:
        if isinstance(p.body, ReceivedFile):
            p.body.close()
    spill.discard()


def test_a_body_cut_inside_a_large_part_leaves_no_file(tmp_path: Path) -> None:
    spill = Spill(tmp_path, part_in_memory=100)
    parser = PartParser("sep", spill.sink)
    parser.feed(build([("application/dicom", b"z" * 5000)], "sep")[:3000])
    with pytest.raises(MultipartError, match="not closed"):
        parser.close()
    spill.discard()
    assert list(tmp_path.iterdir()) == []


def test_parts_written_side_by_side_carry_their_file_and_digest(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    written = spill.written(b"payload")
    assert written == b"payload"
    assert written.path.read_bytes() == b"payload"  # type: ignore[attr-defined]
    assert written.sha256 == hashlib.sha256(b"payload").hexdigest()  # type: ignore[attr-defined]
    spill.discard()
    assert list(tmp_path.iterdir()) == []
