"""HL7 ADT over real MLLP sockets against the router: the exact ACK for good, wrong and unsupported messages,
what lands in the index, re-sends applied once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hl7msg import ack_segments, adt, message, seg, send
from peers import RouterProcess, query

BSN = "111222333"  # passes the eleven-test
BSN_OID = "2.16.840.1.113883.2.4.6.3"


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    proc = RouterProcess(tmp_path_factory.mktemp("hl7")).start()
    try:
        yield proc
    finally:
        proc.stop()


def db(router: RouterProcess) -> Path:
    return router.data_dir / "router.db"


def msa(ack: str) -> tuple[str, str]:
    fields = [*ack_segments(ack)["MSA"], "", ""]
    return fields[1], fields[2]


def err(ack: str) -> list[str]:
    return ack_segments(ack).get("ERR", [])


def test_admit_creates_patient_with_bsn_and_resend_is_acknowledged_not_applied_twice(router: RouterProcess) -> None:
    text = adt(
        "A01",
        {3: f"MRN100^^^HOSP^MR~{BSN}^^^NLMINBIZA^NNNLD", 5: "Müller^Hans^Jürgen^^Dr", 7: "19600102", 8: "M"},
        seg("PV1", {1: "1", 2: "I", 3: "WARD1^101^A", 19: "V987"}),
        control_id="ADM-1",
    )
    ack = send(router.hl7_port, text)
    assert msa(ack) == ("AA", "ADM-1")
    assert ack.split("\r")[0].split("|")[8] == "ACK^A01^ACK"
    rows = query(
        db(router), "SELECT id, patient_id, issuer, name, birth_date, sex FROM patient WHERE patient_id='MRN100'"
    )
    assert [r[1:] for r in rows] == [("MRN100", "HOSP", "Müller^Hans^Jürgen^Dr", "19600102", "M")]
    idents = query(
        db(router), "SELECT value, authority, is_bsn FROM patientidentifier WHERE patient_fk=? ORDER BY id", rows[0][0]
    )
    assert idents == [("MRN100", "HOSP", 0), (BSN, BSN_OID, 1)]
    assert query(db(router), "SELECT admission_id, current_location FROM patientdetails WHERE patient_fk=?",
                 rows[0][0]) == [("V987", "WARD1 101 A")]  # fmt: skip

    # the same message again (the sender never saw our ACK): AA again, applied once
    query(db(router), "SELECT 1")  # (no write between)
    assert msa(send(router.hl7_port, text)) == ("AA", "ADM-1")
    assert query(db(router), "SELECT count(*) FROM hl7log WHERE control_id='ADM-1'") == [(1,)]

    # an update (A08) changes the name; empty fields keep what is known, "" clears
    update = adt("A08", {3: "MRN100^^^HOSP^MR", 5: "Müller-Schmidt^Hans", 8: '""'}, control_id="UPD-1")
    assert msa(send(router.hl7_port, update)) == ("AA", "UPD-1")
    assert query(db(router), "SELECT name, name_norm, birth_date, sex FROM patient WHERE patient_id='MRN100'") == [
        ("Müller-Schmidt^Hans", "MULLER-SCHMIDT^HANS", "19600102", "")
    ], "the search form (C-FIND, QIDO) follows the name"


def test_invalid_bsn_is_refused_with_an_err_naming_the_repetition(router: RouterProcess) -> None:
    text = adt("A04", {3: "MRN200^^^HOSP^MR~123456789^^^NLMINBIZA^NNNLD", 5: "Jansen^Piet"}, control_id="BSN-BAD")
    ack = send(router.hl7_port, text)
    assert msa(ack) == ("AE", "BSN-BAD")
    assert err(ack)[1:5] == ["", "PID^1^3^2^1", "102^Data type error^HL70357", "E"]
    assert err(ack)[8] == "not a valid BSN (fails the eleven-test)"
    assert query(db(router), "SELECT count(*) FROM patient WHERE patient_id='MRN200'") == [(0,)], "nothing applied"
    # an identifier type NNNLD alone makes it a BSN too
    by_type = adt("A04", {3: "MRN201^^^HOSP^MR~123456780^^^^NNNLD", 5: "Jansen^Piet"}, control_id="BSN-TYPE")
    assert msa(send(router.hl7_port, by_type))[0] == "AE"


def test_missing_patient_identifier_is_ae_101_at_pid_3(router: RouterProcess) -> None:
    ack = send(router.hl7_port, adt("A08", {5: "Nobody^Known"}, control_id="NO-PID3"))
    assert msa(ack) == ("AE", "NO-PID3")
    assert err(ack)[2:4] == ["PID^1^3^1^1", "101^Required field missing^HL70357"]


@pytest.mark.parametrize(
    ("kind", "code", "location"),
    [
        ("ADT^A02", "201^Unsupported event code^HL70357", "MSH^1^9^1^2"),
        ("ORU^R01", "200^Unsupported message type^HL70357", "MSH^1^9^1^1"),
    ],
)
def test_unsupported_message_without_a_rule_is_rejected(
    router: RouterProcess, kind: str, code: str, location: str
) -> None:
    ack = send(router.hl7_port, message(kind, seg("PID", {3: "MRN300^^^HOSP"}), control_id="UNSUP"))
    assert msa(ack) == ("AR", "UNSUP")
    assert err(ack)[2:4] == [location, code]


@pytest.mark.parametrize(
    ("raw", "expected_code", "expected_error"),
    [
        (b"PID|1||X\r", "AR", "100"),  # no MSH at all
        (b"MSH|^~|HIS|HOSP|ROUTER|RAD|20241101||ADT^A08|E1|P|2.5\rPID|1||X\r", "AR", "102"),  # MSH-2 too short
        (b"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101||ADT^A08||P|2.5\rPID|1||X\r", "AE", "101"),  # no MSH-10
        (b"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101||ADT^A08|E3|P|2.1\rPID|1||X\r", "AR", "203"),  # version
        (b"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101||ADT^A08|E4|T|2.5\rPID|1||X\r", "AR", "202"),  # training
        (b"MSH|^~\\&|HIS|HOSP|ROUTER|RAD|20241101||ADT^A08|E5|P|2.5||||||KOI8\rPID|1||X\r", "AR", "103"),
    ],
    ids=["no-msh", "bad-encoding-chars", "no-control-id", "version-2.1", "processing-T", "unknown-charset"],
)
def test_malformed_headers_get_the_chapter_2_answer(
    router: RouterProcess, raw: bytes, expected_code: str, expected_error: str
) -> None:
    ack = send(router.hl7_port, raw)
    assert msa(ack)[0] == expected_code
    fields = err(ack)
    # ERR-3 from v2.5; before that the code is in ERR-1 (location^^^code) and MSA-6, as the message's version wants
    code = fields[3] if len(fields) > 3 else ack_segments(ack)["MSA"][6]
    assert code.split("^")[0] == expected_error
    assert msa(send(router.hl7_port, adt("A08", {3: "ALIVE^^^HOSP"}, control_id=f"ALIVE-{expected_error}")))[0] == "AA"


def test_other_encoding_characters_and_latin1(router: RouterProcess) -> None:
    text = (
        "MSH#@$!%#HIS#HOSP#ROUTER#RAD#20241101120000##ADT@A28#ENC-1#P#2.5######8859/1\r"
        "PID#1##MRN400@@@HOSP@MR##Garc!T!a Peña@José\r"
    )  # component @, repetition $, escape !, subcomponent %: "!T!" is an escaped subcomponent separator
    ack = send(router.hl7_port, text.encode("latin-1"))
    assert ack.startswith("MSH#@$!%#ROUTER#RAD#HIS#HOSP#")
    assert ack.split("\r")[1] == "MSA#AA#ENC-1"
    assert query(db(router), "SELECT name FROM patient WHERE patient_id='MRN400'") == [("Garc%a Peña^José",)]


def test_database_down_answers_ar_and_the_retry_is_applied(workdir: Path) -> None:
    """AR (application internal error) while the index cannot be written: the sender keeps the message."""
    from router.app import Router
    from router.config import parse_config

    (workdir / "rules").mkdir()
    config = {"data_dir": "var", "rules_dir": "rules", "dicom": {"host": "127.0.0.1", "port": 0},
              "hl7": {"host": "127.0.0.1", "port": 0}, "http": {"host": "127.0.0.1", "port": 0}}  # fmt: skip
    router = Router(parse_config(config, workdir))
    router.start()
    try:
        assert router.hl7_port is not None
        database = workdir / "var" / "router.db"
        text = adt("A08", {3: "MRN900^^^HOSP^MR", 5: "Later^Applied"}, control_id="DB-DOWN")
        router.engine.dispose()  # (the last connection closing checkpoints and removes the WAL files)
        moved = [p for p in database.parent.iterdir() if p.name.startswith("router.db")]
        for path in moved:
            path.rename(path.with_name(path.name + ".away"))
        database.mkdir()  # the database file cannot be opened now
        try:
            ack = send(router.hl7_port, text)
        finally:
            database.rmdir()
            for path in moved:
                path.with_name(path.name + ".away").rename(path)
            router.engine.dispose()
        assert msa(ack) == ("AR", "DB-DOWN")
        assert err(ack)[3] == "207^Application internal error^HL70357"
        assert msa(send(router.hl7_port, text)) == ("AA", "DB-DOWN")
        assert query(database, "SELECT name FROM patient WHERE patient_id='MRN900'") == [("Later^Applied",)]
    finally:
        router.stop()
