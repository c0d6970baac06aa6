"""What the HL7 intake checks without hl7apy (issue 21) and what ``hl7.validation: structure`` adds: the segment-ID
check that replaced hl7apy's one refusal on the acknowledgement path, the tree parsed on demand, the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.app import Router
from router.config import parse_config
from router.hl7.ack import ack_code_of
from router.hl7.message import ErrorLocation, Hl7Error, Hl7Message, parse_message
from router.hooks.specs import hookimpl

from hl7msg import ack_segments, adt, encode, message, seg

PID = {3: "VAL1^^^HOSP^MR", 5: "Validatie^Anna", 7: "19800101", 8: "F"}


def refusal(raw: bytes, **kwargs: Any) -> Hl7Error:
    with pytest.raises(Hl7Error) as info:
        parse_message(raw, **kwargs)
    return info.value


@pytest.mark.parametrize("use_hl7apy", [False, True])
def test_a_segment_id_the_version_does_not_define_is_ae_100_located_at_it(use_hl7apy: bool) -> None:
    raw = encode(adt("A08", PID, seg("PV1", {1: "1", 2: "O"}), "M40|MSG000002|P"))  # a cut-and-repeated MSH
    err = refusal(raw, use_hl7apy=use_hl7apy)
    assert (err.ack_code, err.error_code, err.location) == ("AE", 100, ErrorLocation("M40", 1))
    assert "M40" in str(err) and "2.5" in str(err)
    assert err.partial is not None and err.partial.control_id


def test_segments_are_checked_against_the_message_version() -> None:
    sft = seg("SFT", {1: "Vendor", 2: "1.0", 3: "HIS"})  # SFT came with v2.5
    assert parse_message(encode(adt("A08", PID, sft)), use_hl7apy=False).segments("SFT")
    err = refusal(encode(adt("A08", PID, sft, version="2.3")), use_hl7apy=False)
    assert (err.ack_code, err.error_code, err.location) == ("AE", 100, ErrorLocation("SFT", 1))


def test_z_segments_and_segments_hl7apy_knows_pass_without_hl7apy() -> None:
    raw = encode(message("ORU^R01", seg("PID", {3: "Z1"}), seg("ZDS", {1: "1.2.3"}), seg("OBX", {1: "1", 2: "TX"})))
    msg = parse_message(raw, use_hl7apy=False)
    assert msg.msg is None and [s[0] for s in msg.segment_list] == ["MSH", "PID", "ZDS", "OBX"]


def test_the_hl7apy_tree_is_parsed_on_demand_and_kept() -> None:
    msg = parse_message(encode(adt("A08", PID, control_id="TREE-1")), use_hl7apy=False)
    assert msg.msg is None
    tree = msg.model()
    assert tree.msh.msh_10.to_er7() == "TREE-1" and tree.pid.pid_5.to_er7() == "Validatie^Anna"
    assert msg.model() is tree is msg.msg
    eager = parse_message(encode(adt("A08", PID, control_id="TREE-2")))
    assert eager.model() is eager.msg


def test_validation_setting_defaults_to_segments_and_refuses_unknown_values(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path).hl7.validation == "segments"
    assert parse_config({"hl7": {"validation": "structure"}}, tmp_path).hl7.validation == "structure"
    with pytest.raises(Exception, match="validation"):
        parse_config({"hl7": {"validation": "strict"}}, tmp_path)


class Seen:
    def __init__(self) -> None:
        self.messages: list[Hl7Message | None] = []

    @hookimpl
    def router_hl7_received(self, message: Hl7Message | None) -> None:
        self.messages.append(message)


@pytest.fixture(params=["segments", "structure"])
def intake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Router, Seen]]:
    (tmp_path / "rules").mkdir()
    config = {"data_dir": "var", "rules_dir": "rules", "hl7": {"validation": request.param}}
    router = Router(parse_config(config, tmp_path))
    seen = Seen()
    router.pm.register(seen)
    try:
        yield router, seen
    finally:
        router.ingestor.close()
        router.engine.dispose()


def test_the_intake_parses_with_hl7apy_only_when_the_site_asks(intake: tuple[Router, Seen]) -> None:
    router, seen = intake
    ack = router.hl7.handle(encode(adt("A01", PID, control_id="VAL-1")), "127.0.0.1:1")
    assert ack_code_of(ack)[0] == "AA"
    [msg] = seen.messages
    assert msg is not None
    structure = router.config.hl7.validation == "structure"
    assert (msg.msg is not None) is structure
    assert msg.model().pid.pid_3.to_er7() == "VAL1^^^HOSP^MR"


def test_the_intake_answers_an_unknown_segment_ae_100_whatever_the_validation(intake: tuple[Router, Seen]) -> None:
    router, _ = intake
    ack = router.hl7.handle(encode(adt("A08", PID, "QQQ|1", control_id="VAL-2")), "127.0.0.1:1").decode()
    assert ack_segments(ack)["MSA"][1:3] == ["AE", "VAL-2"]
    assert ack_segments(ack)["ERR"][2:4] == ["QQQ^1", "100^Segment sequence error^HL70357"]
