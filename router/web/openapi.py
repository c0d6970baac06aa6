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
            "/dicomweb/studies": _stow([]),
            "/dicomweb/studies/{study}": _stow([STUDY]),
        },
    }
