"""A referred friend's milestones (first visit, first payment) and, for managers, reversing a referral."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import login_required
from sqlalchemy import select

from clinic.extensions import db
from clinic.i18n import sentence_gap
from clinic.models import Referral, RewardStatus
from clinic.services import milestones
from clinic.services.clinic_settings import current_clinic
from clinic.services.errors import Refused
from clinic.services.milestones import MilestoneResult
from clinic.services.privacy import mask_name
from clinic.web.forms import PaymentForm, ReasonForm
from clinic.web.helpers import current_actor, form_value, manager_required
from clinic.web.patients import render_patient_page
from clinic.web.templating import describe_voucher, local_time

bp = Blueprint("referrals", __name__)


@bp.before_request
@login_required
def _staff_only():
    """Milestones are for any member of staff; reversing is for managers (checked per view)."""


def milestone_message(result: MilestoneResult, milestone: str) -> str:
    """What the desk says after marking a milestone: who was paid what, or that it was already done."""
    visit = milestone == "visit"
    if not result.recorded:
        when = local_time(result.referral.visited_at if visit else result.referral.paid_at)
        return (_("First visit already recorded on %(when)s: nothing more to pay.", when=when) if visit
                else _("First payment already recorded on %(when)s: nothing more to pay.", when=when))
    paid = [_("%(reward)s to %(name)s", reward=describe_voucher(r), name=mask_name(r.patient.public_name))
            for r in result.paid if r.status == RewardStatus.ISSUED.value]
    held = [_("%(name)s's reward sent for manager approval: yearly cap reached.", name=mask_name(r.patient.public_name))
            for r in result.paid if r.status == RewardStatus.REVIEW.value]
    parts = [_("First visit recorded.") if visit else _("First payment recorded.")]
    # Translators: joins the rewards paid in "Paid: CN¥200.00 off to Wang L.; 1 bed-day waived to Chen J."
    parts += [_("Paid: %(rewards)s.", rewards=_("; ").join(paid))] if paid else []
    parts += held
    if not paid and not held:
        parts.append(_("No reward was due at this stage."))
    return sentence_gap().join(parts)


def _refused(patient_id: int, refusal: Refused, **forms):
    if refusal.status == 404:
        abort(404)
    return render_patient_page(patient_id, refusal.status, milestone_error=refusal.message, **forms)


@bp.post("/patients/<int:patient_id>/visit")
def visit(patient_id: int):
    try:
        result = milestones.record_visit(patient_id, current_actor(), idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        return _refused(patient_id, refusal)
    flash(milestone_message(result, "visit"))
    return redirect(url_for("patients.show", patient_id=patient_id), code=303)


@bp.post("/patients/<int:patient_id>/payment")
def payment(patient_id: int):
    form = PaymentForm()
    amount = form.amount_minor(current_clinic().currency) if form.validate() else False
    if amount is False:
        return render_patient_page(patient_id, 422, payment_form=form)
    try:
        result = milestones.record_payment(patient_id, amount, current_actor(),
                                           idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        if refusal.field == "amount":
            form.amount.errors = [refusal.message]
            return render_patient_page(patient_id, refusal.status, payment_form=form)
        return _refused(patient_id, refusal, payment_form=form)
    flash(milestone_message(result, "payment"))
    return redirect(url_for("patients.show", patient_id=patient_id), code=303)


@bp.post("/referrals/<int:referral_id>/reverse")
@manager_required
def reverse(referral_id: int):
    friend_id = db.session.scalar(select(Referral.friend_id).where(Referral.id == referral_id))
    if friend_id is None:
        abort(404)
    form = ReasonForm()
    form.validate()
    try:
        milestones.reverse_referral(referral_id, form.reason.data, current_actor(),
                                    idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        if refusal.field != "reason":
            return _refused(friend_id, refusal, reverse_form=form)
        form.reason.errors = [refusal.message]
        return render_patient_page(friend_id, refusal.status, reverse_form=form)
    flash(_("The referral is reversed. Check the vouchers that were already spent."))
    return redirect(url_for("referrals.reversal", referral_id=referral_id), code=303)


@bp.get("/referrals/<int:referral_id>/reversal")
@manager_required
def reversal(referral_id: int):
    """The reversal report: vouchers voided, and spent vouchers that need following up by hand."""
    report = milestones.reversal_report(referral_id)
    if report is None:
        abort(404)
    return render_template("referrals/reversal.html", report=report)
