"""router.listeners.dimse.p10 writes the file meta pynetdicom would write, byte for byte (pure logic)."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pytest
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from router.listeners.dimse.p10 import PREAMBLE, file_meta, p10

CASES = [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1"),  # odd, odd, odd lengths
    ("1.2.840.10008.5.1.4.1.1.7", "1.2.34", "1.2.840.10008.1.2"),  # even instance UID, even syntax
    ("1.3.46.670589.11.0.0.12.1", "2.25.329800735698586629295641978511506172918", "1.2.840.10008.1.2.4.50"),
    ("1.2.840.113619.4.27", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24", "1.2.840.10008.1.2.5"),
]


@pytest.mark.parametrize(("sop_class", "sop_instance", "syntax"), CASES)
def test_file_meta_is_pynetdicoms(sop_class: str, sop_instance: str, syntax: str) -> None:
    expected = encode_file_meta(
        create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=syntax)
    )
    assert file_meta(sop_class, sop_instance, syntax) == expected


def event(sop_instance: str, encoded_dataset: bytes = b"") -> SimpleNamespace:
    request = SimpleNamespace(
        AffectedSOPClassUID=CASES[0][0], AffectedSOPInstanceUID=sop_instance, DataSet=BytesIO(b"\x08\x00\x16\x00")
    )
    return SimpleNamespace(
        request=request,
        context=SimpleNamespace(transfer_syntax="1.2.840.10008.1.2"),
        encoded_dataset=lambda include_meta: encoded_dataset,
    )


def test_p10_is_preamble_meta_and_data_set() -> None:
    got = p10(event("1.2.3.4"))
    assert got == PREAMBLE + file_meta(CASES[0][0], "1.2.3.4", "1.2.840.10008.1.2") + b"\x08\x00\x16\x00"


def test_a_uid_that_is_not_ascii_goes_the_pynetdicom_way() -> None:
    assert p10(event("1.2.\u00e9", encoded_dataset=b"pynetdicom's own")) == b"pynetdicom's own"
