"""Reading the matches of a C-FIND (router/query/find.py): the first page on its own, then the other matches' ids in
one query and their rows by id; every match once, in the order stored, whatever index finds them; the encoded
identifiers (``run_find_encoded``) decode to the datasets ``run_find`` gives."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode
from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine

from router.query import find
from router.query.find import plan_find, run_find, run_find_encoded
from router.query.matching import normalize_name
from router.query.model import PATIENT_ROOT, STUDY_ROOT
from router.store.db import make_engine
from router.store.tables import INSTANCE, PATIENT, SERIES, STUDY

from postgres import PgCluster, postgres_cluster

STUDIES = 60  # more than the first page and several pages of 7
NAMES = ["Smith^Ann", "Johnson^Bob", "Jérôme^Buc", "Robinson^Cy"]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.interop)])  # PostgreSQL server
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield from filled(f"sqlite:///{tmp_path / 'index.db'}")
        return
    with request.getfixturevalue("pg").fresh_database() as name:
        yield from filled(request.getfixturevalue("pg").url(name))


def filled(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    patients = [{"id": i + 1, "patient_id": f"P{i}", "issuer": "", "name": n, "name_norm": normalize_name(n),
                 "birth_date": "", "sex": "O"} for i, n in enumerate(NAMES)]  # fmt: skip
    studies = [{"id": s + 1, "study_uid": f"1.2.{s}", "patient_fk": s % len(NAMES) + 1,
                "study_date": f"2024{s % 12 + 1:02d}01", "study_time": "", "accession_number": f"A{s}", "study_id": "",
                "description": "", "referring_physician": "", "referring_physician_norm": ""}
               for s in range(STUDIES)]  # fmt: skip
    series = [{"id": s + 1, "series_uid": f"1.3.{s}", "study_fk": s + 1, "modality": ["CT", "MR"][s % 2],
               "series_number": "1", "description": "", "body_part": "", "pps_start_date": "", "pps_start_time": ""}
              for s in range(STUDIES)]  # fmt: skip
    instances = [{"sop_uid": f"1.4.{s}.{i}", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "series_fk": s + 1,
                  "transfer_syntax": "1.2.840.10008.1.2.1", "path": f"{s}/{i}", "size": 0, "sha256": ""}
                 for s in range(STUDIES) for i in range(s % 3 + 1)]  # fmt: skip
    with engine.begin() as conn:
        for table, rows in ((PATIENT, patients), (STUDY, studies), (SERIES, series), (INSTANCE, instances)):
            conn.execute(insert(table), rows)
    try:
        yield engine
    finally:
        engine.dispose()


def study_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("PatientName", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances"):  # fmt: skip
        setattr(ds, keyword, keys.get(keyword, ""))
    return ds


def expected(where: Any) -> list[str]:
    return [f"1.2.{s}" for s in range(STUDIES) if where(s)]


CASES = {
    "all": ({}, lambda s: True),
    "name prefix": ({"PatientName": "SMITH*"}, lambda s: s % 4 == 0),
    "leading wildcard": ({"PatientName": "*SON*"}, lambda s: s % 4 in (1, 3)),
    "date range (index)": ({"StudyDate": "20240201-20240401"}, lambda s: s % 12 in (1, 2, 3)),
    "accession": ({"AccessionNumber": "A37"}, lambda s: s == 37),
    "modality": ({"ModalitiesInStudy": "MR"}, lambda s: s % 2 == 1),
}


@pytest.mark.parametrize("page_size", [1, 7, 256])
@pytest.mark.parametrize("case", list(CASES))
def test_every_match_once_in_stored_order(engine: Engine, case: str, page_size: int) -> None:
    keys, where = CASES[case]
    plan = plan_find(STUDY_ROOT, study_query(**keys), relational=True)
    used: list[set[int]] = []
    found = list(run_find(engine, plan, page_size=page_size, used=used.append))
    assert [str(ds.StudyInstanceUID) for ds in found] == expected(where)
    for ds in found:
        s = int(str(ds.StudyInstanceUID).rsplit(".", 1)[1])
        assert ds.NumberOfStudyRelatedInstances == s % 3 + 1
        assert ds.ModalitiesInStudy == ["CT", "MR"][s % 2]
    assert set().union(*used) == {s % len(NAMES) + 1 for s in range(STUDIES) if where(s)}


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("case", list(CASES))
def test_encoded_identifiers_decode_to_the_datasets(engine: Engine, case: str, implicit: bool) -> None:
    plan = plan_find(STUDY_ROOT, study_query(**CASES[case][0]), relational=True)
    datasets = list(run_find(engine, plan, retrieve_ae="ROUTER", page_size=7))
    encoded = list(run_find_encoded(engine, plan, implicit_vr=implicit, retrieve_ae="ROUTER", page_size=7))
    assert len(encoded) == len(datasets) == len(expected(CASES[case][1]))
    for ours, theirs in zip(encoded, datasets, strict=True):
        if "Jérôme" in str(theirs.PatientName):
            assert isinstance(ours, Dataset)  # a value outside ASCII: pydicom encodes it (character set)
            assert ours == theirs
        else:
            assert isinstance(ours, bytes)
            assert decode(BytesIO(ours), implicit, True) == theirs


def test_matches_deleted_between_pages_are_left_out(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_find(STUDY_ROOT, study_query(), relational=True)
    read = find._page
    pages = 0

    def page_then_delete(*args: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 2:  # the ids of the rest are read: remove some of them before their rows are
            with engine.begin() as conn:
                conn.execute(delete(INSTANCE).where(INSTANCE.c.series_fk.in_([30, 34, 38])))
                conn.execute(delete(SERIES).where(SERIES.c.id.in_([30, 34, 38])))
                conn.execute(delete(STUDY).where(STUDY.c.id.in_([30, 34, 38])))
        return read(*args)

    monkeypatch.setattr(find, "_page", page_then_delete)
    found = [str(ds.StudyInstanceUID) for ds in run_find(engine, plan, page_size=2)]
    assert pages > 2
    assert found == [uid for uid in expected(lambda s: True) if uid not in ("1.2.29", "1.2.33", "1.2.37")]


def test_hierarchical_study_query_in_patient_root(engine: Engine) -> None:
    ds = study_query()
    ds.PatientID = "P1"
    found = [str(ds.StudyInstanceUID) for ds in run_find(engine, plan_find(PATIENT_ROOT, ds), page_size=3)]
    assert found == expected(lambda s: s % 4 == 1)
