"""Poster downloads, shared by the staff patient page, the patient's progress page and the manager.

Not a blueprint: each area keeps its own URL and access rule and calls :func:`poster_response`.
"""

from __future__ import annotations

from flask import Response, request

from clinic.models import Patient
from clinic.services import posters as poster_service
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.web.errors import render_error

FORMATS = "any(pdf, png)"  # URL converter for poster.<kind>
NO_STORE = {"Cache-Control": "no-store"}  # a poster may carry the patient's name


def file_response(data: bytes, mimetype: str, filename: str, headers: dict | None = None) -> Response:
    """Shown in the browser (a PDF viewer, an image), with a sensible name when saved."""
    return Response(data, mimetype=mimetype, headers={
        **NO_STORE, **(headers or {}), "Content-Disposition": f'inline; filename="{filename}"'})


def poster_response(patient: Patient, kind: str, headers: dict | None = None) -> Response:
    """``patient``'s poster as ``kind`` (pdf or png) for ``?design=&size=``; 400 for an unknown one."""
    try:
        design, size = poster_service.poster_options(request.args.get("design"),
                                                     request.args.get("size") if kind == "pdf" else None)
    except Refused as refusal:
        body, status, error_headers = render_error(400, refusal.message)
        return Response(body, status, headers={**error_headers, **NO_STORE, **(headers or {})})
    name = f"poster-{format_code(patient.personal_code)}-{design}"
    if kind == "png":
        return file_response(poster_service.poster_png(patient, design), "image/png", f"{name}.png", headers)
    return file_response(poster_service.poster_pdf(patient, design, size), "application/pdf",
                         f"{name}-{size}.pdf", headers)
