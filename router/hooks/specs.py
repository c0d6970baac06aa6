"""Every hook a plugin can implement. Each is a documented stub; docs/plugins.md is the reference.

Three kinds, as in pynetdicom's notification and intervention events and pytest's ``firstresult`` hooks:

- *provides*: ``router_stages`` returns what the plugin adds (stages that rules can name), ``router_metrics`` the
  collectors a scrape of ``/metrics`` reads;
- *decisions* (``firstresult=True``): ``router_association_policy`` and ``router_authenticate``. Implementations
  are asked in turn until one answers (returns something other than ``None``); the built-in answer (plugin
  ``access``) comes last. An implementation that raises is logged and the router takes the safe answer: refuse.
- *notifications*: every other hook. They are told what happened and cannot change it. Each implementation is
  called on its own (``router.hooks.calls.notify``): one that raises is logged with its plugin's name, the others
  are still called, and the caller (an association, a store, an acknowledgement) goes on as if nothing happened.

Hook arguments are passed by keyword; implement only the arguments you need. "Who" is ``calling_ae`` (DICOM),
``user`` (HTTP, once authenticated) and ``address`` (``host:port`` of the other side); patient names and IDs are
never in the scalar arguments (a plugin that needs them reads the data set, envelope or message it is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prometheus_client.registry import Collector
    from pydantic import BaseModel
    from pydicom.dataset import Dataset

    from router.config import RouterConfig
    from router.destinations.base import DestinationType
    from router.hl7.message import Hl7Header
    from router.hooks.answers import Accept, Authenticated, Denied, ImportedInstance, InstanceRef, Reject
    from router.intake.envelope import Envelope
    from router.intake.stage import Stage
    from router.store.models import Job
    from router.store.pruning import EvictedStudy

PROJECT = "router"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- provides ------------------------------------------------------------------------------------------------
@hookspec
def router_stages() -> list[Stage]:  # type: ignore[empty-body]
    """Return the stages this plugin provides, each with a unique ``name`` used in rule files."""


@hookspec
def router_metrics() -> list[Collector]:  # type: ignore[empty-body]
    """Return the collectors (``prometheus_client`` ``Collector``: objects with ``collect()`` yielding metric
    families) whose metrics ``/metrics`` exposes. Asked on every scrape, in the ``serve`` process, on a worker
    thread: a collector may read the database. Name metrics ``router_...`` (or your plugin's prefix), in base units,
    with label values from the configuration only (never UIDs or patient data)."""


# -- life cycle ----------------------------------------------------------------------------------------------
@hookspec
def router_startup(config: RouterConfig, process: str, plugin_settings: Mapping[str, BaseModel]) -> None:
    """The router has loaded its configuration and is about to start its listeners. Called once in each of the
    router's processes, each with its own plugin instances: ``process`` is ``serve`` (listeners, ingest) or
    ``forward`` (the forward workers, which announce ``router_forwarded`` and ``router_forward_failed``), or the
    name of a command that announces something in its short life (``users``: ``router users`` announces
    ``router_admin_changed`` between this and ``router_shutdown``; ``import`` and ``export``: ``router import``
    and ``router export``, docs/media.md).
    ``plugin_settings`` holds each plugin's validated settings by plugin name (``plugins: {NAME: ...}``)."""


@hookspec
def router_shutdown(process: str) -> None:
    """The router process ``process`` (``serve``, ``forward``, or a command) has stopped serving: its listeners are
    closed and its workers have ended. Called once per process, the last hook it calls (the database is still
    reachable)."""


@hookspec
def router_rules_reloaded(ok: bool, rules: int, files: list[str], problems: list[str]) -> None:
    """The rule files changed while the router ran and were read again. ``ok``: the new rules are in force;
    else the edit was refused for ``problems`` (``file:line: message``) and the previous rules stay. Either way
    ``rules`` rules from ``files`` are in force now. Not called for the rules loaded at start-up."""


# -- DICOM associations --------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def router_association_policy(
    calling_ae: str, called_ae: str, address: str, config: RouterConfig
) -> Accept | Reject | None:
    """Decide whether an inbound association may proceed, before its presentation contexts are negotiated.

    Return ``None`` (no opinion: the next plugin is asked), ``router.hooks.answers.Accept()`` (let it in, no later
    plugin is asked) or ``Reject(reason, result, source, diagnostic)`` (A-ASSOCIATE-RJ, PS3.8 9.3.4). The
    built-in implementation (plugin ``access``, asked last) applies ``dicom.allowed_calling_aets`` and
    ``dicom.check_called_aet``. ``called_ae`` is the AE title the caller asked for. An implementation that raises
    rejects the association (rejected-transient, service-user, no-reason-given)."""


@hookspec
def router_association_accepted(calling_ae: str, called_ae: str, address: str, direction: str) -> None:
    """An association was established. ``direction`` is ``inbound`` or ``outbound``."""


@hookspec
def router_association_rejected(
    calling_ae: str, called_ae: str, address: str, reason: str, result: int, source: int, diagnostic: int
) -> None:
    """An inbound association was rejected, by the association policy or by a limit (``dicom.max_associations``).
    ``result``, ``source`` and ``diagnostic`` are those of the A-ASSOCIATE-RJ (PS3.8 9.3.4); ``reason`` says why
    in words (the text a policy plugin gave)."""


@hookspec
def router_tls_failed(direction: str, address: str, port: int, reason: str) -> None:
    """A TLS handshake failed. ``inbound``: a client's handshake to the TLS listener (``dicom.tls``), ``address``
    and ``port`` being the client's; ``outbound``: ours to a peer with ``tls``, ``address`` and ``port`` being the
    peer's. ``reason`` says why in words (certificate verify failed: ..., no TLS handshake within 30 s, ...)."""


@hookspec
def router_dimse_answered(service: str, sop_class_uid: str, calling_ae: str, address: str, status: int) -> None:
    """A DIMSE request on an association a peer opened was answered with its final ``status`` (no pending
    response). ``service``: ``C-ECHO``, ``C-STORE``, ``C-FIND``, ``C-MOVE``, ``C-GET``, ``N-ACTION``,
    ``N-EVENT-REPORT``, ``N-CREATE`` or ``N-SET``; ``sop_class_uid`` the request's (affected) SOP class."""


# -- objects received ----------------------------------------------------------------------------------------
@hookspec
def router_instance_received(envelope: Envelope) -> None:
    """An object was received and decoded, before rules run and before it is durable."""


@hookspec
def router_instance_stored(envelope: Envelope, outcome: str, path: str, jobs: int) -> None:
    """An object is durable (file fsynced, index and outbox committed) and about to be acknowledged.

    ``outcome`` is a ``router.statuses.StoreOutcome`` value (``stored``, ``duplicate-identical`` ...);
    ``jobs`` is the number of outbox jobs created for it.
    """


@hookspec
def router_instance_refused(source: Any, sop_instance_uid: str, outcome: str, status: int, reason: str) -> None:
    """An inbound object was refused with a failure ``status`` (quarantined, duplicate, out of resources)."""


# -- forwarding (the forward workers' process) ---------------------------------------------------------------
@hookspec(firstresult=True)
def router_destinations(peer_type: str) -> DestinationType | None:
    """Decision: the destination type that delivers to peers configured with ``type: <peer_type>``, or None when
    this plugin does not provide it. Asked once per peer when the router and its forward process start; the first
    plugin that answers wins, and the built-in ``dicom``, ``mllp`` and ``dicomweb`` types (plugin ``destinations``)
    answer last. A destination type is a factory ``(name, peer, context) -> Destination``
    (``router.destinations.base``); its optional ``settings_model`` attribute, a pydantic model, checks the keys of
    the peer entry besides ``type`` and ``max_associations`` at start-up. An implementation that raises answers
    None for that type: the router refuses to start, naming the peer."""


@hookspec
def router_forwarded(job: Job, status: int) -> None:
    """An outbox job was delivered to its peer, which answered ``status`` (success or warning)."""


@hookspec
def router_forward_failed(job: Job, error: str, dead: bool) -> None:
    """An attempt to deliver an outbox job failed; ``dead`` is true when it went to the dead letters."""


# -- HL7 -----------------------------------------------------------------------------------------------------
@hookspec
def router_hl7_received(
    message_type: str,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    address: str,
    message: Hl7Header,
) -> None:
    """An HL7 message was read over MLLP (its header could be parsed), before it is applied. ``message_type`` is
    ``ADT^A08``, ``control_id`` MSH-10, the sending application and facility MSH-3 and MSH-4 as sent;
    ``message`` is the parsed ``router.hl7.message.Hl7Message``."""


@hookspec
def router_hl7_acknowledged(
    ack_code: str,
    error: str,
    message_type: str,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    address: str,
    message: Hl7Header | None,
) -> None:
    """The acknowledgement of an HL7 message is about to be sent. ``ack_code`` is ``AA`` (applied and durable, or
    applied before: a repeat), ``AE`` (read, but wrong: not applied) or ``AR`` (refused: unsupported, unreadable,
    or the router cannot store it now); ``error`` is the ERR text (``""`` with AA). ``message`` is the parsed
    message, or only its header when the message could not be read, or ``None`` when not even MSH could be."""


# -- DIMSE-N: MPPS and storage commitment --------------------------------------------------------------------
@hookspec
def router_mpps_created(sop_instance_uid: str, status: str, calling_ae: str, address: str, dataset: Dataset) -> None:
    """An MPPS N-CREATE was accepted and is durable. ``status`` is the step's Performed Procedure Step Status
    (``IN PROGRESS``); ``dataset`` the step as created (its study, accession and patient attributes)."""


@hookspec
def router_mpps_updated(sop_instance_uid: str, status: str, calling_ae: str, address: str, dataset: Dataset) -> None:
    """An MPPS N-SET was accepted and is durable. ``status`` is the step's status after it (``IN PROGRESS``,
    ``COMPLETED``, ``DISCONTINUED``); ``dataset`` the whole step as it now is."""


@hookspec
def router_commitment_requested(
    transaction_uid: str, direction: str, peer_ae: str, address: str, sop_instance_uids: list[str]
) -> None:
    """Storage commitment was requested (N-ACTION) for ``sop_instance_uids``. ``direction``: ``inbound`` (the
    peer ``peer_ae`` asked the router; called once the request is checked and its report is owed) or
    ``outbound`` (the forward workers asked the peer, which accepted the request)."""


@hookspec
def router_commitment_reported(
    transaction_uid: str, direction: str, peer_ae: str, address: str, committed: list[str], failed: list[str]
) -> None:
    """A storage commitment report (N-EVENT-REPORT) went through: ``inbound``, the peer reported on a request of
    the router's (called when the report was accepted); ``outbound``, the router's report reached the requesting
    peer. ``committed`` and ``failed`` are SOP Instance UIDs."""


# -- what leaves the store: queries and exports --------------------------------------------------------------
@hookspec
def router_query_answered(
    service: str,
    calling_ae: str,
    user: str,
    address: str,
    sop_class_uid: str,
    level: str,
    identifier: Dataset | None,
    matches: int,
    status: int,
) -> None:
    """A query was answered with ``matches`` results. ``service``: ``C-FIND`` (Query/Retrieve), ``MWL``
    (Modality Worklist C-FIND) or ``QIDO-RS``; ``status`` the final DIMSE status (C-FIND, MWL) or HTTP status
    (QIDO-RS); ``level`` the query level (``""`` for MWL); ``sop_class_uid`` the C-FIND SOP class (``""`` for
    QIDO-RS); ``identifier`` the query keys as a data set (``None`` when it could not be decoded)."""


@hookspec
def router_instances_exported(
    service: str,
    calling_ae: str,
    user: str,
    address: str,
    destination: str,
    instances: list[InstanceRef],
    failed: int,
    status: int,
) -> None:
    """Stored instances were sent out on request. ``service``: ``C-MOVE``, ``C-GET``, ``WADO-RS`` (whole
    instances) or ``WADO-RS/metadata``, ``/frames``, ``/bulkdata``, ``/rendered``; ``destination``: the move
    destination AE title, the requestor (C-GET) or ``address`` (WADO-RS). ``instances`` were sent (success or
    warning); ``failed`` were not (sub-operations that failed, or a client that went away). ``status``: the
    final DIMSE status, or the HTTP status."""


@hookspec
def router_instances_imported(
    media: str, user: str, destination: str, instances: list[ImportedInstance], refused: int, damaged: int
) -> None:
    """``router import`` read objects from media (a CD, a folder, a zip; ``media`` its path) and took them in: into
    the router's intake (``destination`` ``""``; each object was also announced by ``router_instance_stored``) or,
    with ``--to``, straight to the peer ``destination``. ``instances``: the objects imported (``ImportedInstance``:
    UIDs, and the patient and accession values an Import audit message names, never to be logged); ``refused``:
    objects refused (character set, intake, peer); ``damaged``: files the DICOMDIR names that could not be read.
    ``user``: the operating system user who ran the command. Not called for ``--dry-run`` or ``--list``."""


# -- the store -----------------------------------------------------------------------------------------------
@hookspec
def router_evicted(reason: str, studies: list[EvictedStudy], patients: int, instances: int, size: int) -> None:
    """Stored objects were deleted from the router: their index rows are gone (committed) and their files removed.
    ``reason``: ``cache`` (cache mode, above the high-water mark: a least recently used patient, whole),
    ``keep_days`` (received longer ago than ``storage.keep_days``) or ``committed`` (a peer committed them:
    ``delete_after_commit``). ``studies``: one ``router.store.pruning.EvictedStudy`` per study touched
    (``study_uid``, ``patient_id``, ``issuer``, ``instances`` deleted from it, ``removed``: nothing of it is left);
    ``patients``: patient rows deleted (nothing of them is left); ``instances``; ``size``: bytes freed. The
    patient IDs are for an audit trail: never log them."""


# -- HTTP ----------------------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def router_authenticate(
    authorization: str, address: str, method: str, path: str, config: RouterConfig
) -> Authenticated | Denied | None:
    """Decide who an HTTP request is from: every request that carries an Authorization header, and every console
    login (``POST /api/login``, asked as basic credentials); a request of a console session is from its login's
    user. ``authorization`` is the Authorization header (``""`` when absent). Return ``None`` (no opinion),
    ``router.hooks.answers.Authenticated(user, method, role)`` (``role``: ``viewer``, ``operator`` or ``admin`` in
    the admin API; none: the API refuses everything) or ``Denied(reason, user)`` (401). The built-in implementation
    (plugin ``access``, asked last) checks ``http.auth`` (role admin), then the router's users and their API
    tokens; with no answer at all the request goes on only when ``http.auth`` is not set. Called in a worker thread
    when there is an Authorization header (a password hash takes time), else on the HTTP server's event loop. An
    implementation that raises denies."""


@hookspec
def router_authentication_succeeded(user: str, method: str, address: str, path: str) -> None:
    """An HTTP request was authenticated as ``user`` (``method``: ``bearer``, ``basic``, ``token`` (a user's API
    token), ``login`` (a console login, ``path`` ``/api/login``) or a plugin's). A console session's requests are
    not announced one by one: their login was."""


@hookspec
def router_authentication_failed(user: str, reason: str, address: str, path: str) -> None:
    """An HTTP request was refused 401. ``user``: the name it claimed (basic credentials), else ``""``;
    ``reason``: why (no credentials, wrong credentials, a plugin's reason)."""


@hookspec
def router_admin_changed(user: str, role: str, action: str, target: str, address: str, detail: dict[str, Any]) -> None:
    """An administrative change was made through the admin API or the ``router users``/``router db`` commands:
    ``action`` is one of ``rules.saved``, ``rules.reverted``, ``job.retried``, ``jobs.retried``, ``job.deleted``,
    ``peer.paused``, ``peer.resumed``, ``study.sent``, ``user.added``, ``user.changed``, ``user.removed``,
    ``token.created``, ``token.revoked``, ``session.ended`` (a console logout), ``schema.upgraded`` (``router db
    upgrade``); ``target`` what it was done to (a rule file, a job id, a peer, a study UID, a user name, the schema
    revision). ``user`` and ``role`` are who did it (``cli:NAME`` and ``""`` for the command line), ``address``
    where from (``""`` for the command line). ``detail`` says more (how many jobs, the kept version of a rule file
    ...); never a secret. Called once the change is durable."""
