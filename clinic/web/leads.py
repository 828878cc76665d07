"""The desk's Call-backs page: friends who asked on the invite page to be called, and what came of each call."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from clinic.services import leads
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.web.helpers import current_actor, form_value, is_htmx

bp = Blueprint("leads", __name__, url_prefix="/desk/leads")

@bp.before_request
@login_required
def _staff_only():
    """Front desk and managers: whoever answers the phone."""


@bp.app_context_processor
def _new_count():
    """``new_lead_count()`` for the top bar's "Call-backs (n)"; a function, so only pages that show it count."""

    def count() -> int:
        return leads.new_lead_count() if current_user.is_authenticated else 0

    return {"new_lead_count": count}


@bp.get("")
def index():
    return _page()


def _page(status: int = 200, failed: dict | None = None):
    return render_template("leads/index.html", rows=leads.desk_leads(), failed=failed or {},
                           limit=leads.DESK_LIST_LIMIT), status


@bp.post("/<int:lead_id>")
def update(lead_id: int):
    """Record the desk's answer: the row again for htmx (with what went wrong, if anything), else back to the list."""
    note = form_value("note")
    try:
        leads.set_status(lead_id, form_value("status"), note, current_actor())
    except FieldErrors as problems:
        return _refused(lead_id, 422, " ".join(problems.errors.values()), note)
    except Refused as refusal:
        if refusal.status == 404:
            abort(404, description=refusal.message)
        return _refused(lead_id, refusal.status, refusal.message, note)
    if is_htmx():
        return render_template("leads/_row.html", row=leads.desk_lead(lead_id), row_message=_("Saved."))
    flash(_("Saved."))
    return redirect(url_for("leads.index"), code=303)


def _refused(lead_id: int, status: int, message: str, note: str):
    failed = {"id": lead_id, "message": message, "note": note}
    if is_htmx():
        row = leads.desk_lead(lead_id)
        return render_template("leads/_row.html", row=row, failed=failed), status
    return _page(status, failed)
