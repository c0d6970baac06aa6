"""The cluster's rule set: every node sharing one PostgreSQL database routes by the same rule files (docs/cluster.md).

The database keeps the versions of the rule files (table ``ruleset``, file name -> YAML text, and their SHA-256
digest); the newest version is the cluster's. Each node's serving process syncs its ``rules_dir`` with it at
start-up and at every rules reload (``rules_reload_interval``):

- the folder holds the cluster's version: nothing to do;
- a newer version was published by another node (a save through the admin API or console there): its files are
  written into this node's folder (atomically, the files that are not in it removed) and loaded;
- the folder was edited on this node (a save through this node's API, or a hand edit) and loads without problems:
  it is published as the cluster's new version, which the other nodes take at their next reload. At start-up the
  folder counts as edited when one of its files is newer than the cluster's version (a deployment while the node
  was stopped); otherwise the node takes the cluster's version, and the files it replaces are kept in the rule
  history (``router.store.rule_history``), so a forgotten hand edit can be found again;
- anything else (an edit that does not load, a folder that cannot be written): the node routes by other rules
  than the cluster's. It says so: a warning at every reload, and its ``rules`` digest in ``router nodes`` and
  ``/api/nodes`` differs from the cluster's (``rules_current`` false).

The newest publication wins: two nodes edited at once end with the later one's files on every node, and the
earlier one's version stays in ``ruleset``. SQLite has one node: nothing is synced there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from router.rules.loader import rule_files
from router.store import files
from router.store.models import utcnow
from router.store.rule_history import keep_version
from router.store.tables import NODE, RULE_SET

log = logging.getLogger(__name__)
WARN_EVERY = 60.0  # s: how often a node routing by other rules than the cluster's says so


def read_folder(folder: Path) -> dict[str, str]:
    """The rule files of ``folder``, name -> text; a file that cannot be read is left out."""
    found = {}
    for path in rule_files(folder):
        try:
            found[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return found


def digest_of(rule_texts: dict[str, str]) -> str:
    """The SHA-256 of a set of rule files (names and texts), hex."""
    sha = hashlib.sha256()
    for name in sorted(rule_texts):
        sha.update(name.encode() + b"\0" + rule_texts[name].encode() + b"\0")
    return sha.hexdigest()


@dataclass(frozen=True)
class Published:
    id: int
    digest: str
    rule_texts: dict[str, str]
    node_id: str
    saved_at: datetime


def newest(engine: Engine) -> Published | None:
    """The cluster's rule set: the newest published version."""
    query = select(RULE_SET).order_by(RULE_SET.c.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    saved = row.saved_at if row.saved_at.tzinfo else row.saved_at.replace(tzinfo=utcnow().tzinfo)
    return Published(int(row.id), row.digest, json.loads(row.files), row.node_id, saved)


class SharedRules:
    """One node's side of the cluster's rule set (see the module's description).

    ``reload``: loads the folder into the rules in force; True when it loaded without problems."""

    def __init__(self, engine: Engine, folder: Path, node_id: str, reload: Callable[[], bool]) -> None:
        self.engine = engine
        self.folder = folder
        self.node_id = node_id
        self.reload = reload
        self.seen: int | None = None  # the newest version this node took or published
        self.synced: str | None = None  # the folder's digest when it was last the cluster's rule set
        self.routing = ""  # the digest of the rules in force, as reported in the node's row
        self._lock = threading.Lock()
        self._reported: str | None = None
        self._warned: tuple[str, str, float] = ("", "", 0.0)

    def sync(self, loaded: bool) -> None:
        """Bring the folder and the cluster's rule set together; ``loaded``: the folder loaded without problems
        (the rules in force are the folder's)."""
        with self._lock:
            texts = read_folder(self.folder)
            digest = digest_of(texts)
            if loaded:
                self.routing = digest
            cluster = newest(self.engine)
            start = self.synced is None
            edited = not start and digest != self.synced  # since the folder was last the cluster's
            if start and cluster is not None and digest != cluster.digest:
                edited = self._newest_file() > cluster.saved_at.timestamp()
            if cluster is not None and digest == cluster.digest:
                self.seen, self.synced = cluster.id, digest
            elif loaded and (cluster is None or edited):
                self.seen, self.synced = self._publish(texts, digest), digest
                cluster = None
            elif cluster is not None and (self.seen is None or cluster.id > self.seen):
                self._take(cluster, texts, keep=start or edited)
            self._report(cluster)

    def _newest_file(self) -> float:
        return max((p.stat().st_mtime for p in rule_files(self.folder)), default=0.0)

    def _publish(self, texts: dict[str, str], digest: str) -> int:
        with self.engine.begin() as conn:
            version = conn.execute(
                insert(RULE_SET)
                .values(digest=digest, files=json.dumps(texts), node_id=self.node_id, saved_at=utcnow())
                .returning(RULE_SET.c.id)
            ).scalar_one()
        log.info("published this node's %d rule file(s) (%s) as the cluster's rule set", len(texts), digest[:12])
        return int(version)

    def _take(self, cluster: Published, texts: dict[str, str], keep: bool) -> None:
        """Write the cluster's files into the folder and load them. ``keep``: the files replaced were not published
        (a hand edit): kept in the rule history first."""
        folder = self.folder
        try:
            for name in sorted(set(texts) | set(cluster.rule_texts)):
                text = cluster.rule_texts.get(name)
                if texts.get(name) == text:
                    continue
                if keep and name in texts:
                    keep_version(self.engine, name, texts[name], f"node {self.node_id}")
                if text is None:
                    (folder / name).unlink()
                else:
                    folder.mkdir(parents=True, exist_ok=True)
                    files.commit_file(files.write_temp(folder, text.encode("utf-8")), folder / name)
        except OSError as exc:
            log.error("cannot write the cluster's rule set into %s: %s", folder, exc)
            return
        self.seen, self.synced = cluster.id, cluster.digest
        loaded = self.reload()
        if loaded:
            self.routing = cluster.digest
        log.warning("took the cluster's rule set %s (published by node %r at %s)%s", cluster.digest[:12],
                    cluster.node_id, cluster.saved_at.isoformat(timespec="seconds"),
                    "" if loaded else ": it does not load here, the rules loaded before stay in force")  # fmt: skip

    def _report(self, cluster: Published | None) -> None:
        """Warn while this node routes by other rules than the cluster's (once a minute); write its digest."""
        if cluster is not None and self.routing != cluster.digest:
            routing, published, when = self._warned
            if (routing, published) != (self.routing, cluster.digest) or time.monotonic() - when > WARN_EVERY:
                self._warned = (self.routing, cluster.digest, time.monotonic())
                log.warning("this node routes by rules %s, not by the cluster's rule set %s (published by node %r): "
                            "fix this node's rule files or save them again through the admin API",
                            self.routing[:12] or "(none)", cluster.digest[:12], cluster.node_id)  # fmt: skip
        if self._reported == self.routing:
            return
        with self.engine.begin() as conn:
            result = conn.execute(update(NODE).where(NODE.c.node_id == self.node_id).values(rules=self.routing))
        if result.rowcount:  # no row yet: the forward workers have not beaten yet, written at the next sync
            self._reported = self.routing
