"""Hostile input for the Part 10 header scan and the DICOM intake behind it (hypothesis; docs/security.md).

- ``scan_p10`` answers every input with a scan or None ("pydicom decides"), never an exception, in time linear in
  the input and without allocating what lengths claim; what it vouches for, pydicom reads whole.
- the intake (``Ingestor.ingest``, what a C-STORE and a STOW part go through) answers every input with one of its
  documented statuses: stored, or refused (0xC000 cannot decode, 0xA900 not the object announced or incomplete)
  and quarantined as received; it never raises.

Bounded: a few hundred examples each, no example database (``database=None``), the same examples every run
(``derandomize``), so CI sees what a developer saw.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from router.app import Router
from router.config import parse_config
from router.intake.envelope import Source, read_values_as_they_came
from router.intake.p10scan import MAX_NESTING, scan_p10

from peers import make_instance, pydicom_reads_whole, write_instances

BOUNDED = settings(
    max_examples=300,
    deadline=None,  # each example is checked against its own time bound below (a loaded CI machine stalls)
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PER_EXAMPLE = 2.0  # s: an example taking longer is a hang, whatever the machine


def objects(tmp: Path) -> list[bytes]:
    """A few real objects to mutate: plain, with nested sequences, encapsulated pixel data, implicit VR."""
    plain = make_instance()
    nested = make_instance()
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-A0100", "SRT", "Brain"
    outer = Dataset()
    outer.ConceptNameCodeSequence = [inner]
    nested.ContentSequence = [outer, outer]
    encapsulated = make_instance()
    encapsulated.PixelData = encapsulate([b"\xff\xd8" + bytes(100) + b"\xff\xd9"])
    encapsulated["PixelData"].VR = "OB"
    encapsulated.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    implicit = make_instance()
    implicit.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    return [p.read_bytes() for p in write_instances(tmp, [plain, nested, encapsulated, implicit])]


SAMPLES: list[bytes] = []  # filled by the fixture (kept out of the strategy's repr, which hypothesis prints)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    read_values_as_they_came()
    SAMPLES[:] = objects(tmp_path_factory.mktemp("fuzz-samples"))
    return SAMPLES


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real object with a few hostile edits: bytes overwritten, a length made huge, cut short, a slice repeated."""
    raw = bytearray(SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        if len(raw) < 2:
            break
        edit = draw(st.sampled_from(["overwrite", "huge length", "cut", "repeat", "insert"]))
        at = draw(st.integers(0, len(raw) - 1))
        if edit == "overwrite":
            raw[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "huge length":
            raw[at : at + 4] = struct.pack("<L", draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 1 << 24])))
        elif edit == "cut":
            del raw[at:]
        elif edit == "repeat":
            raw[at:at] = raw[at : at + draw(st.integers(1, 64))] * draw(st.integers(2, 50))
        else:
            raw[at:at] = draw(st.binary(max_size=32))
    return bytes(raw)


def timed_scan(raw: bytes) -> object:
    started = time.monotonic()
    result = scan_p10(raw)
    assert time.monotonic() - started < PER_EXAMPLE, f"scanning {len(raw)} bytes took too long"
    return result


@BOUNDED
@given(raw=st.binary(max_size=4096))
def test_any_bytes_get_an_answer(raw: bytes) -> None:
    for candidate in (raw, b"\0" * 128 + b"DICM" + raw):
        assert timed_scan(candidate) is None or candidate[128:132] == b"DICM"


def test_mutated_objects_get_an_answer_and_what_is_vouched_for_pydicom_reads(samples: list[bytes]) -> None:
    @BOUNDED
    @given(raw=mutated())
    def check(raw: bytes) -> None:
        scan = timed_scan(raw)
        if scan is not None:
            assert pydicom_reads_whole(raw), "the scan vouched for an object pydicom does not read whole"
            for tag in list(scan.elements)[:50]:
                scan.text(tag)  # never raises either

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check()


def nested(depth: int) -> bytes:
    """Sequences of undefined length nested ``depth`` deep (explicit VR little endian), closed properly."""
    sequence = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    opening = sequence + item
    return opening * depth + closing * depth


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 600, 20_000])
def test_sequences_nested_too_deep_are_left_to_pydicom_without_recursing(samples: list[bytes], depth: int) -> None:
    raw = samples[0] + nested(depth)  # appended after the object's last element: still one data set
    assert timed_scan(raw) is None


def test_lengths_claiming_gigabytes_allocate_nothing(samples: list[bytes]) -> None:
    raw = bytearray(samples[0])
    raw += struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0) + bytes(64)  # 4 GiB claimed, 64 B sent
    tracemalloc.start()
    try:
        assert scan_p10(bytes(raw)) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(raw) + 65536


# -- the intake behind it ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingestor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    workdir = tmp_path_factory.mktemp("fuzz-intake")
    (workdir / "rules").mkdir()
    router = Router(parse_config({"data_dir": "var", "rules_dir": "rules"}, workdir))
    try:
        yield router
    finally:
        router.ingestor.close()
        router.engine.dispose()


DOCUMENTED = {0x0000, 0x0111, 0xA900, 0xC000}  # stored (or a duplicate), a different duplicate, the two refusals


def test_the_intake_answers_every_mutated_object_with_a_documented_status(
    samples: list[bytes], ingestor: Router
) -> None:
    source = Source("stow", "", "", "127.0.0.1:1")

    @settings(BOUNDED, max_examples=150)
    @given(raw=mutated())
    def check(raw: bytes) -> None:
        started = time.monotonic()
        result = ingestor.ingestor.ingest(raw, source)
        assert time.monotonic() - started < PER_EXAMPLE * 2
        assert result.status in DOCUMENTED, (hex(result.status), result.reason)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check()
    quarantined = list((ingestor.config.data_dir / "quarantine").glob("*.dcm"))
    assert quarantined, "no mutation was refused: the strategy is too gentle"
