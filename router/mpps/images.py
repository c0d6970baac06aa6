"""Adding the images the router received for a step to the N-SET it forwards (the ISUDM 2.1 MPPS forward adds
Referenced SOP Class / Instance UIDs).

For each item of the Performed Series Sequence (the N-SET's own, else the step's so far), every indexed
instance of that series (of the step's study, when the Scheduled Step Attributes name one) that the item does not
list yet is added: image storage classes to Referenced Image Sequence, any other class to Referenced Non-Image
Composite SOP Instance Sequence (PS3.3 C.4.17).
"""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from sqlalchemy import Connection, select

from router.mpps.attributes import text
from router.store.tables import INSTANCE, SERIES, STUDY

IMAGES = "ReferencedImageSequence"
NON_IMAGES = "ReferencedNonImageCompositeSOPInstanceSequence"


def is_image(sop_class_uid: str) -> bool:
    name = UID(sop_class_uid).name
    return "Image" in name and "Storage" in name


def _listed(item: Dataset) -> set[str]:
    return {
        text(ref, "ReferencedSOPInstanceUID") for keyword in (IMAGES, NON_IMAGES) for ref in item.get(keyword) or []
    }


def with_received_images(conn: Connection, nset: Dataset, state: Dataset) -> tuple[Dataset, int]:
    """The N-SET to forward and how many references were added (``nset`` itself is not changed)."""
    series_items = nset.get("PerformedSeriesSequence")
    if series_items is None:
        series_items = state.get("PerformedSeriesSequence")
    if not series_items:
        return nset, 0
    studies = [text(i, "StudyInstanceUID") for i in state.get("ScheduledStepAttributesSequence") or []]
    studies = [s for s in studies if s]
    out = copy.deepcopy(nset)
    out.PerformedSeriesSequence = Sequence([copy.deepcopy(item) for item in series_items])
    added = 0
    for item in out.PerformedSeriesSequence:
        series_uid = text(item, "SeriesInstanceUID")
        if not series_uid:
            continue
        query = (
            select(INSTANCE.c.sop_class_uid, INSTANCE.c.sop_uid)
            .join(SERIES, SERIES.c.id == INSTANCE.c.series_fk)
            .join(STUDY, STUDY.c.id == SERIES.c.study_fk)
            .where(SERIES.c.series_uid == series_uid)
            .order_by(INSTANCE.c.id)
        )
        if studies:
            query = query.where(STUDY.c.study_uid.in_(studies))
        listed = _listed(item)
        for sop_class, sop_uid in conn.execute(query):
            if sop_uid in listed:
                continue
            keyword = IMAGES if is_image(sop_class) else NON_IMAGES
            if keyword not in item:
                setattr(item, keyword, Sequence())
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop_uid
            item[keyword].value.append(ref)
            added += 1
    return (out, added) if added else (nset, 0)
