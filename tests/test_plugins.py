"""The extension path: a stage from a plugin module outside the router, used from a rule file."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pydicom
import pytest

from router.hooks import specs as hookspecs

from peers import RouterProcess, StoreSCP, make_instance, storescu, wait_for, write_instances

PLUGIN = Path(__file__).parent / "sample_plugins" / "stamp.py"
DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


@pytest.mark.interop  # DCMTK storescu, storescp
def test_plugin_stage_used_from_rule_file_and_notified(workdir: Path, dest: StoreSCP) -> None:
    events = workdir / "events.jsonl"
    router = RouterProcess(
        workdir,
        plugin_modules=[str(PLUGIN)],
        peers={"DEST": {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}},
        rules={
            "10.yaml": [
                {
                    "name": "stamp-and-send",
                    "when": {"kind": "dicom"},
                    "then": [{"stamp": {"StationName": "ROUTED"}}, {"forward": "DEST"}],
                }
            ]
        },
    )
    router.env["ROUTER_TEST_EVENTS"] = str(events)
    files = write_instances(workdir / "in", [make_instance(StationName="MODALITY")])
    try:
        router.start()
        assert storescu(router.port, files).returncode == 0
        wait_for(lambda: len(dest.received()) == 1, 30, what="the stamped object at the destination")
    finally:
        router.stop()
    sent = pydicom.dcmread(dest.received()[0])
    assert sent.StationName == "ROUTED"
    sop = str(sent.SOPInstanceUID)
    stored = pydicom.dcmread(next((workdir / "var" / "objects").rglob("*.dcm")))
    assert stored.StationName == "MODALITY", "the stored original keeps what was received"

    seen = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in seen]
    assert {"event": "association_accepted", "calling_ae": "STORESCU", "direction": "inbound"} in seen
    assert {"event": "instance_received", "sop": sop} in seen
    assert {"event": "instance_stored", "sop": sop, "outcome": "stored", "jobs": 1} in seen
    assert {"event": "forwarded", "sop": sop, "peer": "DEST", "status": 0} in seen
    assert kinds.index("instance_stored") < kinds.index("forwarded")
    # the forward workers run in a process of their own, with the same plugins, told which process they are in
    startups = {e["process"]: e["pid"] for e in seen if e["event"] == "startup"}
    assert set(startups) == {"serve", "forward"} and startups["serve"] != startups["forward"]


def test_every_hook_is_documented() -> None:
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("router_")]
    assert len(hooks) >= 9
    text = DOCS.read_text()
    for name in hooks:
        assert f"`{name}`" in text, f"{name} is missing from docs/plugins.md"
        assert inspect.getdoc(getattr(hookspecs, name)), f"{name} has no docstring"
