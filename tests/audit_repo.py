"""The audit tests' helpers: the DICOM audit message schema (two validators), certificates, a real repository.

- ``schema_problems(xml)``: lxml's RELAX NG validator on tests/audit_schema/audit-message.rnc (PS3.15 A.5.1.1),
  converted to the XML syntax by rnc2rng; pure Python, for every test.
- ``jing_problems(xmls)``: Debian's jing on the same compact schema, for the interop tests.
- ``Certificates``: a trustme CA, a server certificate for 127.0.0.1 and a client certificate for the router.
- ``Rsyslog``: Debian's rsyslogd as an audit record repository on free loopback ports: TLS (RFC 5425, gtls
  driver, the client's certificate required) and UDP (RFC 5426), each input written raw to its own file.
- ``received(path)``: the syslog messages a repository wrote, split into header and XML.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import rnc2rng
import trustme
from lxml import etree

from peers import free_port, wait_for
from tools import jing, rsyslogd

SCHEMA = Path(__file__).parent / "audit_schema" / "audit-message.rnc"
BOM = "\ufeff"


@functools.cache
def _relaxng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.fromstring(rnc2rng.dumps(rnc2rng.load(str(SCHEMA))).encode()))


def schema_problems(xml: str) -> list[str]:
    """Why ``xml`` is not a valid DICOM audit message (empty when it is)."""
    schema = _relaxng()
    if schema.validate(etree.fromstring(xml.encode())):
        return []
    return [f"{e.line}:{e.column}: {e.message}" for e in schema.error_log]


def jing_problems(xmls: list[str]) -> str:
    """jing's complaints about ``xmls`` (empty when every one is valid)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for n, xml in enumerate(xmls):
            path = Path(folder) / f"m{n:05d}.xml"
            path.write_text(xml, encoding="utf-8")
            paths.append(str(path))
        done = subprocess.run([jing(), "-c", str(SCHEMA), *paths], capture_output=True, text=True, timeout=120)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "warning" not in line]
    return "\n".join(errors) if done.returncode or errors else ""


@dataclass(frozen=True)
class Certificates:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client(self) -> Path:
        return self.folder / "client.pem"  # key and chain in one file

    @property
    def stranger(self) -> Path:
        return self.folder / "stranger.pem"  # a client certificate from another CA

    @classmethod
    def make(cls, folder: Path) -> Certificates:
        folder.mkdir(parents=True, exist_ok=True)
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
        server.private_key_pem.write_to_path(str(folder / "server.key"))
        ca.issue_cert("router.test").private_key_and_cert_chain_pem.write_to_path(str(folder / "client.pem"))
        other.issue_cert("router.test").private_key_and_cert_chain_pem.write_to_path(str(folder / "stranger.pem"))
        return cls(folder)


CONFIG = """\
global(workDirectory="{work}" defaultNetstreamDriver="gtls" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{certs.ca}" defaultNetstreamDriverCertFile="{certs.server_cert}"
       defaultNetstreamDriverKeyFile="{certs.server_key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="tls") {{ action(type="omfile" file="{work}/tls.log" template="raw" flushOnTXEnd="on") }}
ruleset(name="udp") {{ action(type="omfile" file="{work}/udp.log" template="raw" flushOnTXEnd="on") }}
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls")
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="udp")
"""


class Rsyslog:
    """rsyslogd on free loopback ports; ``stop`` and ``start`` again keep the ports and the files."""

    def __init__(self, work: Path, certs: Certificates) -> None:
        self.work = work
        self.certs = certs
        self.tls_port, self.udp_port = free_port(), free_port()
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(CONFIG.format(work=work, certs=certs, tls_port=self.tls_port, udp_port=self.udp_port))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tls_log(self) -> Path:
        return self.work / "tls.log"

    @property
    def udp_log(self) -> Path:
        return self.work / "udp.log"

    def start(self) -> Rsyslog:
        log = (self.work / "rsyslogd.out").open("ab")
        self.proc = subprocess.Popen(
            [rsyslogd(), "-n", "-f", str(self.conf), "-i", str(self.work / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None or self._listening()), 20,
                 what="rsyslogd to listen")  # fmt: skip
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd did not start: {(self.work / 'rsyslogd.out').read_text()}")
        return self

    def _listening(self) -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.tls_port)) == 0

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: rsyslogd writes out what it received, then ends."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class Received:
    header: str  # <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD
    xml: str


def received(path: Path) -> list[Received]:
    """The messages rsyslog wrote to ``path`` (one per line, as received: ``%rawmsg%``)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        head, sep, xml = line.partition(BOM)
        if sep:
            found.append(Received(head.rstrip(" "), xml))
    return found


def wait_received(path: Path, count: int, timeout: float = 30) -> list[Received]:
    wait_for(lambda: len(received(path)) >= count, timeout, what=f"{count} message(s) in {path.name}")
    time.sleep(0.3)  # the scenario: a short quiet time, so that a message sent twice would show
    return received(path)
