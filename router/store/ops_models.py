"""The operations tables: the admin API's users, their tokens and web sessions, the activity record, the peers'
forwarding state and the rule files' previous versions.

Beside ``router.store.models`` (the index and the outbox) so that those stay as they are; ``router.store.db`` imports
this module, so ``create_all`` adds these tables to an existing database too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, text
from sqlmodel import Field, SQLModel

from router.store.models import utcnow

ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may


class User(SQLModel, table=True):
    """Someone who may use the admin API and the console (``router users add``)."""

    __tablename__ = "router_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=256, description="argon2id (PHC string)")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A user's token for scripts (``Authorization: Bearer``); only its SHA-256 is kept."""

    id: int | None = Field(default=None, primary_key=True)
    user_fk: int = Field(foreign_key="router_user.id", index=True)
    label: str = Field(default="", max_length=64)
    token_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class WebSession(SQLModel, table=True):
    """A console login: the cookie's SHA-256, its CSRF token and when it ends. ``from_users``: the user is one of
    the router's users, whose current role counts (and whose removal or new password ends the session); otherwise
    a plugin or ``http.auth`` vouched for the name and ``role`` is what it said at login."""

    id: int | None = Field(default=None, primary_key=True)
    user: str = Field(max_length=64, index=True)
    role: str = Field(default="", max_length=16)
    from_users: bool = True
    token_hash: str = Field(unique=True, max_length=64)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class PeerState(SQLModel, table=True):
    """A peer whose forwarding an operator paused: its jobs stay pending until it is resumed."""

    peer: str = Field(primary_key=True, max_length=64)
    paused: bool = True
    changed_by: str = Field(default="", max_length=64)
    changed_at: datetime = Field(default_factory=utcnow)


class RuleVersion(SQLModel, table=True):
    """A rule file as it was before a save through the admin API replaced it (``""``: the file did not exist)."""

    id: int | None = Field(default=None, primary_key=True)
    file: str = Field(max_length=255, index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    saved_by: str = Field(default="", max_length=64)
    saved_at: datetime = Field(default_factory=utcnow)


def _keyed(name: str, *columns: str, where: str) -> Index:
    """A partial index (SQLite and PostgreSQL): rows without the key, most of them for most keys, cost no entry."""
    predicate = text(where)
    return Index(name, *columns, sqlite_where=predicate, postgresql_where=predicate)


class Activity(SQLModel, table=True):
    """One thing the router did with an object or message: received (from whom, which rules, each stage), refused,
    a delivery attempt and its outcome, an operator's action. ``subject`` ties the rows of one object together:
    the SOP Instance UID of a DICOM object or MPPS step, the message file of an HL7 message (its jobs' path).

    Each index is a cost on every object received, so there are few: ``subject`` (which is the SOP Instance UID of
    a DICOM object, so that key needs no index of its own), the business keys where a row has one, and the
    deliveries by peer. ``at`` has none: searches find subjects first, and the hourly clean-up finds the last old
    id once and deletes by id."""

    __table_args__ = (
        _keyed("ix_activity_patient_id", "patient_id", where="patient_id <> ''"),
        _keyed("ix_activity_accession", "accession", where="accession <> ''"),
        _keyed("ix_activity_study_uid", "study_uid", where="study_uid <> ''"),
        _keyed("ix_activity_msh10", "msh10", where="msh10 <> ''"),
        _keyed("ix_activity_delivered", "peer", "at", where="event = 'delivered'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    event: str = Field(max_length=32)
    kind: str = Field(default="", max_length=16)
    subject: str = Field(max_length=1024, index=True)
    patient_id: str = Field(default="", max_length=64)
    accession: str = Field(default="", max_length=16)
    study_uid: str = Field(default="", max_length=64)
    sop_uid: str = Field(default="", max_length=64)
    msh10: str = Field(default="", max_length=64)
    peer: str = Field(default="", max_length=64)
    job_id: int | None = None
    status: int | None = None
    source: str = Field(default="", max_length=256, description="calling AE / sending application and address")
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Node(SQLModel, table=True):
    """A router node sharing the database: its forward workers' heartbeat (``router.outbox.leases``).

    ``instance`` is ``host:pid`` of its serving process: a second live router under the same ``node_id`` is told
    apart from a forward process restarted by the same one. ``leased`` is how many jobs it held at the last beat."""

    node_id: str = Field(primary_key=True, max_length=64)
    instance: str = Field(default="", max_length=128)
    version: str = Field(default="", max_length=32)
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None
    leased: int = 0
    rules: str = Field(default="", max_length=64, description="digest of the rule files its serving process routes by")
    dropped: int = 0  # outcomes dropped since start because another node had taken the job over


class RuleSet(SQLModel, table=True):
    """A version of the cluster's rule files (``router.rules.shared``): the newest row is the rule set every node
    routes by. ``files`` is a JSON object, file name -> YAML text; ``digest`` the SHA-256 of the files."""

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(max_length=64)
    files: str = Field(sa_column=Column(Text, nullable=False))
    node_id: str = Field(default="", max_length=64, description="the node that published it")
    saved_at: datetime = Field(default_factory=utcnow)
