"""The OpenAPI 3.1 description of the DICOMweb routes, served at ``/dicomweb/openapi.json``."""

from __future__ import annotations

from typing import Any

DICOM_JSON = {"application/dicom+json": {"schema": {"type": "object"}}}
MULTIPART_DICOM = {'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}}
STUDY = {"name": "study", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Study UID"}


def _stow(params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "STOW-RS: store instances (each part routed like a C-STORE, acknowledged once durable)",
            "parameters": params,
            "requestBody": {"required": True, "content": MULTIPART_DICOM},
            "responses": {
                "200": {"description": "every instance stored", "content": DICOM_JSON},
                "202": {"description": "some instances failed (Failed SOP Sequence)", "content": DICOM_JSON},
                "400": {"description": "malformed multipart body"},
                "401": {"description": "authentication required"},
                "409": {"description": "no instance stored", "content": DICOM_JSON},
                "413": {"description": "request larger than http.max_upload_bytes"},
                "415": {"description": "not multipart/related; type=application/dicom"},
            },
        }
    }


def _get(summary: str, media: list[str], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "found", "content": {m: {"schema": {"type": "string"}} for m in media}},
                "400": {"description": "a path value is not a UID"},
                "401": {"description": "authentication required"},
                "404": {"description": "not stored"},
                "406": {"description": "the Accept header cannot be satisfied"},
            },
        }
    }


def _param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _wado_paths() -> dict[str, Any]:
    study, series, instance = "/dicomweb/studies/{study}", "/dicomweb/studies/{study}/series/{series}", ""
    instance = series + "/instances/{instance}"
    levels = [(study, [STUDY]), (series, [STUDY, _param("series", "Series UID")])]
    levels.append((instance, [*levels[1][1], _param("instance", "SOP Instance UID")]))
    dicom = ['multipart/related; type="application/dicom"']
    paths: dict[str, Any] = {}
    for path, params in levels:
        paths[path] = {**_stow(params), **_get("WADO-RS: instances (transfer-syntax in Accept)", dicom, params)}
        paths[path + "/metadata"] = _get("WADO-RS: metadata, bulk data as BulkDataURI", ["application/dicom+json"],
                                         params)  # fmt: skip
    inst = levels[2][1]
    frames = ['multipart/related; type="application/octet-stream"', 'multipart/related; type="image/jp2"']
    paths[instance + "/frames/{frames}"] = _get("WADO-RS: frames in the order asked", frames,
                                                [*inst, _param("frames", "1,3,2")])  # fmt: skip
    paths[instance + "/bulkdata/{tag}"] = _get("WADO-RS: one bulk data value",
                                               ['multipart/related; type="application/octet-stream"'],
                                               [*inst, _param("tag", "ggggeeee")])  # fmt: skip
    paths[instance + "/rendered"] = _get("WADO-RS: the first frame rendered", ["image/jpeg", "image/png"], inst)
    paths[instance + "/frames/{frame}/rendered"] = _get("WADO-RS: one frame rendered", ["image/jpeg", "image/png"],
                                                        [*inst, _param("frame", "frame number")])  # fmt: skip
    del paths[study]["post"], paths[series]["post"], paths[instance]["post"]
    paths[study]["post"] = _stow([STUDY])["post"]
    return paths


QIDO_PARAMS: list[dict[str, Any]] = [
    {"name": "{attribute}", "in": "query", "schema": {"type": "string"},
     "description": "keyword or ggggeeee = value: single value, * ? wildcards, UID list, DA/TM/DT range"},
    {"name": "includefield", "in": "query", "schema": {"type": "string"}, "description": "keywords/tags or all"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "fuzzymatching", "in": "query", "schema": {"type": "boolean"}},
]  # fmt: skip


def _qido(path_params: list[dict[str, Any]]) -> dict[str, Any]:
    media = ["application/dicom+json", 'multipart/related; type="application/dicom+xml"']
    answer = _get("QIDO-RS: search", media, [*path_params, *QIDO_PARAMS])
    answer["get"]["responses"]["204"] = {"description": "no match"}
    return answer


def _qido_paths() -> dict[str, Any]:
    series = _param("series", "Series UID")
    return {
        "/dicomweb/series": _qido([]),
        "/dicomweb/instances": _qido([]),
        "/dicomweb/studies/{study}/series": _qido([STUDY]),
        "/dicomweb/studies/{study}/instances": _qido([STUDY]),
        "/dicomweb/studies/{study}/series/{series}/instances": _qido([STUDY, series]),
    }


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "DICOM-HL7 router DICOMweb", "version": "1", "description": "PS3.18 services"},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            }
        },
        "paths": {
            "/dicomweb/studies": {**_stow([]), **_qido([])},
            **_wado_paths(),
            **_qido_paths(),
        },
    }
