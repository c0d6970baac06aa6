"""HL7 v2 parsing and ACKs in process: delimiters, character sets, chapter 2 error codes and locations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.hl7.ack import ack_code_of, build_ack
from router.hl7.er7 import EncodingChars, escape, unescape
from router.hl7.message import ErrorLocation, Hl7Error, parse_message

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "20240501120000+0000"


def adt(
    msh_tail: str = "ADT^A01^ADT_A01|MSG00001|P|2.5",
    body: str = "EVN|A01|20240501\rPID|1||123^^^HOSP^MR||DOE^JOHN||19700101|M\r",
    charset: str = "",
) -> bytes:
    msh = f"MSH|^~\\&|RIS|HOSP|ROUTER|RAD|20240501115959||{msh_tail}"
    if charset:
        msh += f"||||||{charset}"
    return (msh + "\r" + body).encode("latin-1")


def segs(ack: bytes, codec: str = "ascii") -> list[str]:
    return ack.decode(codec).split("\r")


def error_of(raw: bytes, **kwargs: object) -> Hl7Error:
    with pytest.raises(Hl7Error) as info:
        parse_message(raw, **kwargs)  # type: ignore[arg-type]
    return info.value


# --- delimiters -------------------------------------------------------------------------------------------------


def test_custom_encoding_characters_are_parsed_and_used_by_the_ack() -> None:
    raw = (
        b"MSH#@$~!#RIS#HOSP#ROUTER#RAD#20240501115959##ADT@A08@ADT_A01#C42#P#2.5\r"
        b"PID#1##123@@@HOSP@MR$999999990@@@NLMINBIZA!2.16.840.1.113883.2.4.6.3!ISO@NNNLD##O~F~Brien@Ann~S~Marie\r"
    )
    msg = parse_message(raw)
    assert (msg.field_separator, msg.encoding_chars) == ("#", "@$~!")
    assert msg.message_type == "ADT^A08" and msg.structure == "ADT_A01" and msg.control_id == "C42"
    assert msg.field("PID", 3) == "123@@@HOSP@MR$999999990@@@NLMINBIZA!2.16.840.1.113883.2.4.6.3!ISO@NNNLD"
    assert msg.repetitions("PID", 3) == [
        ["123", "", "", "HOSP", "MR"],
        ["999999990", "", "", "NLMINBIZA!2.16.840.1.113883.2.4.6.3!ISO", "NNNLD"],
    ]
    assert msg.value("PID", 3, 2, 4, 2) == "2.16.840.1.113883.2.4.6.3"
    assert msg.components("PID", 5) == ["O#Brien", "Ann@Marie"]
    assert msg.msg.msh.msh_10.to_er7() == "C42"  # hl7apy parsed it with the same delimiters
    assert msg.msg.encoding_chars["COMPONENT"] == "@"

    error = Hl7Error("AE", 101, "PID-7 # empty", location=("PID", 1, 7))
    ack = build_ack(msg, "AE", [error], control_id="ACK1", now=NOW)
    assert segs(ack) == [
        f"MSH#@$~!#ROUTER#RAD#RIS#HOSP#{STAMP}##ACK@A08@ACK#ACK1#P#2.5",
        "MSA#AE#C42",
        "ERR##PID@1@7#101@Required field missing@HL70357#E####PID-7 ~F~ empty",
        "",
    ]
    assert ack_code_of(ack) == ("AE", "C42")


def test_truncation_character_is_accepted_from_v2_7_only() -> None:
    msg = parse_message(b"MSH|^~\\&#|RIS|HOSP|ROUTER|RAD|20240501||ADT^A01^ADT_A01|T1|P|2.7\rPID|1||5\\P\\6\r")
    assert msg.encoding == EncodingChars("|", "^", "~", "\\", "&", "#")
    assert msg.value("PID", 3) == "5#6"
    assert (
        segs(build_ack(msg, "AA", control_id="A", now=NOW))[0]
        == f"MSH|^~\\&#|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|A|P|2.7"
    )
    err = error_of(b"MSH|^~\\&#|RIS|HOSP|ROUTER|RAD|20240501||ADT^A01|T1|P|2.5\r")
    assert (err.ack_code, err.error_code, err.location) == ("AR", 102, ErrorLocation("MSH", 1, 2))
    assert err.text == "a fifth encoding character (truncation) is only allowed from version 2.7"


@pytest.mark.parametrize(
    ("msh", "where", "text"),
    [
        (b"MSH|^^\\&|A|B|C|D|1||ADT^A01|1|P|2.5", 2, "the field separator and the encoding characters must all differ"),
        (b"MSH|^~\\|A|B|C|D|1||ADT^A01|1|P|2.5", 2, "MSH-2 must hold 4 encoding characters (5 from v2.7), found 3"),
        (b"MSH|^~|A|B|C|D|1||ADT^A01|1|P|2.5", 2, "MSH-2 must hold 4 encoding characters (5 from v2.7), found 2"),
        (b"MSHA^~\\&A", 1, "field separator 'A' is not a printable, non-alphanumeric character"),
    ],
)
def test_unusable_delimiters_are_rejected(msh: bytes, where: int, text: str) -> None:
    err = error_of(msh + b"\rPID|1\r")
    assert (err.ack_code, err.error_code, err.location, err.text) == ("AR", 102, ErrorLocation("MSH", 1, where), text)
    if where == 2:  # the field separator was usable: the ACK is still addressed, with standard delimiters
        assert err.partial is not None and err.partial.encoding_chars == "^~\\&"
        assert segs(build_ack(err.partial, "AR", [err], control_id="X", now=NOW))[:2] == [
            f"MSH|^~\\&|C|D|A|B|{STAMP}||ACK^A01^ACK|X|P|2.5",
            "MSA|AR|1",
        ]
    else:
        assert err.partial is None


def test_lf_and_crlf_segment_separators_are_tolerated() -> None:
    for sep in (b"\n", b"\r\n"):
        msg = parse_message(adt().replace(b"\r", sep))
        assert [s[0] for s in msg.segment_list] == ["MSH", "EVN", "PID"]
        assert msg.value("PID", 5, 1, 2) == "JOHN"


# --- character sets ---------------------------------------------------------------------------------------------


def test_latin1_is_decoded_and_the_ack_is_encoded_in_latin1() -> None:
    raw = adt(body="PID|1||123^^^HOSP^MR||Müller^Jürgen\r", charset="8859/1")
    assert b"M\xfcller" in raw
    msg = parse_message(raw)
    assert (msg.charset, msg.codec) == ("8859/1", "iso8859-1")
    assert msg.components("PID", 5) == ["Müller", "Jürgen"]
    ack = build_ack(msg, "AE", [Hl7Error("AE", 102, "Geboortedatum ongeldig für Müller")], control_id="Z", now=NOW)
    assert segs(ack, "latin-1") == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|Z|P|2.5||||||8859/1",
        "MSA|AE|MSG00001",
        "ERR|||102^Data type error^HL70357|E||||Geboortedatum ongeldig für Müller",
        "",
    ]
    assert b"f\xfcr M\xfcller" in ack


def test_utf8_is_decoded_and_the_ack_is_encoded_in_utf8() -> None:
    raw = adt(charset="UNICODE UTF-8").replace(b"DOE^JOHN", "Ødegård^Zoë".encode())
    msg = parse_message(raw)
    assert (msg.charset, msg.codec) == ("UNICODE UTF-8", "utf-8")
    assert msg.components("PID", 5) == ["Ødegård", "Zoë"]
    ack = build_ack(msg, "AE", [Hl7Error("AE", 207, "Zoë")], control_id="Z", now=NOW)
    assert segs(ack, "utf-8")[0].endswith("||||||UNICODE UTF-8")
    assert "|E||||Zoë\r".encode() in ack


def test_undeclared_charset_tolerates_utf8_then_latin1() -> None:
    assert parse_message(adt()).codec == "ascii"
    utf8 = parse_message(adt().replace(b"DOE", "Müller".encode()))
    assert (utf8.charset, utf8.codec, utf8.value("PID", 5)) == ("", "utf-8", "Müller")
    latin = parse_message(adt().replace(b"DOE", b"M\xfcller"))
    assert (latin.codec, latin.value("PID", 5)) == ("latin-1", "Müller")
    assert b"M\xfcller" not in build_ack(latin, "AA")  # the ACK holds no patient data


def test_unknown_charset_is_rejected_and_the_ack_claims_no_charset() -> None:
    err = error_of(adt(charset="KOI8-R"))
    assert (err.ack_code, err.error_code, err.location) == ("AR", 103, ErrorLocation("MSH", 1, 18))
    assert err.text == "unsupported character set (MSH-18) 'KOI8-R'"
    assert segs(build_ack(err.partial, "AR", [err], control_id="Q", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|Q|P|2.5",
        "MSA|AR|MSG00001",
        "ERR||MSH^1^18|103^Table value not found^HL70357|E||||unsupported character set (MSH-18) 'KOI8-R'",
        "",
    ]


def test_bytes_invalid_in_the_declared_charset_are_an_ae_at_that_field() -> None:
    raw = adt(charset="UNICODE UTF-8", body="EVN|A01\rPID|1||123||X^Y\rPID|2||456||A^B\xff\r")
    err = error_of(raw)
    assert (err.ack_code, err.error_code, err.location) == ("AE", 102, ErrorLocation("PID", 2, 5))
    assert err.partial is not None and err.partial.control_id == "MSG00001"


# --- chapter 2 checks -------------------------------------------------------------------------------------------


def test_missing_control_id_is_ae_101_at_msh_10() -> None:
    err = error_of(adt("ADT^A01^ADT_A01||P|2.5"))
    assert (err.ack_code, err.error_code, err.location) == ("AE", 101, ErrorLocation("MSH", 1, 10))
    assert segs(build_ack(err.partial, err.ack_code, [err], control_id="N", now=NOW))[1:] == [
        "MSA|AE",
        "ERR||MSH^1^10|101^Required field missing^HL70357|E||||MSH-10 (message control ID) is empty",
        "",
    ]


def test_missing_message_type_is_ar_101_at_msh_9() -> None:
    err = error_of(adt("|MSG00001|P|2.5"))
    assert (err.ack_code, err.error_code, err.location) == ("AR", 101, ErrorLocation("MSH", 1, 9))
    assert segs(build_ack(err.partial, err.ack_code, [err], control_id="N", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^^ACK|N|P|2.5",
        "MSA|AR|MSG00001",
        "ERR||MSH^1^9|101^Required field missing^HL70357|E||||MSH-9 (message type) is empty",
        "",
    ]
    err = error_of(adt("^A01|MSG00001|P|2.5"))
    assert (err.error_code, err.location) == (101, ErrorLocation("MSH", 1, 9, 1))


@pytest.mark.parametrize(
    ("tail", "code", "where", "text"),
    [
        ("ADT^A01|M1|P|", 101, 12, "MSH-12 (version ID) is empty"),
        ("ADT^A01|M1||2.5", 101, 11, "MSH-11 (processing ID) is empty"),
        ("ADT^A01|M1|P|2.9", 203, 12, "version 2.9 is not supported"),
        ("ADT^A01|M1|P|2.2", 203, 12, "version 2.2 is not supported"),
        ("ADT^A01|M1|P|2.7.1", 203, 12, "version 2.7.1 is not supported"),
        ("ADT^A01|M1|T|2.5", 202, 11, "processing ID T is not accepted"),
        ("ADT^A01|M1|D^I|2.5", 202, 11, "processing ID D is not accepted"),
    ],
)
def test_header_refusals_are_ar_with_code_and_location(tail: str, code: int, where: int, text: str) -> None:
    err = error_of(adt(tail))
    assert (err.ack_code, err.error_code, err.location, err.text) == ("AR", code, ErrorLocation("MSH", 1, where), text)
    assert ack_code_of(build_ack(err.partial, err.ack_code, [err])) == ("AR", "M1")


def test_unsupported_version_ack_copies_the_version_and_names_the_field() -> None:
    err = error_of(adt("ADT^A01^ADT_A01|M1|P|2.9"))
    assert segs(build_ack(err.partial, "AR", [err], control_id="V", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|V|P|2.9",
        "MSA|AR|M1",
        "ERR||MSH^1^12|203^Unsupported version id^HL70357|E||||version 2.9 is not supported",
        "",
    ]


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
def test_supported_versions_parse(version: str) -> None:
    msg = parse_message(adt(f"ADT^A01|V{version}|P|{version}^NLD"))
    assert (msg.version, msg.control_id, msg.msg.version) == (version, f"V{version}", version)


def test_accepted_processing_ids_is_a_parameter() -> None:
    msg = parse_message(adt("ADT^A01|M1|T|2.5"), accepted_processing_ids=("P", "T"))
    assert msg.processing_id == "T"
    assert segs(build_ack(msg, "AA", control_id="K", now=NOW))[0].endswith("|ACK^A01^ACK|K|T|2.5")


def test_accepted_messages_give_200_and_201() -> None:
    accepted = {"ADT": {"A01", "A08"}, "ORM": {"*"}}
    assert parse_message(adt("ORM^O01|M1|P|2.5"), accepted_messages=accepted).message_type == "ORM^O01"
    err = error_of(adt("ORU^R01|M1|P|2.5"), accepted_messages=accepted)
    assert (err.ack_code, err.error_code, err.location) == ("AR", 200, ErrorLocation("MSH", 1, 9, 1))
    assert err.text == "message type ORU is not supported"
    err = error_of(adt("ADT^A99|M1|P|2.5"), accepted_messages=accepted)
    assert (err.ack_code, err.error_code, err.location) == ("AR", 201, ErrorLocation("MSH", 1, 9, 2))
    assert segs(build_ack(err.partial, "AR", [err], control_id="E", now=NOW))[2] == (
        "ERR||MSH^1^9^1^2|201^Unsupported event code^HL70357|E||||event A99 of ADT is not supported"
    )


@pytest.mark.parametrize("raw", [b"", b"\x0b", b"garbage\r", b"EVN|A01\rMSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\r"])
def test_a_frame_without_msh_is_ar_100_and_the_ack_has_no_addressee(raw: bytes) -> None:
    err = error_of(raw)
    assert (err.ack_code, err.error_code, err.location, err.partial) == ("AR", 100, ErrorLocation("MSH", 1), None)
    assert segs(build_ack(None, "AR", [err], control_id="G", now=NOW)) == [
        f"MSH|^~\\&|||||{STAMP}||ACK^^ACK|G|P|2.5",
        "MSA|AR",
        "ERR||MSH^1|100^Segment sequence error^HL70357|E||||the frame does not start with an MSH segment",
        "",
    ]


def test_two_messages_in_one_frame_and_bad_segment_ids() -> None:
    err = error_of(adt() + adt())
    assert (err.ack_code, err.error_code, err.location) == ("AR", 100, ErrorLocation("MSH", 2))
    err = error_of(adt(body="PID|1\rPV1|1\rpv1|2\r"))
    assert (err.ack_code, err.error_code, err.location, err.text) == (
        "AE",
        100,
        ErrorLocation("pv1", 1),
        "malformed segment ID",
    )


# --- ACK layout -------------------------------------------------------------------------------------------------


def test_err_segments_v25_exact() -> None:
    msg = parse_message(adt())
    errors = [
        Hl7Error("AE", 101, "PID-7 is empty", location=("PID", 1, 7)),
        Hl7Error("AE", 102, "invalid BSN | elfproef", location=ErrorLocation("PID", 1, 3, 1, repetition=2)),
        Hl7Error("AE", 103, "unknown sex", location=("PID", 1, 8), severity="W"),
        Hl7Error("AE", 207, "database unavailable"),
    ]
    assert segs(build_ack(msg, "AE", errors, text="ignored from 2.4", control_id="E1", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|E1|P|2.5",
        "MSA|AE|MSG00001",
        "ERR||PID^1^7|101^Required field missing^HL70357|E||||PID-7 is empty",
        "ERR||PID^1^3^2^1|102^Data type error^HL70357|E||||invalid BSN \\F\\ elfproef",
        "ERR||PID^1^8|103^Table value not found^HL70357|W||||unknown sex",
        "ERR|||207^Application internal error^HL70357|E||||database unavailable",
        "",
    ]


def test_err_segments_before_v25_use_err_1_and_msa_6() -> None:
    msg = parse_message(adt("ADT^A01|OLD1|P|2.4"))
    errors = [Hl7Error("AE", 101, "x", location=("PID", 1, 7)), Hl7Error("AE", 207, "y")]
    assert segs(build_ack(msg, "AE", errors, control_id="E2", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A01^ACK|E2|P|2.4",
        "MSA|AE|OLD1||||101^Required field missing^HL70357",
        "ERR|PID^1^7^101&Required field missing&HL70357~^^^207&Application internal error&HL70357",
        "",
    ]


def test_v23_ack_has_a_two_component_msh_9_and_msa_3_text() -> None:
    msg = parse_message(adt("ADT^A04|OLD2|P|2.3"))
    assert segs(build_ack(msg, "AA", text="stored | ok", control_id="E3", now=NOW)) == [
        f"MSH|^~\\&|ROUTER|RAD|RIS|HOSP|{STAMP}||ACK^A04|E3|P|2.3",
        "MSA|AA|OLD2|stored \\F\\ ok",
        "",
    ]


def test_ack_control_ids_are_fresh_and_codes_are_checked() -> None:
    msg = parse_message(adt())
    ids = {segs(build_ack(msg, "AA"))[0].split("|")[9] for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 20 for i in ids)
    with pytest.raises(ValueError, match="ACK code must be AA, AE or AR"):
        build_ack(msg, "CA")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no MSA"):
        ack_code_of(b"MSH|^~\\&|A\r")
    assert ack_code_of(b"\x0bMSH|^~\\&|A\rMSA|AR|77\r\x1c\r") == ("AR", "77")


# --- field helpers ----------------------------------------------------------------------------------------------


def test_escape_sequences_are_resolved_by_the_field_helpers() -> None:
    body = (
        "PID|1||1^^^A\\T\\B^MR||O\\F\\Neil\\S\\X^Ann\\R\\Lee\\E\\||||||"
        "Line1\\.br\\Line2 \\H\\bold\\N\\ \\XC3BC\\ \\Zfoo\\\r"
    )
    msg = parse_message(adt(body=body, charset="UNICODE UTF-8"))
    assert msg.value("PID", 3, 1, 4) == "A&B"  # \T\ is data, not a subcomponent separator
    assert msg.value("PID", 3, 1, 4, 2) == ""
    assert msg.repetitions("PID", 5) == [["O|Neil^X", "Ann~Lee\\"]]
    assert msg.value("PID", 11) == "Line1\nLine2 bold ü \\Zfoo\\"
    assert msg.field("PID", 5) == "O\\F\\Neil\\S\\X^Ann\\R\\Lee\\E\\"  # field() is raw


def test_escape_and_unescape_round_trip_with_custom_delimiters() -> None:
    enc = EncodingChars("#", "@", "$", "~", "!")
    text = "a#b@c$d~e!f\rg|^&\\"
    escaped = escape(text, enc)
    assert escaped == "a~F~b~S~c~R~d~E~e~T~f~X0D~g|^&\\"
    assert unescape(escaped, enc) == text


def test_z_segments_and_occurrences() -> None:
    body = "PID|1||123\rZDS|1.2.840.1^ROUTER^Application^DICOM\rOBX|1|ST|A||first\rOBX|2|ST|B||second\rZDS|9.9\r"
    msg = parse_message(adt(body=body))
    assert msg.segments("ZDS") == [("ZDS", "1.2.840.1^ROUTER^Application^DICOM"), ("ZDS", "9.9")]
    assert msg.value("ZDS", 1) == "1.2.840.1" and msg.components("ZDS", 1)[3] == "DICOM"
    assert msg.field("ZDS", 1, occurrence=2) == "9.9"
    assert [msg.value("OBX", 5, occurrence=n) for n in (1, 2, 3)] == ["first", "second", ""]
    assert msg.field("ZZZ", 1) == "" and msg.repetitions("ZDS", 7) == [] and msg.value("PID", 3, 2) == ""
    assert [s[0] for s in msg.segment_list] == ["MSH", "PID", "ZDS", "OBX", "OBX", "ZDS"]
    assert [c.name for c in msg.msg.children] == ["MSH", "PID", "ZDS", "OBX", "OBX", "ZDS"]  # hl7apy keeps them too
    assert msg.field("MSH", 1) == "|" and msg.field("MSH", 2) == "^~\\&" and msg.repetitions("MSH", 2) == [["^~\\&"]]


def test_require_helpers_raise_located_errors() -> None:
    msg = parse_message(adt(body="PID|1||123^^^HOSP^MR~^^^NLMINBIZA^NNNLD||DOE\r"))
    assert msg.require_value("PID", 5) == "DOE"
    with pytest.raises(Hl7Error) as info:
        msg.require_value("PID", 7)
    assert (info.value.ack_code, info.value.error_code, info.value.location) == ("AE", 101, ErrorLocation("PID", 1, 7))
    with pytest.raises(Hl7Error) as info:
        msg.require_value("PID", 3, repetition=2)
    assert info.value.location == ErrorLocation("PID", 1, 3, 1, 2)
    assert segs(build_ack(msg, "AE", [info.value], control_id="R", now=NOW))[2] == (
        "ERR||PID^1^3^2^1|101^Required field missing^HL70357|E||||PID-3 is empty"
    )
    with pytest.raises(Hl7Error) as info:
        msg.require_segment("ORC")
    assert (info.value.error_code, info.value.location, info.value.partial) == (100, ErrorLocation("ORC", 1), msg)


def test_hl7apy_can_be_skipped_and_the_checks_still_run() -> None:
    msg = parse_message(adt(body="PID|1||123||DOE^JOHN\rZDS|1.2.3\r"), use_hl7apy=False)
    assert msg.msg is None
    assert (msg.message_type, msg.value("PID", 5, 1, 2), msg.value("ZDS", 1)) == ("ADT^A01", "JOHN", "1.2.3")
    err = error_of(adt("ADT^A01|M1|T|2.5"), use_hl7apy=False)
    assert (err.ack_code, err.error_code) == ("AR", 202)
