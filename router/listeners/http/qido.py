"""QIDO-RS (PS3.18 10.6): searching studies, series and instances with the C-FIND query engine.

Query parameters: ``{keyword or ggggeeee}={value}`` (single value, ``*``/``?`` wildcards, UID lists, DA/TM/DT
ranges, PN case- and accent-insensitive), ``includefield`` (keywords or tags, comma separated or repeated;
``all`` for every attribute the index holds at and above the level), ``limit``, ``offset``, ``fuzzymatching``
(names always match case- and accent-insensitively, so ``true`` changes nothing). Searches are relational (any
attribute at or above the level), with the date and time of a study matched as one date-time range.

Answers: ``application/dicom+json`` (default), or ``multipart/related; type="application/dicom+xml"`` (one Native
DICOM Model document per match); 204 when nothing matches; 400 for an unknown attribute or a bad value; 406 for
another Accept.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import pluggy
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.hooks.manager import notify
from router.listeners.http.multipart import media_type_params, public_base
from router.listeners.http.store_lookup import BadUid, check_uid
from router.query.find import QueryError, plan_find, run_find
from router.query.model import ATTRS, STUDY_ROOT

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000
DEFAULTS = {  # PS3.18 Table 10.6.3-3 (those the index holds)
    "STUDY": ["StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "InstanceAvailability",
              "TimezoneOffsetFromUTC"],
    "SERIES": ["Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
               "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
               "PerformedProcedureStepStartTime", "RequestAttributesSequence", "InstanceAvailability",
               "TimezoneOffsetFromUTC"],
    "IMAGE": ["SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
              "NumberOfFrames", "InstanceAvailability", "TimezoneOffsetFromUTC"],
}  # fmt: skip
LEVELS = ["STUDY", "SERIES", "IMAGE"]
CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}


class BadQuery(ValueError):
    pass


def _keyword(key: str) -> str:
    key = key.strip()
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return str(keyword)
        raise BadQuery(f"{key} is not an attribute of the DICOM dictionary")
    if tag_for_keyword(key) is None:
        raise BadQuery(f"{key!r} is not a DICOM keyword or tag")
    return key


def identifier(level: str, params: list[tuple[str, str]], path: dict[str, str]) -> tuple[Dataset, int, int]:
    """The C-FIND identifier for a QIDO request, with limit and offset."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    depth = LEVELS.index(level)
    wanted: list[str] = []
    for lv in LEVELS[: depth + 1]:
        wanted += DEFAULTS[lv]
    limit, offset = MAX_LIMIT, 0
    values: dict[str, str] = {}
    for key, value in params:
        if key == "includefield":
            for field in (f for f in value.split(",") if f.strip()):
                if field.strip() == "all":
                    wanted += [a.keyword for a in ATTRS.values() if LEVELS.index(_level(a.level)) <= depth]
                else:
                    wanted.append(_keyword(field))
        elif key == "limit":
            limit = _number(value, "limit")
        elif key == "offset":
            offset = _number(value, "offset")
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadQuery("fuzzymatching is true or false")
        else:
            values[_keyword(key)] = value
    values.update(path)
    for keyword in dict.fromkeys([*wanted, *values]):
        tag = tag_for_keyword(keyword)
        assert tag is not None
        vr = str(dictionary_VR(tag))
        if vr == "SQ":
            ds.add_new(tag, vr, Sequence())
        else:
            ds.add_new(tag, vr, values.get(keyword) or None)
    return ds, min(limit, MAX_LIMIT), offset


def _level(level: str) -> str:
    return "STUDY" if level == "PATIENT" else level


def _number(value: str, name: str) -> int:
    if not value.isdigit():
        raise BadQuery(f"{name} must be a non-negative integer")
    return int(value)


def _wants_xml(request: Request) -> bool:
    for kind, params in (media_type_params(p) for p in (request.headers.get("accept") or "*/*").split(",")):
        if kind in ("application/dicom+json", "application/json", "*/*", "application/*"):
            return False
        if kind == "multipart/related" and params.get("type", "").lower() == "application/dicom+xml":
            return True
    raise BadQuery("406")


def _xml(ds: Dataset) -> bytes:
    """PS3.19 Native DICOM Model (the attributes QIDO returns: no bulk data)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<NativeDicomModel xml:space="preserve">']
    _xml_attrs(ds, out)
    out.append("</NativeDicomModel>")
    return "\n".join(out).encode("utf-8")


def _xml_attrs(ds: Dataset, out: list[str]) -> None:
    for elem in ds:
        keyword = f' keyword="{elem.keyword}"' if elem.keyword else ""
        out.append(f'<DicomAttribute tag="{int(elem.tag):08X}" vr="{elem.VR}"{keyword}>')
        if elem.VR == "SQ":
            for number, item in enumerate(elem.value or [], start=1):
                out.append(f'<Item number="{number}">')
                _xml_attrs(item, out)
                out.append("</Item>")
        elif elem.value not in (None, ""):
            values = elem.value if isinstance(elem.value, list | MultiValue) else [elem.value]
            for number, value in enumerate(values, start=1):
                if elem.VR == "PN":
                    name = PersonName(value)
                    parts = "".join(
                        f"<{tag}>{escape(part)}</{tag}>"
                        for tag, part in zip(("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"),
                                             name.components[0].split("^"), strict=False)
                        if part
                    )  # fmt: skip
                    out.append(f'<PersonName number="{number}"><Alphabetic>{parts}</Alphabetic></PersonName>')
                else:
                    out.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        out.append("</DicomAttribute>")


@dataclass
class Asked:
    """What a QIDO request asked (its C-FIND identifier) and how many matches it got, for the announcement."""

    identifier: Dataset | None = None
    matches: int = 0


class Qido:
    def __init__(
        self, engine: Engine, pm: pluggy.PluginManager, used: Callable[[set[int]], None] | None = None
    ) -> None:
        self.engine = engine
        self.pm = pm
        self.used = used  # the storage keeper's use times: told the patients each page of results holds

    def _search(self, level: str, request: Request, asked: Asked) -> tuple[list[Dataset], str]:
        path = {k: check_uid(v) for k, v in request.path_params.items()}
        keys = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}
        ds, limit, offset = identifier(level, list(request.query_params.multi_items()),
                                       {keys[k]: v for k, v in path.items()})  # fmt: skip
        asked.identifier = ds
        plan = plan_find(STUDY_ROOT, ds, relational=True, combined_datetime=True)
        base = public_base(request.scope.get("server"), request.headers.get("host", ""), request.url.scheme)
        found = list(itertools.islice(run_find(self.engine, plan, used=self.used), offset, offset + limit))
        for match in found:
            match.RetrieveURL = _url(base, level, match)
            del match.QueryRetrieveLevel
        asked.matches = len(found)
        return found, base

    def handler(self, level: str) -> Any:
        async def search(request: Request) -> Response:
            asked = Asked()
            response = await answer(request, asked)
            client = request.client
            notify(self.pm, "router_query_answered", service="QIDO-RS", calling_ae="",
                   user=str(request.scope.get("router.user", "")),
                   address=f"{client.host}:{client.port}" if client else "", sop_class_uid="", level=level,
                   identifier=asked.identifier, matches=asked.matches, status=response.status_code)  # fmt: skip
            return response

        async def answer(request: Request, asked: Asked) -> Response:
            try:
                xml = _wants_xml(request)
            except BadQuery:
                return JSONResponse({"error": "QIDO-RS answers application/dicom+json or "
                                     'multipart/related; type="application/dicom+xml"'}, 406)  # fmt: skip
            try:
                found, _ = await run_in_threadpool(self._search, level, request, asked)
            except (BadQuery, BadUid) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            except QueryError as exc:
                status = 503 if exc.status == 0xA700 else 400
                return JSONResponse({"error": exc.reason}, status)
            if not found:
                return Response(status_code=204)
            if xml:
                boundary = uuid.uuid4().hex
                body = (
                    b"".join(
                        f"--{boundary}\r\nContent-Type: application/dicom+xml\r\n\r\n".encode() + _xml(d) + b"\r\n"
                        for d in found
                    )
                    + f"--{boundary}--\r\n".encode()
                )
                media = f'multipart/related; type="application/dicom+xml"; boundary={boundary}'
                return Response(body, media_type=media)
            return JSONResponse([d.to_json_dict() for d in found], media_type="application/dicom+json")

        return search


def _url(base: str, level: str, ds: Dataset) -> str:
    url = f"{base}/studies/{ds.StudyInstanceUID}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{ds.SeriesInstanceUID}"
    if level == "IMAGE":
        url += f"/instances/{ds.SOPInstanceUID}"
    return url
