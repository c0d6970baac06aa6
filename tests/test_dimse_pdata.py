"""router._pynetdicom.pdata encodes DIMSE messages into P-DATA-TF PDUs itself: its bytes must be pynetdicom's, exactly.

Pure logic, compared with pynetdicom's own encoder (``DIMSEMessage.encode_msg`` + ``P_DATA_TF.encode``); the
network path is covered by every DIMSE test against DCMTK, Orthanc and pynetdicom peers."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu import P_DATA_TF

from router import _pynetdicom
from router._pynetdicom import pdata


def reference_bytes(msg: C_STORE_RQ | C_STORE_RSP, context_id: int, max_pdu: int) -> list[bytes]:
    """What pynetdicom itself would send: one encoded P-DATA-TF PDU per P-DATA primitive."""
    out = []
    for primitive in msg.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdata._from_primitive(pdu, primitive)  # pynetdicom's originals, whether or not install() ran
        out.append(bytes(pdata._encode(pdu)))
    return out


def split_pdus(stream: bytes) -> list[bytes]:
    pdus, offset = [], 0
    while offset < len(stream):
        assert stream[offset] == 0x04
        length = int.from_bytes(stream[offset + 2 : offset + 6], "big")
        pdus.append(stream[offset : offset + 6 + length])
        offset += 6 + length
    return pdus


def ours(msg: C_STORE_RQ | C_STORE_RSP, context_id: int, max_pdu: int) -> list[pdata.EncodedPData]:
    return list(pdata.encode_message(msg, context_id, max_pdu))


def store_request(pixels: int, tmp_path: Path | None = None) -> C_STORE_RQ:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientName = "PDATA^TEST"
    ds.BitsAllocated = 8
    ds.PixelData = bytes(range(256)) * (pixels // 256) + b"\x07" * (pixels % 256)
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 0
    if tmp_path is None:
        buf = BytesIO()
        dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
        primitive.DataSet = BytesIO(buf.getvalue())
    else:
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp_path / "object.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        _meta, offset = split_dataset(path)
        primitive._dataset_path = (path, offset)  # what Association.send_c_store(path) sets
    msg = C_STORE_RQ()
    msg.primitive_to_message(primitive)
    return msg


@pytest.mark.parametrize("max_pdu", [0, 16384, 262144, 1000, 20])
@pytest.mark.parametrize("pixels", [0, 1, 16378, 16379, 600_000, 3_000_000])
def test_same_bytes_as_pynetdicom_from_memory(max_pdu: int, pixels: int) -> None:
    msg = store_request(pixels)
    expected = reference_bytes(msg, 3, max_pdu)
    got = ours(msg, 3, max_pdu)
    stream = b"".join(bytes(p.encoded) for p in got)
    if max_pdu == 0:  # no limit: pynetdicom sends one PDV each; we cut the data set at UNLIMITED_FRAGMENT
        assert split_pdus(stream)[0] == expected[0]  # the command set
        data = b"".join(pdu[12:] for pdu in split_pdus(stream)[1:])
        assert data == expected[1][12:]
        assert all(len(pdu) <= pdata.UNLIMITED_FRAGMENT + 12 for pdu in split_pdus(stream))
    else:
        assert split_pdus(stream) == expected
    assert all(len(p.encoded) <= pdata.GROUP_BYTES or len(split_pdus(bytes(p.encoded))) == 1 for p in got)


@pytest.mark.parametrize("max_pdu", [1000, 16384, 65536, 4_000_000])
def test_same_bytes_as_pynetdicom_from_file(tmp_path: Path, max_pdu: int) -> None:
    msg = store_request(2_500_000, tmp_path)
    expected = reference_bytes(msg, 1, max_pdu)
    got = ours(msg, 1, max_pdu)
    pdus = split_pdus(b"".join(bytes(p.encoded) for p in got))
    if max_pdu > pdata.UNLIMITED_FRAGMENT:  # we cut smaller PDUs than the peer allows: same data, same flags
        assert pdus[0] == expected[0]
        assert b"".join(p[12:] for p in pdus[1:]) == b"".join(p[12:] for p in expected[1:])
        assert [p[11] for p in pdus[1:]] == [0x00] * (len(pdus) - 2) + [0x02]
    else:
        assert pdus == expected
    assert len(got) > 1  # several primitives: the DUL never holds the whole object in one
    assert all(len(p.encoded) <= pdata.GROUP_BYTES or len(split_pdus(bytes(p.encoded))) == 1 for p in got)


def test_a_response_without_data_set_is_one_pdu() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = generate_uid()
    rsp.Status = 0xA700
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    [got] = ours(msg, 5, 16384)
    assert [bytes(got.encoded)] == reference_bytes(msg, 5, 16384)


def test_the_pdu_sends_the_encoded_bytes_as_they_are() -> None:
    assert _pynetdicom.install()  # pdata.install() among the router's patches
    primitive = pdata.EncodedPData(bytearray(b"\x04\x00\x00\x00\x00\x07\x00\x00\x00\x03\x01\x03\xff"))
    assert bytes(P_DATA_TF(primitive).encode()) == bytes(primitive.encoded)
