"""The one place where pipeline outcomes become protocol statuses.

DIMSE statuses come from PS3.4 Annex B.2.3 (Storage) and PS3.7 Annex C. Later services (HL7 ACK codes, STOW-RS
failure reasons) map their outcomes here too, so an analyst reading a refusal finds the reason in one table.
"""

from __future__ import annotations

import enum

from pydicom.dataset import Dataset


class StoreOutcome(enum.Enum):
    """What happened to one inbound object."""

    STORED = "stored"  # durable, index and outbox committed
    DUPLICATE_IDENTICAL = "duplicate-identical"  # same bytes already stored: accepted, nothing done
    DUPLICATE_IGNORED = "duplicate-ignored"  # different bytes, policy 'ignore': first copy kept
    DUPLICATE_REJECTED = "duplicate-rejected"  # different bytes, policy 'reject'
    OVERWRITTEN = "overwritten"  # different bytes, policy 'overwrite'
    UNPARSEABLE = "unparseable"  # cannot be decoded: quarantined
    INVALID = "invalid"  # decodes, but lacks its UIDs or is not the object its C-STORE names: quarantined
    OUT_OF_RESOURCES = "out-of-resources"  # disk full, database unavailable
    PROCESSING_FAILED = "processing-failed"  # a stage or the router itself failed on this object


# DIMSE statuses (PS3.7 Annex C) the router answers or judges, by the name the standard gives them
SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111  # duplicate SOP instance
NO_SUCH_INSTANCE = 0x0112  # no such SOP instance (MPPS N-SET; commitment failure reason: no such object)
INVALID_ARGUMENT = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123
UNRECOGNISED_OPERATION = 0x0211
RESOURCE_LIMITATION = 0x0213
MAY_NO_LONGER_BE_UPDATED = 0xA710  # Error ID sent with 0x0110: the MPPS is final (PS3.4 F.7.2.2)

# C-STORE response statuses (PS3.4 B.2.3)
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_MISMATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000


def is_success(status: int) -> bool:
    """Success or a warning (0x0001, 0xBxxx): the peer did what was asked."""
    return status in (SUCCESS, 0x0001) or 0xB000 <= status <= 0xBFFF


def is_out_of_resources(status: int) -> bool:
    return 0xA700 <= status <= 0xA7FF


_C_STORE_STATUS = {
    StoreOutcome.STORED: SUCCESS,
    StoreOutcome.DUPLICATE_IDENTICAL: SUCCESS,
    StoreOutcome.DUPLICATE_IGNORED: SUCCESS,
    StoreOutcome.OVERWRITTEN: SUCCESS,
    StoreOutcome.DUPLICATE_REJECTED: DUPLICATE_INSTANCE,
    StoreOutcome.UNPARSEABLE: FAILURE_CANNOT_UNDERSTAND,
    StoreOutcome.INVALID: FAILURE_DATASET_MISMATCH,
    StoreOutcome.OUT_OF_RESOURCES: FAILURE_OUT_OF_RESOURCES,
    StoreOutcome.PROCESSING_FAILED: PROCESSING_FAILURE,
}


def c_store_status(outcome: StoreOutcome) -> int:
    return _C_STORE_STATUS[outcome]


class SendVerdict(enum.Enum):
    """How the forward queue treats a status a peer answered."""

    DONE = "done"
    RETRY = "retry"
    PERMANENT = "permanent"


def classify_peer_status(status: int) -> SendVerdict:
    """Classify a C-STORE response status from a downstream peer.

    Success and warnings (0x0001, 0xBxxx) mean the peer has the object. Out-of-resources (0xA7xx) and statuses
    we do not know are worth retrying. 'Data set does not match SOP class' (0xA9xx), 'cannot understand'
    (0xCxxx), 'SOP class not supported', 'not authorised', 'invalid SOP instance' and 'duplicate' refusals will
    not change by retrying.
    """
    if is_success(status):
        return SendVerdict.DONE
    if 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return SendVerdict.PERMANENT
    if status in (0x0117, 0x0122, 0x0124, DUPLICATE_INSTANCE, 0x0212):
        return SendVerdict.PERMANENT
    return SendVerdict.RETRY


# Query/Retrieve responses: C-FIND, C-MOVE, C-GET (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; docs/query.md)
QR_PENDING = 0xFF00  # C-FIND: a match follows; C-MOVE/C-GET: sub-operations are continuing
QR_CANCELLED = 0xFE00  # stopped by a C-CANCEL
QR_OUT_OF_RESOURCES = 0xA700  # the database cannot be reached or the router is out of memory
QR_TOO_MANY_MATCHES = 0xA701  # C-MOVE/C-GET: more sub-operations than a response can count (65535)
QR_SUBOPS_ALL_FAILED = 0xA702  # C-MOVE/C-GET: every sub-operation failed
QR_MOVE_DESTINATION_UNKNOWN = 0xA801  # C-MOVE: the destination AE title is not a configured peer
QR_IDENTIFIER_MISMATCH = 0xA900  # the identifier does not fit the information model (level, unique keys)
QR_CANNOT_DECODE = 0xC000  # the identifier cannot be decoded
QR_INVALID_KEY = 0xC001  # a key value is not valid for its VR (e.g. a malformed date range)
QR_INTERNAL_ERROR = 0xC002  # an unexpected error while matching: logged with its traceback
QR_SUBOPS_WARNING = 0xB000  # C-MOVE/C-GET: done, one or more sub-operations failed


def dimse_status(status: int, comment: str = "", error_id: int | None = None) -> Dataset:
    """A DIMSE response status with an Error Comment (0000,0902; at most 64 characters) and Error ID (0000,0903),
    for a handler to return: the peer's log then says why, not just the code."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds


# DIMSE-N statuses by name (PS3.7 C), and those of Print Management (PS3.4 H.4): warnings 0xB6xx, failures 0xC6xx
N_STATUS_NAMES = {
    0x0001: "requested optional attributes are not supported", 0x0105: "no such attribute",
    0x0106: "invalid attribute value", 0x0107: "attribute list error", 0x0110: "processing failure",
    0x0112: "no such SOP instance", 0x0116: "attribute value out of range", 0x0117: "invalid object instance",
    0x0118: "no such SOP class", 0x0119: "class-instance conflict", 0x0120: "missing attribute",
    0x0121: "missing attribute value", 0x0122: "SOP class not supported", 0x0123: "no such action",
    0x0124: "not authorised", 0x0210: "duplicate invocation", 0x0211: "unrecognised operation",
    0x0212: "mistyped argument", 0x0213: "resource limitation",
}  # fmt: skip
PRINT_STATUS_NAMES = {
    0xB600: "memory allocation not supported",
    0xB601: "film session printing (collation) is not supported",
    0xB602: "film session SOP instance hierarchy does not contain image box SOP instances (empty page)",
    0xB603: "film box SOP instance hierarchy does not contain image box SOP instances (empty page)",
    0xB604: "image size is larger than image box size, the image has been demagnified",
    0xB605: "requested min density or max density outside of printer's operating range",
    0xB609: "image size is larger than the image box size, the image has been cropped to fit",
    0xB60A: "image size is larger than the image box size, the image has been decimated to fit",
    0xC600: "film session SOP instance hierarchy does not contain film box SOP instances",
    0xC601: "unable to create print job SOP instance; print queue is full",
    0xC602: "unable to create print job SOP instance; print queue is full",
    0xC603: "image size is larger than image box size",
    0xC605: "insufficient memory in printer to store the image",
    0xC613: "combined print image size is larger than the image box size",
    0xC616: "there is an existing film box that has not been printed and N-ACTION at the film session level is "
    "not supported",
}
PRINT_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})  # and every 0xBxxx
PRINT_RETRIED = frozenset({0xC601, 0xC602, 0xC605, PROCESSING_FAILURE, RESOURCE_LIMITATION})  # and 0xA7xx


def print_status_text(status: int) -> str:
    """``0xC603 image size is larger than image box size``: a printer's answer with the name the standard gives."""
    name = PRINT_STATUS_NAMES.get(status) or N_STATUS_NAMES.get(status)
    if name is None:
        name = "warning" if 0xB000 <= status <= 0xBFFF else "success" if status == SUCCESS else "failure"
    return f"0x{status:04X} {name}"


def is_print_warning(status: int) -> bool:
    """A printer's answer that did what was asked, with a warning worth reporting (0xB6xx and the N warnings)."""
    return status in PRINT_WARNINGS or 0xB000 <= status <= 0xBFFF


def classify_print_failure(status: int) -> SendVerdict:
    """A printer's failure: a full queue, memory, a processing failure or out of resources is tried again later;
    a refusal of what was sent (0xC603 image too large, an attribute it does not take ...) will not change."""
    if status in PRINT_RETRIED or is_out_of_resources(status):
        return SendVerdict.RETRY
    if 0x0100 <= status <= 0x02FF or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return SendVerdict.PERMANENT
    return SendVerdict.RETRY
