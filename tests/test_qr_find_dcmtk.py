"""DCMTK findscu against the router's C-FIND SCP: Patient Root (-P), Study Root (-S) and Patient/Study Only (-O).

The router (a ``router serve`` process) holds pydicom's test files and a generated corpus. Every expected answer is
computed by ``qr_peers`` from the files themselves; each test asserts the exact set of entities returned and the
values of the return keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from cancel_proxy import HoldAfterFirstAnswer
from peers import RouterProcess, meta_names_data_set, pydicom_corpus, send_datasets, write_instances
from qr_peers import (
    Corpus,
    consistent,
    findscu,
    generated_corpus,
    in_range,
    name_matches,
    record_of,
    text,
    text_matches,
    time_ceil,
)

pytestmark = pytest.mark.interop  # DCMTK findscu, dcmdump

BULK = 300  # images in one series, for the cancel tests
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

Loaded = tuple[RouterProcess, Corpus, Path]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    workdir = tmp_path_factory.mktemp("qr-find")
    generated = write_instances(workdir / "generated", generated_corpus(bulk=BULK))
    files = consistent([*filter(meta_names_data_set, pydicom_corpus()), *generated])
    router = RouterProcess(workdir).start()
    try:
        assert send_datasets(router.port, files) == [0] * len(files)
        yield router, Corpus([record_of(p) for p in files]), workdir
    finally:
        router.stop()


def study_of(corpus: Corpus, description: str) -> str:
    return corpus.where(StudyDescription=description)[0]["StudyInstanceUID"]


# -- Patient Root --------------------------------------------------------------------------------------------------
def test_patient_level_names_match_without_case_or_accents(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    for query in ["mul*", "MÜLLER^JÜRGEN", "buc^jerome", "*^anna", "o'brien*", "compressedsamples^?r1", "yamada^tarou"]:
        res = findscu(
            router.port, "-P",
            ["QueryRetrieveLevel=PATIENT", f"PatientName={query}", "PatientID", "SpecificCharacterSet=ISO_IR 192"], wd,
        )  # fmt: skip
        assert res.status == 0x0000, res.log
        expected = corpus.matching("PATIENT", lambda r, q=query: name_matches(q, r["PatientName"]))  # type: ignore[misc]
        assert expected, query
        assert res.keys("PatientID") == expected, query
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientName=mul*", "PatientID"], wd)
    names = {text(ds, "PatientID"): text(ds, "PatientName") for ds in res.responses}
    assert names == {"QR-P1": "Müller^Jürgen", "QR-P2": "MULLER^ANNA"}  # returned as stored, in a charset that fits


def test_patient_level_other_keys(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID=QR-P?", "PatientBirthDate=-19850101",
                                      "PatientSex", "NumberOfPatientRelatedStudies",
                                      "NumberOfPatientRelatedInstances"], wd)  # fmt: skip
    assert res.status == 0
    assert res.keys("PatientID") == {"QR-P1", "QR-P2"}
    for ds in res.responses:
        records = corpus.where(PatientID=ds.PatientID)
        assert ds.PatientSex == records[0]["PatientSex"]
        assert int(ds.NumberOfPatientRelatedStudies) == len({r["StudyInstanceUID"] for r in records})
        assert int(ds.NumberOfPatientRelatedInstances) == len(records)


def test_patient_root_study_series_and_image_levels(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P1", "StudyInstanceUID",
                                      "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                      "NumberOfStudyRelatedInstances", "AccessionNumber"], wd)  # fmt: skip
    assert res.status == 0
    assert res.keys("StudyInstanceUID") == corpus.matching("STUDY", lambda r: r["PatientID"] == "QR-P1")
    for ds in res.responses:
        records = corpus.where(StudyInstanceUID=ds.StudyInstanceUID)
        assert text(ds, "ModalitiesInStudy").split("\\") == sorted({r["Modality"] for r in records})
        assert int(ds.NumberOfStudyRelatedSeries) == len({r["SeriesInstanceUID"] for r in records})
        assert int(ds.NumberOfStudyRelatedInstances) == len(records)
        assert ds.PatientID == "QR-P1"  # the unique key of the level above is returned too

    study = study_of(corpus, "CT HEAD")
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=SERIES", "PatientID=QR-P1", f"StudyInstanceUID={study}",
                                      "SeriesInstanceUID", "Modality", "BodyPartExamined", "SeriesNumber",
                                      "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                                      "PerformedProcedureStepStartTime"], wd)  # fmt: skip
    assert res.status == 0
    assert res.keys("SeriesInstanceUID") == corpus.matching("SERIES", lambda r: r["StudyInstanceUID"] == study)
    for ds in res.responses:
        records = corpus.where(SeriesInstanceUID=ds.SeriesInstanceUID)
        first = records[0]
        assert (ds.Modality, ds.BodyPartExamined, str(ds.SeriesNumber)) == (
            first["Modality"], first["BodyPartExamined"], first["SeriesNumber"],
        )  # fmt: skip
        assert int(ds.NumberOfSeriesRelatedInstances) == len(records)
        assert text(ds, "PerformedProcedureStepStartDate") == first["PerformedProcedureStepStartDate"]
        assert text(ds, "PerformedProcedureStepStartTime") == first["PerformedProcedureStepStartTime"]

    ct = corpus.where(StudyInstanceUID=study, Modality="CT")
    wanted = [ct[0]["SOPInstanceUID"], ct[2]["SOPInstanceUID"]]
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=IMAGE", "PatientID=QR-P1", f"StudyInstanceUID={study}",
                                      f"SeriesInstanceUID={ct[0]['SeriesInstanceUID']}",
                                      "SOPInstanceUID=" + "\\".join([*wanted, "1.2.3.4.5"]), "InstanceNumber",
                                      "ImageType", "SOPClassUID"], wd)  # fmt: skip
    assert res.status == 0
    assert res.keys("SOPInstanceUID") == set(wanted)
    for ds in res.responses:
        assert text(ds, "ImageType") == "ORIGINAL\\PRIMARY\\AXIAL"
        assert str(ds.InstanceNumber) == corpus.by_uid("SOPInstanceUID", ds.SOPInstanceUID)["InstanceNumber"]


# -- Study Root ----------------------------------------------------------------------------------------------------
def test_study_date_and_time_ranges(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    for query in ["20040101-20041231", "-20031231", "20170101-", "20240102", "19970424", "20240101-20240102"]:
        res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", f"StudyDate={query}", "StudyInstanceUID"], wd)
        assert res.status == 0, res.log
        expected = corpus.matching("STUDY", lambda r, q=query: in_range(q, r["StudyDate"]))  # type: ignore[misc]
        assert expected, query
        assert res.keys("StudyInstanceUID") == expected, query
    for query in ["0700-1100", "-0600", "2200-", "0930", "1200-1400"]:
        res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", f"StudyTime={query}", "StudyInstanceUID"], wd)
        assert res.status == 0
        expected = corpus.matching("STUDY", lambda r, q=query: in_range(q, r["StudyTime"], time_ceil))  # type: ignore[misc]
        assert expected, query
        assert res.keys("StudyInstanceUID") == expected, query


def test_uid_lists_and_wildcards(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    uids = sorted(corpus.matching("STUDY"))[:3]
    res = findscu(
        router.port, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join([*uids, "1.2.3"])], wd
    )
    assert res.status == 0
    assert res.keys("StudyInstanceUID") == set(uids)
    for keyword, query in [
        ("AccessionNumber", "ACC%*"),  # % and _ are ordinary characters in DICOM
        ("AccessionNumber", "ACC_?"),
        ("AccessionNumber", "ACC?1"),
        ("AccessionNumber", "B-1*"),
        ("PatientID", "SCS*"),
        ("StudyDescription", "*HEAD"),
        ("StudyID", "?CT1"),
        ("PatientID", "qr-p*"),  # case-sensitive: nothing
    ]:
        res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", f"{keyword}={query}", "StudyInstanceUID"], wd)
        assert res.status == 0
        expected = corpus.matching("STUDY", lambda r, k=keyword, q=query: text_matches(q, r[k]))  # type: ignore[misc]
        assert res.keys("StudyInstanceUID") == expected, (keyword, query)
    res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", "AccessionNumber=ACC%*", "StudyInstanceUID"], wd)
    assert res.keys("StudyInstanceUID") == {study_of(corpus, "CT HEAD")}


def test_modalities_in_study(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    for query in ["MR", "CT\\US", "N?"]:
        res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", f"ModalitiesInStudy={query}"], wd)
        assert res.status == 0
        expected = corpus.matching("STUDY", lambda r, q=query: text_matches(q, r["Modality"]))  # type: ignore[misc]
        assert res.keys("StudyInstanceUID") == expected, query
        for ds in res.responses:  # every modality of a matching study, not only the matching ones
            modalities = sorted({r["Modality"] for r in corpus.where(StudyInstanceUID=ds.StudyInstanceUID)})
            assert text(ds, "ModalitiesInStudy") == "\\".join(m for m in modalities if m)


def test_request_attributes_sequence_matching(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    study = study_of(corpus, "CT HEAD")
    ct, mr = (corpus.where(StudyInstanceUID=study, Modality=m)[0]["SeriesInstanceUID"] for m in ("CT", "MR"))

    def series_query(*item: str) -> dict[str, list[tuple[str, str]]]:
        keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", "SeriesInstanceUID"]
        keys += [f"RequestAttributesSequence[0].{k}" for k in item] or ["RequestAttributesSequence"]
        res = findscu(router.port, "-S", keys, wd)
        assert res.status == 0, res.log
        return {
            ds.SeriesInstanceUID: [
                (text(i, "RequestedProcedureID"), text(i, "ScheduledProcedureStepID"))
                for i in ds.RequestAttributesSequence
            ]
            for ds in res.responses
        }

    both = ("RequestedProcedureID", "ScheduledProcedureStepID")
    assert series_query(f"{both[0]}=RP1*", both[1]) == {ct: [("RP100", "SPS1")]}
    assert series_query(f"{both[0]}=RP*", f"{both[1]}=SPS1") == {ct: [("RP100", "SPS1")], mr: [("RP300", "SPS1")]}
    assert series_query(f"{both[0]}=RP2*", f"{both[1]}=SPS1") == {}  # both keys must match within one item
    assert series_query(f"{both[0]}=RP200", both[1]) == {ct: [("RP200", "SPS2")]}
    assert series_query() == {ct: [("RP100", "SPS1"), ("RP200", "SPS2")], mr: [("RP300", "SPS1")]}  # universal


def test_every_entity_at_every_level(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    res = findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], wd)
    assert res.status == 0
    assert res.keys("StudyInstanceUID") == corpus.matching("STUDY")
    assert len(res.responses) == len(corpus.matching("STUDY"))
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID"], wd)
    assert res.keys("PatientID") == corpus.matching("PATIENT")
    assert len(res.responses) == len(corpus.matching("PATIENT"))  # one per patient (no issuers in this corpus)
    for study in sorted(corpus.matching("STUDY")):
        res = findscu(router.port, "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}"], wd)
        series = corpus.matching("SERIES", lambda r, s=study: r["StudyInstanceUID"] == s)  # type: ignore[misc]
        assert res.keys("SeriesInstanceUID") == series, study
        for uid in sorted(series):
            keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}", f"SeriesInstanceUID={uid}"]
            res = findscu(router.port, "-S", keys, wd)
            images = corpus.matching("IMAGE", lambda r, u=uid: r["SeriesInstanceUID"] == u)  # type: ignore[misc]
            assert res.keys("SOPInstanceUID") == images, uid
            assert len(res.responses) == len(images)


# -- Patient/Study Only (retired) ---------------------------------------------------------------------------------
def test_patient_study_only_model(loaded: Loaded) -> None:
    router, corpus, wd = loaded
    res = findscu(router.port, "-O", ["QueryRetrieveLevel=PATIENT", "PatientName=mul*", "PatientID"], wd)
    assert res.status == 0
    assert res.keys("PatientID") == {"QR-P1", "QR-P2"}
    res = findscu(router.port, "-O", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P2", "StudyDescription"], wd)
    assert res.status == 0
    assert res.keys("StudyInstanceUID") == corpus.matching("STUDY", lambda r: r["PatientID"] == "QR-P2")
    assert res.keys("StudyDescription") == {"CT CHEST", "MR HEAD"}
    res = findscu(router.port, "-O", ["QueryRetrieveLevel=SERIES", "PatientID=QR-P2"], wd)
    assert res.statuses == [0xA900]  # no series level in this model


# -- character sets, refusals, cancel ---------------------------------------------------------------------------
def test_specific_character_set_both_ways(loaded: Loaded) -> None:
    router, _corpus, wd = loaded

    def one(pid: str, charset: str | None) -> tuple[str, str]:
        keys = ["QueryRetrieveLevel=PATIENT", f"PatientID={pid}", "PatientName"]
        res = findscu(router.port, "-P", keys + ([f"SpecificCharacterSet={charset}"] if charset else []), wd)
        assert res.status == 0 and len(res.responses) == 1, res.log
        return text(res.responses[0], "SpecificCharacterSet"), text(res.responses[0], "PatientName")

    assert one("SCSFREN", "ISO_IR 100") == ("ISO_IR 100", "Buc^Jérôme")  # answered in the request's charset
    assert one("SCSFREN", None) == ("ISO_IR 192", "Buc^Jérôme")  # not ASCII: UTF-8
    assert one("SCSGREEK", "ISO_IR 100") == ("ISO_IR 192", "Διονυσιος")  # does not fit Latin-1: UTF-8
    assert one("SCSGREEK", "ISO_IR 126") == ("ISO_IR 126", "Διονυσιος")
    assert one("H31EXAMPLE", "\\ISO 2022 IR 87") == ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert one("QR-P3", None) == ("ISO_IR 192", "O'Brien^Seán")
    assert one("1CT1", None) == ("", "CompressedSamples^CT1")  # plain ASCII: no (0008,0005)
    # a request value in the requestor's character set is decoded before matching
    res = findscu(router.port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientName=Διονυσιος",
                                      "SpecificCharacterSet=ISO_IR 192", "PatientID"], wd)  # fmt: skip
    assert res.keys("PatientID") == {"SCSGREEK"}


def test_identifiers_that_do_not_fit_are_refused(loaded: Loaded) -> None:
    router, _corpus, wd = loaded
    refused = [
        ("-S", ["QueryRetrieveLevel=PATIENT", "PatientID"], 0xA900),  # no patient level in Study Root
        ("-P", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], 0xA900),  # hierarchical: Patient ID needed
        ("-P", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P*"], 0xA900),  # ... as a single value
        ("-S", ["QueryRetrieveLevel=SERIES", "Modality=CT"], 0xA900),  # ... and the Study Instance UID
        ("-S", ["QueryRetrieveLevel=FRAME"], 0xA900),
        ("-S", ["PatientName=*"], 0xA900),  # no Query/Retrieve Level at all
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=2024-1-1"], 0xC001),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyTime=9"], 0xC001),
    ]
    for model, keys, status in refused:
        res = findscu(router.port, model, keys, wd)
        assert res.statuses == [status], (model, keys, res.log)
    # and the server carries on
    assert findscu(router.port, "-S", ["QueryRetrieveLevel=STUDY", "StudyID=S3"], wd).statuses == [0xFF00, 0x0000]


def test_cancel_stops_the_answer(loaded: Loaded) -> None:
    """A C-CANCEL that arrives while the answer is being produced ends it with 0xFE00 within a few answers: sent
    (pynetdicom) right behind the C-FIND request, so that it is in the router's socket before the first
    answer, the router's read turns and its bound on queued answers (32) make it seen, whatever the machine's load."""
    router, corpus, _wd = loaded
    bulk = next(r for r in corpus.records if r["StudyDescription"] == "UNDATED")
    keys = Dataset()
    keys.QueryRetrieveLevel = "IMAGE"
    keys.StudyInstanceUID, keys.SeriesInstanceUID = bulk["StudyInstanceUID"], bulk["SeriesInstanceUID"]
    keys.SOPInstanceUID = ""
    statuses, answers = find_then_cancel(router.port, keys)
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses[-3:]]
    assert answers < 40, answers  # the answers already queued when the cancel was read, at most
    statuses, answers = find_then_cancel(router.port, keys, cancel=False)  # and the same query answers whole
    assert statuses[-1] == 0x0000 and answers == BULK


def find_then_cancel(port: int, keys: Dataset, cancel: bool = True) -> tuple[list[int], int]:
    """A Study Root C-FIND (message 1) and, with ``cancel``, its C-CANCEL sent the moment the request is out
    (``EVT_DIMSE_SENT``), without waiting for an answer; every status received, and how many pending answers came."""

    def sent(event: evt.Event) -> None:
        if cancel and type(event.message).__name__ == "C_FIND_RQ":
            event.assoc.send_c_cancel(1, query_model=STUDY_ROOT_FIND)

    ae = AE(ae_title="CANCELSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER", evt_handlers=[(evt.EVT_DIMSE_SENT, sent)])
    assert assoc.is_established
    try:
        statuses = [int(status.Status) for status, _identifier in assoc.send_c_find(keys, STUDY_ROOT_FIND, msg_id=1)]
    finally:
        assoc.release()
    return statuses, sum(s in (0xFF00, 0xFF01) for s in statuses)


def test_findscu_cancel_is_answered(loaded: Loaded) -> None:
    """DCMTK ``findscu --cancel 1`` (a C-CANCEL after the first answer), through a proxy that holds the router's
    answers until the cancel has passed: the answer ends cancelled (0xFE00) or, when the router had already handed
    all of it to its TCP stack (PS3.4 C.4.1.2: a cancel may come too late), whole (0x0000); either way the responses
    are consistent and the association is released."""
    router, _corpus, wd = loaded
    bulk = next(r for r in _corpus.records if r["StudyDescription"] == "UNDATED")
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={bulk['StudyInstanceUID']}",
            f"SeriesInstanceUID={bulk['SeriesInstanceUID']}"]  # fmt: skip
    with HoldAfterFirstAnswer(router.port) as proxy:
        res = findscu(proxy.port, "-S", keys, wd, "--cancel", "1")
    assert proxy.held and "Sending Cancel Request" in res.log, res.log
    assert res.status in (0xFE00, 0x0000), res.log
    assert len(res.responses) == len(res.statuses) - 1 and len(res.responses) <= BULK
    assert res.status == 0xFE00 or len(res.responses) == BULK  # (a cancel read after the last match: 0xFE00 too)
    assert "Releasing Association" in res.log
