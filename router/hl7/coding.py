"""HL7 coding systems (HL7 table 0396, the third component of a CE/CWE such as OBR-4.3) as DICOM Coding Scheme
Designators (0008,0102; PS3.16 section 8).

Most mnemonics are the same in both standards (``LN``, ``DCM``, ``SCT``, ``I10``...). Where they differ, the DICOM
one is written (``SNM`` and ``SCT`` are SNOMED CT: ``SCT``; ``I9`` is ``I9C``). A local scheme that already has a
DICOM-valid name (``99`` followed by a site's letters, PS3.16 8.2) is kept. HL7's ``L`` (local general code), the
other local codes, an empty scheme and a mnemonic DICOM does not define are written as the configured local
designator (``hl7.local_coding_scheme``, default ``99LOCAL``): DICOM defines no ``L``, so copying it gives an
object that fails validation.

``dicom_coding_scheme`` is pure and idempotent (a designator it returned maps to itself), so it may be applied
again where a value is read.
"""

from __future__ import annotations

import re

DEFAULT_LOCAL_SCHEME = "99LOCAL"
LOCAL_SCHEME_PATTERN = r"^99[A-Z0-9_]{1,14}$"  # SH, 16 characters at most; PS3.16 8.2: private schemes start 99

# HL7 table 0396 mnemonic -> DICOM Coding Scheme Designator, where they differ
HL7_TO_DICOM = {
    "SNM": "SCT",  # HL7: SNOMED; taken as SNOMED CT, which DICOM names SCT
    "SNOMED": "SCT",
    "SNOMED-CT": "SCT",
    "SNM3": "SCT",  # SNOMED International (v3), a predecessor of SNOMED CT; DICOM's SNM3 is retired
    "I9": "I9C",
    "ICD9": "I9C",
    "ICD10": "I10",
    "LOINC": "LN",
    "CPT": "C4",
    "CPT4": "C4",
    "CPT-4": "C4",
    "RADLEX": "RADLEX",
}

# DICOM Coding Scheme Designators (PS3.16 table 8-1) that HL7 feeds name with the same mnemonic
DICOM_DESIGNATORS = frozenset(
    {"DCM", "SCT", "SRT", "LN", "I9C", "I10", "I10P", "I11", "C4", "C5", "CD2", "UCUM", "ACR", "RADLEX", "NCIt",
     "MSH", "UMLS", "RXNORM", "NDC", "FMA", "HL7", "IBSI", "MDC", "NEU", "PUBCHEM_CID", "ATC", "DC", "BARI"}
)  # fmt: skip

# HL7 table 0396's local (site-defined) systems
HL7_LOCAL = frozenset({"L", "LB", "LOCAL"})

_local_name = re.compile(LOCAL_SCHEME_PATTERN)


def dicom_coding_scheme(hl7_system: str, local: str = DEFAULT_LOCAL_SCHEME) -> str:
    """The DICOM Coding Scheme Designator for an HL7 coding system (``L`` -> ``local``, ``SNM`` -> ``SCT``...)."""
    system = hl7_system.strip()
    upper = system.upper()
    if upper in HL7_TO_DICOM:
        return HL7_TO_DICOM[upper]
    if system in DICOM_DESIGNATORS:
        return system
    if upper in DICOM_DESIGNATORS:
        return next(d for d in DICOM_DESIGNATORS if d.upper() == upper)
    if upper in HL7_LOCAL:
        return local
    if _local_name.match(system):  # a site's own 99-prefixed scheme: DICOM-valid as it is
        return system
    return local  # empty, or a mnemonic DICOM does not define: the code is local to this site's feed
