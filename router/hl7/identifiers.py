"""Patient identifiers from HL7 CX values, and the Dutch citizen service number (BSN).

A PID-3 repetition is a BSN when its assigning authority (CX.4) is ``NLMINBIZA`` (the Dutch ministry of the
interior, the issuer of BSNs) or the BSN OID, or when its identifier type (CX.5) is ``NNNLD`` (national number,
the Netherlands). A BSN is nine digits (eight-digit ones are left-padded with a zero) and passes the
eleven-test (elfproef): 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 is a multiple of 11, and not zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.store.models import BSN_OID

BSN_AUTHORITIES = {"NLMINBIZA", BSN_OID}
BSN_ID_TYPE = "NNNLD"


@dataclass(frozen=True)
class Identifier:
    value: str
    authority: str = ""  # HD.1 namespace id, or BSN_OID for a BSN
    authority_uid: str = ""  # HD.2
    authority_uid_type: str = ""  # HD.3
    id_type: str = ""  # CX.5
    is_bsn: bool = False


def bsn_ok(value: str) -> bool:
    """The eleven-test. Accepts 8 or 9 digits."""
    if not value.isdigit() or len(value) not in (8, 9):
        return False
    digits = [int(c) for c in value.zfill(9)]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0 and any(digits)


def identifier_from_cx(value: str, namespace: str, uid: str, uid_type: str, id_type: str) -> Identifier:
    """A CX value (CX.1, CX.4 as its three HD subcomponents, CX.5) as an Identifier."""
    id_type = id_type.upper()
    is_bsn = namespace.upper() in BSN_AUTHORITIES or uid == BSN_OID or id_type == BSN_ID_TYPE
    if is_bsn:
        return Identifier(
            value=value.zfill(9) if value.isdigit() else value,
            authority=BSN_OID,
            authority_uid=BSN_OID,
            authority_uid_type="ISO",
            id_type=id_type or BSN_ID_TYPE,
            is_bsn=True,
        )
    return Identifier(value, namespace or uid, uid, uid_type, id_type)
