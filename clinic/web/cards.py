"""Scratch cards: batches (managers), activation at discharge and personal cards (all staff)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required

from clinic.extensions import db
from clinic.models import CardBatch
from clinic.services import cards as card_service
from clinic.services.errors import Refused
from clinic.web.errors import render_error
from clinic.web.helpers import (current_actor, form_value, manager_required, render_fragment_or_page, parse_id,
                                send_private_file)
from clinic.web.patients import render_patient_page
from clinic.web.posters import file_response

bp = Blueprint("cards", __name__, url_prefix="/cards")


def _batch_or_404(batch_id: int) -> CardBatch:
    batch = db.session.get(CardBatch, batch_id)
    if batch is None:
        abort(404)
    return batch


def _batches_page(status: int = 200, errors: dict | None = None, values: dict | None = None):
    batches = card_service.list_batches()
    return render_template("cards/index.html", batches=batches, designs=card_service.DESIGNS,
                           errors=errors or {}, values=values or {"size": "100", "design": "classic"},
                           status_of=card_service.effective_status, offer=card_service.card_offer(),
                           counts=card_service.card_counts_by_batch([batch.id for batch in batches])), status


@bp.get("/")
@manager_required
def index():
    return _batches_page()


@bp.post("/batches")
@manager_required
def create_batch():
    values = {"size": form_value("size", 20).strip(), "design": form_value("design", 20),
              "bleed": request.form.get("bleed") == "yes"}
    size = parse_id(values["size"])
    if size is None:
        return _batches_page(422, {"size": _("Enter the number of cards, from 1 to 10,000.")}, values)
    try:
        batch = card_service.create_batch(size, values["design"], values["bleed"], current_actor())
    except Refused as refusal:
        return _batches_page(refusal.status, {refusal.field or "size": refusal.message}, values)
    _start(batch.id)
    return redirect(url_for("cards.batch", batch_id=batch.id), code=303)


@bp.get("/preview/<design>.pdf")
@manager_required
def preview(design: str):
    """One card of the design as a new batch would print it now: checked before a thousand are printed."""
    try:
        pdf = card_service.preview_card_pdf(design)
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    return file_response(pdf, "application/pdf", f"card-preview-{design}.pdf")


def _start(batch_id: int) -> None:
    """Queue the batch; if the queue is out of reach the batch has failed, and its page says why."""
    try:
        card_service.start_batch(batch_id, current_actor())
    except Refused as refusal:
        flash(refusal.message)


@bp.get("/batches/<int:batch_id>")
@manager_required
def batch(batch_id: int):
    batch = _batch_or_404(batch_id)
    return render_fragment_or_page("cards/_batch_status.html", "cards/batch.html", batch=batch,
                                   batch_status=card_service.effective_status(batch),
                                   counts=card_service.card_counts(batch.id))


@bp.post("/batches/<int:batch_id>/retry")
@manager_required
def retry(batch_id: int):
    try:
        card_service.retry_batch(batch_id, current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        flash(refusal.message)
    else:
        _start(batch_id)
    return redirect(url_for("cards.batch", batch_id=batch_id), code=303)


@bp.get("/batches/<int:batch_id>/cards.pdf")
@manager_required
def batch_pdf(batch_id: int):
    path = card_service.batch_pdf_path(_batch_or_404(batch_id))
    if path is None:
        abort(404)
    return send_private_file(path, "application/pdf", f"cards-B{batch_id:03d}.pdf")


@bp.get("/batches/<int:batch_id>/serials.csv")
@manager_required
def serials_csv(batch_id: int):
    _batch_or_404(batch_id)
    return Response(card_service.serials_csv(batch_id), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="serials-B{batch_id:03d}.csv"'})


@bp.post("/batches/<int:batch_id>/void")
@manager_required
def void_batch(batch_id: int):
    try:
        count = card_service.void_batch(batch_id, form_value("reason", 1000), current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        batch = _batch_or_404(batch_id)
        return render_template("cards/batch.html", batch=batch, batch_status=card_service.effective_status(batch),
                               counts=card_service.card_counts(batch.id), void_error=refusal.message), 422
    flash(ngettext("%(num)s card of this batch is void.", "%(num)s cards of this batch are void.", count))
    return redirect(url_for("cards.batch", batch_id=batch_id), code=303)


@bp.route("/void", methods=["GET", "POST"])
@manager_required
def void_card():
    values = {"serial": form_value("serial", 40), "reason": form_value("reason", 1000)}
    if request.method == "POST":
        try:
            card = card_service.void_card(values["serial"], values["reason"], current_actor())
        except Refused as refusal:
            return render_template("cards/void.html", values=values,
                                   errors={refusal.field or "serial": refusal.message}), refusal.status
        flash(_("Card %(serial)s is void: it can no longer be redeemed.", serial=card.serial))
        return redirect(url_for("cards.void_card"), code=303)
    return render_template("cards/void.html", values=values, errors={})


@bp.post("/activate/<int:patient_id>")
@login_required
def activate(patient_id: int):
    """At discharge: scan or type the card's serial on the patient's page."""
    serial = form_value("serial", 40)
    try:
        card = card_service.activate_card(serial, patient_id, current_actor())
    except Refused as refusal:
        if refusal.status == 404 and refusal.reason == "not_found":
            abort(404)
        return _refused_on_patient_page(patient_id, refusal, "serial", serial)
    flash(_("Card %(serial)s is now this patient's gift card: a friend can redeem it once.", serial=card.serial))
    return redirect(url_for("patients.show", patient_id=patient_id, _anchor="cards"), code=303)


def _refused_on_patient_page(patient_id: int, refusal: Refused, field: str, value: str):
    """The patient's page again, with the refusal under the field it answers and what was sent in it.

    Not a flash after a redirect: a flash is said at the top of the page, out of sight of the card box the
    browser scrolls to, and the field came back empty, so a refused card looked as if nothing had happened.
    """
    return render_patient_page(patient_id, refusal.status, errors={field: refusal.message}, values={field: value})


@bp.post("/personal/<int:patient_id>")
@login_required
def print_personal(patient_id: int):
    """A single card for this patient, already activated, ready to print."""
    design = form_value("design", 20) or "classic"
    try:
        batch = card_service.print_personal_card(patient_id, design, current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        return _refused_on_patient_page(patient_id, refusal, "design", design)
    return redirect(url_for("cards.personal_pdf", batch_id=batch.id), code=303)


@bp.get("/personal/<int:batch_id>/card.pdf")
@login_required
def personal_pdf(batch_id: int):
    batch = _batch_or_404(batch_id)
    path = card_service.batch_pdf_path(batch) if batch.personal else None
    if path is None:
        abort(404)
    return send_private_file(path, "application/pdf", f"card-B{batch_id:03d}.pdf")
