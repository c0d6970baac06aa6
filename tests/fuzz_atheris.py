"""Coverage-guided fuzzing (atheris, libFuzzer) of the router's parsers, run by tests/test_fuzz_atheris.py.

    python tests/fuzz_atheris.py TARGET [libFuzzer options] [seed folder]

TARGET is one of ``TARGETS``. Each target feeds the fuzzer's bytes to one parser and lets only its documented
refusals pass; anything else escapes, and libFuzzer reports it as a crash (exit code 1, the input in a
``crash-*`` file). libFuzzer's own limits catch the rest: ``-timeout`` (an input that takes longer is a hang) and
``-rss_limit_mb`` (memory past the bound). ``--seeds FOLDER`` writes the seed inputs of TARGET there and exits.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["router"]):
    from router.hl7.errors import Hl7Error
    from router.hl7.message import parse_message
    from router.intake.p10scan import scan_p10
    from router.listeners.http.multipart import MultipartError, parts
    from router.listeners.mllp import Deframer, MessageTooLarge


def p10scan(data: bytes) -> None:
    scan = scan_p10(b"\0" * 128 + b"DICM" + data)
    if scan is not None:
        for tag in list(scan.elements)[:20]:
            scan.text(tag)


def hl7(data: bytes) -> None:
    with contextlib.suppress(Hl7Error):
        parse_message(data, accepted_processing_ids=("P", "T", "D"))


def multipart(data: bytes) -> None:
    boundary, _, body = data.partition(b"\n")
    try:
        for _part in parts(io.BytesIO(body), boundary.decode("latin-1")):
            pass
    except MultipartError:
        pass


def mllp(data: bytes) -> None:
    frames = Deframer(max_message_bytes=512)
    try:
        for start in range(0, len(data), 7):  # fed in pieces, as reads arrive
            for message in frames.feed(data[start : start + 7]):
                assert len(message) <= 512
            assert len(frames.buf) <= 512
    except MessageTooLarge:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {"p10scan": p10scan, "hl7": hl7, "multipart": multipart, "mllp": mllp}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from (the fuzzer mutates them)."""
    hl7_message = (
        b"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101120000||ADT^A01|M1|P|2.5\rEVN|A01\rPID|1||P1^^^HOSP^MR||DOE^JOHN\r"
    )
    element = b"\x08\x00\x18\x00UI\x06\x001.2.3\x00"  # (0008,0018) UI "1.2.3"
    meta = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    sequence = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return {
        "p10scan": [meta + element, meta + sequence + element + closing + element],
        "hl7": [hl7_message, hl7_message.replace(b"|", b"#")],
        "multipart": [b"b\n--b\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--b--\r\n"],
        "mllp": [b"\x0b" + hl7_message + b"\x1c\r" + b"junk\x0b" + hl7_message + b"\x1c"],
    }[target]


def main() -> None:
    target = sys.argv[1]
    if sys.argv[2:3] == ["--seeds"]:
        folder = Path(sys.argv[3])
        folder.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(seeds(target)):
            (folder / f"seed-{number}").write_bytes(seed)
        return
    check = TARGETS[target]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
