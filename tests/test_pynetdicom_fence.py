"""router._pynetdicom: nothing is patched when router modules are imported; ``install()`` checks the versions before
it imports a patch module, applies the patches once, and on a version it was not written for applies none (the
router then works on pynetdicom's own code).

Each check runs in a fresh interpreter (``python3 -c``), where pynetdicom is as imported and nothing has called
``install()`` yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATCH_MODULES = [
    "cancels",
    "command",
    "gate",
    "inline",
    "pdata",
    "queues",
    "reactor",
    "requestor",
    "responses",
    "server",
    "services",
]

# A fingerprint of what the patches replace: the attributes of pynetdicom's patched classes, the module function
# the retrieve service goes through, and the documented options install() sets.
PRELUDE = """
import json, logging, sys
from pynetdicom import _config, association
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import AssociationSocket

CLASSES = [Association, DIMSEServiceProvider, DIMSEMessage, DULServiceProvider, P_DATA_TF, AssociationSocket]
OPTIONS = ["STORE_SEND_CHUNKED_DATASET", "ENFORCE_UID_CONFORMANCE", "LOG_HANDLER_LEVEL"]

def fingerprint():
    classes = {f"{c.__name__}.{k}": id(v) for c in CLASSES for k, v in vars(c).items()}
    return {"classes": classes, "lookup": id(association.uid_to_service_class),
            "options": {k: getattr(_config, k) for k in OPTIONS}}

def changed(before, after):
    keys = set(before["classes"]) | set(after["classes"])
    names = sorted(k for k in keys if before["classes"].get(k) != after["classes"].get(k))
    options = sorted(k for k in OPTIONS if before["options"][k] != after["options"][k])
    return {"classes": names, "lookup": before["lookup"] != after["lookup"], "options": options}

def patch_modules():
    return sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("router._pynetdicom."))

class Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

warnings = Count()
logging.getLogger("router._pynetdicom").addHandler(warnings)
"""


def run(script: str) -> dict[str, Any]:
    """Run ``PRELUDE`` + ``script`` in a new interpreter; the JSON it prints last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    code = PRELUDE + textwrap.dedent(script)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_router_modules_patches_nothing_install_does() -> None:
    result = run("""
        before = fingerprint()
        import router.app, router.cli, router.commitment.scp, router.forward.process, router.listeners.dimse.scp
        import router.scu.association, router.scu.commands
        imported = fingerprint()
        loaded = patch_modules()
        from router import _pynetdicom
        patched = _pynetdicom.install()
        print(json.dumps({"on_import": changed(before, imported), "loaded_on_import": loaded, "patched": patched,
                          "on_install": changed(imported, fingerprint()), "loaded": patch_modules()}))
    """)
    assert result["on_import"] == {"classes": [], "lookup": False, "options": []}
    assert result["loaded_on_import"] == []
    assert result["patched"] is True
    on_install = result["on_install"]
    for name in ("DULServiceProvider.run_reactor", "Association._run_reactor", "DULServiceProvider._read_pdu_data",
                 "DIMSEServiceProvider.send_msg", "P_DATA_TF.encode", "DIMSEMessage.message_to_primitive"):  # fmt: skip
        assert name in on_install["classes"], name
    assert on_install["options"] == ["STORE_SEND_CHUNKED_DATASET"]  # ENFORCE_UID_CONFORMANCE is off already in 3.0
    assert set(result["loaded"]) >= {"reactor", "pdata", "command", "inline", "queues"}


def test_install_is_idempotent_and_thread_safe() -> None:
    result = run("""
        import threading
        from pynetdicom.service_class import QueryRetrieveServiceClass
        from router import _pynetdicom
        from router.listeners.dimse.qr_retrieve import RetrieveService

        calls = {"configure": 0, "patch": 0}
        configure, apply = _pynetdicom._configure, _pynetdicom._apply_patches
        def counted(name, real):
            def call():
                calls[name] += 1
                return real()
            return call
        _pynetdicom._configure = counted("configure", configure)
        _pynetdicom._apply_patches = counted("patch", apply)

        gate = threading.Barrier(8)
        results = []
        def start():
            gate.wait()
            results.append(_pynetdicom.install())
        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        once = fingerprint()
        results.append(_pynetdicom.install())
        again = changed(once, fingerprint())
        _pynetdicom.replace_service_class(QueryRetrieveServiceClass, RetrieveService)
        lookup = association.uid_to_service_class
        _pynetdicom.replace_service_class(QueryRetrieveServiceClass, RetrieveService)
        qr_move = "1.2.840.10008.5.1.4.1.2.2.2"
        print(json.dumps({"results": results, "calls": calls, "again": again,
                          "same_lookup": association.uid_to_service_class is lookup,
                          "serves": association.uid_to_service_class(qr_move).__name__}))
    """)
    assert result["results"] == [True] * 9
    assert result["calls"] == {"configure": 1, "patch": 1}
    assert result["again"] == {"classes": [], "lookup": False, "options": []}
    assert result["same_lookup"] is True, "replace_service_class wraps pynetdicom's lookup once"
    assert result["serves"] == "RetrieveService"


UNSUPPORTED = """
    import {library}
    {library}.__version__ = "{version}"
    before = fingerprint()
    from router import _pynetdicom
    results = [_pynetdicom.install() for _ in range(3)]
    after = fingerprint()

    # the router's own code paths, on pynetdicom's code: a listener AE and a C-STORE sent by StoreAssociation
    import tempfile
    from pathlib import Path
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
    from pynetdicom import evt
    from router.config import parse_config
    from router.scu.association import Item, StoreAssociation, make_requestor, set_nodelay

    folder = Path(tempfile.mkdtemp())
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = SecondaryCaptureImageStorage, generate_uid(), "FENCE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / "one.dcm", enforce_file_format=True)
    received = []
    ae = _pynetdicom.listener_ae("FENCE")
    ae.add_supported_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, lambda e: received.append(e.request) or 0)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    _pynetdicom.tune_server(server)
    port = server.server_address[1]
    config = parse_config({{"peers": {{"P": {{"ae_title": "FENCE", "host": "127.0.0.1", "port": port}}}}}}, folder)
    item = Item(folder / "one.dcm", SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    with StoreAssociation(make_requestor(config), config.peers["P"], [item]) as sender:
        status = sender.send(item, 1)
        gate = _pynetdicom.reply_gate(sender.assoc)
    server.shutdown()
    print(json.dumps({{"results": results, "warnings": warnings.messages, "changed": changed(before, after),
                      "loaded": patch_modules(), "status": status, "received": len(received),
                      "ae": type(ae).__name__, "contexts": type(server.contexts).__name__, "gate": gate is None}}))
"""


def check_unsupported(library: str, version: str) -> None:
    result = run(UNSUPPORTED.format(library=library, version=version))
    assert result["results"] == [False, False, False]
    [warning] = result["warnings"]
    assert f"{library} {version}" in warning and "without them" in warning
    # no private patch, no patch module: only the documented option the router needs
    assert result["changed"] == {"classes": [], "lookup": False, "options": ["STORE_SEND_CHUNKED_DATASET"]}
    assert [m for m in result["loaded"] if m in PATCH_MODULES] == []
    assert (result["status"], result["received"]) == (0x0000, 1), "the router still stores over pynetdicom's code"
    assert (result["ae"], result["contexts"], result["gate"]) == ("ApplicationEntity", "list", True)


def test_an_unsupported_pynetdicom_gets_no_patch() -> None:
    check_unsupported("pynetdicom", "3.1.0")


def test_an_unsupported_pydicom_gets_no_patch() -> None:
    check_unsupported("pydicom", "3.1.0")


def test_a_pynetdicom_without_chunked_sending_is_refused() -> None:
    result = run("""
        del _config.STORE_SEND_CHUNKED_DATASET
        import tempfile
        from pathlib import Path
        from router import _pynetdicom
        from router.app import Router, StartupError
        from router.config import parse_config
        try:
            _pynetdicom.install()
            refused = ""
        except _pynetdicom.UnsupportedPynetdicom as exc:
            refused = str(exc)
        try:
            Router(parse_config({}, Path(tempfile.mkdtemp())))
            startup = ""
        except StartupError as exc:
            startup = str(exc)
        print(json.dumps({"refused": refused, "startup": startup, "installed": _pynetdicom.installed(),
                          "loaded": patch_modules()}))
    """)
    assert "STORE_SEND_CHUNKED_DATASET" in result["refused"]
    assert result["startup"] == result["refused"], "router serve reports it as a start-up error"
    assert result["installed"] is False
    assert [m for m in result["loaded"] if m in PATCH_MODULES] == []
