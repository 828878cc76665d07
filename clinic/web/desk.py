"""The front desk: one code field that redeems referral codes and spends vouchers."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import login_required
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Referral, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.services import desk as desk_service
from clinic.services import leads as lead_service
from clinic.services import milestones
from clinic.services import redemption as redemption_service
from clinic.services import vouchers as voucher_service
from clinic.services.errors import Refused
from clinic.services.patients import find_existing, normalize_phone
from clinic.services.redemption import ReferralOffer
from clinic.services.transaction import read_only_session
from clinic.services.urls import invite_url, progress_url
from clinic.web.forms import PatientDetailsForm
from clinic.web.helpers import (current_actor, form_value, is_htmx, print_language, print_language_choice,
                                render_fragment_or_page, render_printed)
from clinic.web.fresh_links import fresh_progress_token, remember_fresh_progress_token
from clinic.web.referrals import milestone_message

bp = Blueprint("desk", __name__, url_prefix="/desk")


@bp.before_request
@login_required
def _staff_only():
    """Every desk page needs a logged-in member of staff."""


def _panel(status: int = 200, **context):
    """The panel under the code field: alone for htmx, inside the desk page otherwise.

    With a referral code's offer, the open call-back requests through that code, and among them the one from the
    phone typed in the friend's form (when it is one): "asked to be called back on …".
    """
    context.setdefault("recent", redemption_service.recent_redemptions())
    offer = context.get("offer")
    if offer is not None:
        context["call_backs"] = lead_service.open_requests(offer.referrer.id)
        form = context.get("form")
        context["call_back"] = lead_service.open_request(offer.referrer.id, _typed_phone(form)) if form else None
    return render_fragment_or_page("desk/_panel.html", "desk/index.html", status, **context)


def _typed_phone(form: PatientDetailsForm) -> str | None:
    """The friend's phone as typed in the form, normalised; None when empty or not a phone number."""
    try:
        return normalize_phone(form.phone.data)
    except ValueError:
        return None


@bp.get("/")
def index():
    return render_template("desk/index.html", recent=redemption_service.recent_redemptions())


@bp.post("/lookup")
def lookup():
    read_only_session()  # the redemption after it keeps its prepared statements (PostgreSQL)
    raw = form_value("code")
    if not raw.strip():
        return _panel(raw_code=raw)
    try:
        found = desk_service.identify_code(raw)
    except Refused as refusal:
        return _panel(refusal.status, refusal=refusal, raw_code=raw)
    if isinstance(found, ReferralOffer):
        return _panel(offer=found, form=PatientDetailsForm(formdata=None), raw_code=raw)
    # A spent, void or expired voucher says why at once: its small status badge alone was easy to miss at a busy desk.
    unusable = None if found.status_at(utcnow()) is VoucherStatus.ACTIVE else voucher_service.explain_unusable(found)
    return _panel(voucher=found, unusable=unusable, raw_code=raw)


@bp.post("/redeem")
def redeem():
    raw = form_value("code")
    form = PatientDetailsForm()
    if not form.validate():
        return _form_again(raw, form, 422)
    try:
        # The code is checked once, inside the redemption's transaction; a refused code is audited there.
        result = redemption_service.redeem_code(raw, form.details, current_actor(),
                                                idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        if refusal.field in form:
            form.add_error(refusal.field, refusal.message)
            return _form_again(raw, form, refusal.status, attempted=True,
                               existing_patient=refusal.reason == "existing_patient")
        return _panel(refusal.status, refusal=refusal, raw_code=raw)
    if result.friend_progress_token:
        remember_fresh_progress_token(result.friend.id, result.friend_progress_token)
    if is_htmx():
        return _result(result)
    return redirect(url_for("desk.redemption", referral_id=result.referral.id), code=303)


def _form_again(raw: str, form: PatientDetailsForm, status: int, *, attempted: bool = False, **context):
    """The friend's form with its errors under the offer, unless the code itself is refused (which says so first).

    ``attempted``: the redemption itself refused a detail and audited that; the code is only read again here.
    """
    try:
        offer = redemption_service.referral_offer(raw)
    except Refused as refusal:
        if not attempted:
            redemption_service.record_refused_redemption(refusal, current_actor())
        return _panel(refusal.status, refusal=refusal, raw_code=raw)
    return _panel(status, offer=offer, form=form, raw_code=raw, **context)


def _result(result, status: int = 200):
    token = fresh_progress_token(result.friend.id)
    # An htmx receipt for a new redemption adds its own row to the desk's list (desk/_result.html).
    whole_list = result.replayed or not is_htmx()
    # What the friend takes home is in the clinic's language (or one the desk picks); the desk's own part, in theirs.
    language = print_language()
    printed = dict(result=result, friend_progress_url=progress_url(token) if token else None,
                   friend_invite_url=invite_url(result.friend.personal_code))
    return render_fragment_or_page(
        "desk/_result.html", "desk/redemption.html", status, result=result,
        recent=redemption_service.recent_redemptions() if whole_list else None,
        receipt_welcome=render_printed("desk/_receipt_slip.html", language, part="welcome", **printed),
        receipt_code=render_printed("desk/_receipt_slip.html", language, part="code", **printed),
        **print_language_choice(language))


@bp.get("/redemptions/<int:referral_id>")
def redemption(referral_id: int):
    result = redemption_service.redemption_result(referral_id)
    if result is None:
        abort(404)
    return _result(result)


@bp.post("/review")
def send_for_review():
    """The desk found the friend already registered but they say they are new: a manager decides.

    The existing patient is looked up again here from the submitted phone or record number,
    never taken from the form, so the request names only someone the rules really matched.
    """
    raw = form_value("code")
    form = PatientDetailsForm()
    try:
        offer = redemption_service.referral_offer(raw)
    except Refused as refusal:
        return _panel(refusal.status, refusal=refusal, raw_code=raw)
    if not form.validate():
        return _panel(422, offer=offer, form=form, raw_code=raw)
    existing = find_existing(form.details)
    if existing is None:
        form.add_error("phone", _("No patient has this phone or record number: confirm to register the friend."))
        return _panel(409, offer=offer, form=form, raw_code=raw)
    try:
        review = milestones.send_existing_patient_for_review(raw, existing.id, current_actor())
    except Refused as refusal:
        return _panel(refusal.status, refusal=refusal, raw_code=raw)
    if not is_htmx():
        flash(_("Sent for manager approval. No voucher is issued until a manager approves."))
        return redirect(url_for("desk.index"), code=303)
    return _panel(sent_for_review=review, raw_code="",
                  call_back=lead_service.open_request(review.referrer.id, review.patient.phone))


@bp.post("/recent/<int:patient_id>/visit")
def mark_visit(patient_id: int):
    """"Mark visit" in a recent-redemptions row: the friend came; the row comes back with what was paid."""
    try:
        result = milestones.record_visit(patient_id, current_actor(), idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        if not is_htmx():
            return _panel(refusal.status, refusal=refusal)
        referral = db.session.scalar(select(Referral).where(Referral.friend_id == patient_id))
        if referral is None:
            abort(refusal.status)
        return render_template("desk/_recent_row.html", r=referral, row_message=refusal.message,
                               row_refused=True), refusal.status
    message = milestone_message(result, "visit")
    if not is_htmx():
        flash(message)
        return redirect(url_for("desk.index"), code=303)
    return render_template("desk/_recent_row.html", r=result.referral, row_message=message)


@bp.post("/spend")
def spend():
    raw = form_value("code")
    try:
        voucher, replayed = voucher_service.spend_voucher(raw, current_actor(),
                                                          idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        voucher = _voucher_for(raw)
        return _panel(refusal.status, refusal=refusal, voucher=voucher, raw_code=raw)
    return _panel(voucher=voucher, spent_now=True, replayed=replayed, raw_code=raw)


def _voucher_for(raw: str) -> Voucher | None:
    try:
        found = desk_service.identify_code(raw)
    except Refused:
        return None
    return found if isinstance(found, Voucher) else None
