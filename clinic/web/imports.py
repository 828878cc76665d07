"""Importing patients from a CSV file: upload, preview, confirm, then their posters and progress links.

Every page after the upload is tied to the browser session that uploaded the file: the token in a
URL or form is not enough on its own. The raw progress tokens of an import are kept in a private
file in IMPORT_FOLDER (see :mod:`clinic.services.importer`) and deleted when downloaded.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from clinic.services import importer
from clinic.services.errors import Refused
from clinic.web.errors import render_error
from clinic.web.helpers import current_actor, form_value, manager_required, parse_id
from clinic.web.posters import NO_STORE, file_response

bp = Blueprint("imports", __name__, url_prefix="/admin/import")
FORM_OVERHEAD = 64 * 1024  # the multipart envelope and the CSRF token around the file
SESSION_KEY = "imports"
KEPT_IN_SESSION = 5
UNKNOWN = _l("This import is not from this browser session or has expired: upload the file again.")


def largest_body() -> int:
    """The preview form's limit: a CSV file of importer.MAX_BYTES and its envelope."""
    return importer.MAX_BYTES + FORM_OVERHEAD


@bp.url_value_preprocessor
def _room_for_a_csv_file(endpoint, _values):
    """Allow a file of importer.MAX_BYTES on the preview form only (the app's limit is MAX_CONTENT_LENGTH).

    URL value preprocessors run before every before_request function, so the limit is raised
    before the CSRF check reads the form.
    """
    if endpoint == "imports.preview":
        request.max_content_length = largest_body()


@bp.before_request
@manager_required
def _managers_only():
    """Importing is for managers; front-desk staff get 403."""


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_error):
    if not (current_user.is_authenticated and current_user.is_manager):
        return render_error(403)
    return _upload_page(importer.TOO_LARGE, 413)


def _folder() -> str:
    return current_app.config["IMPORT_FOLDER"]


def _remember(token: str) -> None:
    session[SESSION_KEY] = [*session.get(SESSION_KEY, [])[-(KEPT_IN_SESSION - 1):], token]


def _owned(token: str) -> bool:
    return token in session.get(SESSION_KEY, [])


def _upload_page(error: str | None = None, status: int = 200):
    return render_template("imports/upload.html", error=error, max_rows=importer.MAX_ROWS,
                           max_mb=importer.MAX_BYTES // (1024 * 1024)), status


def _preview_page(preview: importer.ImportPreview, token: str | None, error: str | None = None, status: int = 200):
    return render_template("imports/preview.html", preview=preview, counts=preview.counts, token=token,
                           labels=importer.COLUMN_LABELS, error=error), status


@bp.get("")
def upload():
    return _upload_page()


@bp.get("/template.csv")
def template():
    return Response(importer.template_csv(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="patients-template.csv"'})


@bp.post("/preview")
def preview():
    """Check the file and show every row's problems; nothing is written but the upload itself."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _upload_page(_("Choose a CSV file to upload."), 400)
    data = upload.stream.read(importer.MAX_BYTES + 1)
    try:
        preview = importer.preview_import(data)
    except Refused as refusal:
        return _upload_page(refusal.message, refusal.status)
    token = None
    if preview.good_rows:
        try:
            token = importer.store_upload(_folder(), data)
        except Refused as refusal:
            return _upload_page(refusal.message, refusal.status)
        _remember(token)
    return _preview_page(preview, token)


@bp.post("/confirm")
def confirm():
    token = form_value("token", 64)
    if not _owned(token):
        return _upload_page(str(UNKNOWN), 404)
    try:
        result = importer.import_upload(_folder(), token, current_actor(), expected=form_value("expected", 64))
    except Refused as refusal:
        if refusal.reason == "unknown_import":
            return _upload_page(refusal.message, refusal.status)
        preview = importer.preview_import(importer.read_upload(_folder(), token))
        return _preview_page(preview, token if preview.good_rows else None, refusal.message, refusal.status)
    flash(ngettext("%(count)s patient imported.", "%(count)s patients imported.", len(result.patients),
                   count=f"{len(result.patients):,}"))
    return redirect(url_for("imports.result", token=token), code=303)


def _batch_or_error(token: str):
    if not _owned(token):
        raise Refused("unknown_import", str(UNKNOWN), status=404)
    return importer.import_batch(_folder(), token)


@bp.get("/<token>")
def result(token: str):
    try:
        batch = _batch_or_error(token)
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    return render_template("imports/result.html", batch=batch, keep_minutes=importer.LINKS_KEEP_SECONDS // 60)


@bp.get("/<token>/posters.pdf")
def posters(token: str):
    """One PDF of A4 posters for a part of at most MAX_POSTERS of the imported patients (``?part=``)."""
    part = request.args.get("part", "1")
    try:
        _batch_or_error(token)
        pdf = importer.batch_posters_pdf(_folder(), token, min(parse_id(part) or 0, 99999))
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    return file_response(pdf, "application/pdf", f"posters-import-{date.today()}-part-{part}.pdf")


@bp.get("/<token>/links.csv")
def links(token: str):
    """The progress links, once: the file holding them is deleted as it is read."""
    try:
        _batch_or_error(token)
        text = importer.take_progress_links_csv(_folder(), token, current_actor())
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    return Response(text, mimetype="text/csv", headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="progress-links-{date.today()}.csv"'})
