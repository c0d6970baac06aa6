"""storescu -> router -> storescp with a mixed corpus: every object arrives byte-identical, exactly once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom
import pytest

from peers import (
    RouterProcess,
    StoreSCP,
    dataset_bytes,
    encapsulated_instances,
    pydicom_corpus,
    same_content,
    storescu,
    wait_for,
    write_instances,
)

pytestmark = pytest.mark.interop  # DCMTK storescu, storescp, dcmdump

DEFLATED = "1.2.840.10008.1.2.1.99"
# storescu proposes one family of syntaxes per run (as a modality configured for one compression would)
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.100": "-xm",
    "1.2.840.10008.1.2.4.101": "-xh",
    "1.2.840.10008.1.2.4.102": "-xn",
    "1.2.840.10008.1.2.4.103": "-xl",
    "1.2.840.10008.1.2.4.107": "-x4",
    "1.2.840.10008.1.2.4.108": "-x5",
}
EXTRA_SYNTAXES = [
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile
]


def test_mixed_corpus_forwarded_byte_identical_exactly_once(
    workdir: Path, dest: StoreSCP, forwarding_router: RouterProcess
) -> None:
    corpus = pydicom_corpus() + write_instances(workdir / "generated", encapsulated_instances(EXTRA_SYNTAXES))
    assert len(corpus) >= 40, "pydicom's test files should give a real mixed corpus"
    by_ts: dict[str, list[Path]] = {}
    for p in corpus:
        by_ts.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID), []).append(p)
    ts_seen = set(by_ts)
    expected = {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        *EXTRA_SYNTAXES,
    }
    assert expected <= ts_seen
    assert len([p for p in corpus if p.name.startswith("chr")]) >= 12  # distinct SOP instances

    for ts, files in by_ts.items():  # -R: only the contexts the files need, so nothing is converted
        result = storescu(forwarding_router.port, files, extra=("-R", PROPOSE[ts]))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "E:" not in result.stderr, result.stderr

    db = sqlite3.connect(forwarding_router.data_dir / "router.db")
    stored = dict(db.execute("select sop_uid, path from instance").fetchall())
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in corpus}
    assert set(stored) == set(by_uid), "every object sent is in the index"

    wait_for(lambda: len(dest.received()) >= len(corpus), 120, what="all objects at the destination")
    received = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in dest.received()}
    assert len(dest.received()) == len(corpus), "nothing arrives twice"
    assert set(received) == set(by_uid)
    for uid, original in by_uid.items():
        kept = forwarding_router.data_dir / stored[uid]
        if pydicom.dcmread(kept, stop_before_pixels=True).file_meta.TransferSyntaxUID == DEFLATED:
            # storescp inflates and re-deflates (padding the stream to even length) when writing its file
            assert same_content(received[uid], kept), f"{original.name} changed on the way"
        else:
            assert dataset_bytes(received[uid]) == dataset_bytes(kept), f"{original.name} changed on the way"
        # storescu re-encodes while sending (it may drop group lengths): compare the original after parsing
        assert same_content(kept, original), f"{original.name} not stored as received"
    states = dict(db.execute("select state, count(*) from job group by state").fetchall())
    assert states == {"done": len(corpus)}
