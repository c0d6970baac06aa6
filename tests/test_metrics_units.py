"""The metrics plugin's pieces on their own: label values, status classes, adding up the two processes' families."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plugins.metrics import _loopback
from plugins.metrics.counters import merged
from plugins.metrics.labels import HL7_TYPES, OTHER, Labels, export_service, rejection_reason, status_class
from router.config import parse_config


def test_label_values_come_from_the_configuration() -> None:
    config = parse_config({"dicom": {"allowed_calling_aets": ["MR1"]},
                           "peers": {"PACS": {"ae_title": "PACS_AE", "host": "127.0.0.1", "port": 104},
                                     "RIS": {"mllp": "127.0.0.1:2575"}}}, Path())  # fmt: skip
    labels = Labels(config)
    assert [labels.calling_ae(ae) for ae in ("PACS_AE", "MR1 ", "1.2.840.113619.2.55", "Doe^Jane", "")] == [
        "PACS_AE", "MR1", OTHER, OTHER, OTHER]  # fmt: skip
    assert [labels.destination(p) for p in ("PACS", "RIS", "GONE")] == ["PACS", "RIS", OTHER]
    assert {"ADT^A01", "ADT^A40", "ORM^O01", "OMI^O23"} <= HL7_TYPES and "ORU^R01" not in HL7_TYPES


def test_status_classes_follow_ps3_7() -> None:
    assert [status_class(s) for s in (0x0000, 0x0001, 0xB000, 0xB007, 0xFE00, 0x0110, 0xA700, 0xC000, 0x0122)] == [
        "success", "warning", "warning", "warning", "cancel", "failure", "failure", "failure", "failure"]  # fmt: skip
    assert rejection_reason(1, 3) == "calling-ae-not-recognized"
    assert rejection_reason(3, 2) == "local-limit-exceeded"
    assert rejection_reason(1, 1) == OTHER
    assert [export_service(s) for s in ("C-MOVE", "WADO-RS/frames", "WADO-RS", "FTP")] == [
        "C-MOVE", "WADO-RS", "WADO-RS", OTHER]  # fmt: skip


def test_loopback_is_read_from_the_client_address() -> None:
    assert _loopback("127.0.0.1:5000") and _loopback("127.8.9.10:1") and _loopback("::1:40000")
    assert not _loopback("192.0.2.7:40000") and not _loopback("testclient:50000") and not _loopback("")


def test_families_of_both_processes_are_added_up_once() -> None:
    def made(n: int, seconds: list[float]) -> CollectorRegistry:
        registry = CollectorRegistry()
        attempts = Counter("router_forward_attempts", "h", ["destination", "result"], registry=registry)
        attempts.labels("PACS", "delivered").inc(n)
        delay = Histogram("router_forward_duration_seconds", "h", ["destination"], buckets=(1, 10), registry=registry)
        for s in seconds:
            delay.labels("PACS").observe(s)
        return registry

    text = generate_latest(_Merged(made(3, [0.5, 5]), made(2, [20]))).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    assert samples[("router_forward_attempts_total", (("destination", "PACS"), ("result", "delivered")))] == 5
    bucket = "router_forward_duration_seconds_bucket"
    assert [samples[(bucket, (("destination", "PACS"), ("le", le)))] for le in ("1.0", "10.0", "+Inf")] == [1, 2, 3]
    assert samples[("router_forward_duration_seconds_count", (("destination", "PACS"),))] == 3
    assert not any(name.endswith("_created") for name, _labels in samples)


class _Merged(CollectorRegistry):
    """What the serving process's scrape does with its own registry and the forward process's files."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        super().__init__()
        self.registries = registries

    def collect(self):  # type: ignore[no-untyped-def]
        return merged(*(r.collect() for r in self.registries))
