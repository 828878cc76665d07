"""A referred friend's milestones (first visit, first payment) and, for managers, reversing a referral."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import login_required
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Referral, RewardStatus
from clinic.services import milestones
from clinic.services.clinic_settings import get_clinic, to_clinic_time
from clinic.services.errors import Refused
from clinic.services.milestones import MilestoneResult
from clinic.services.privacy import mask_name
from clinic.web.forms import PaymentForm, ReasonForm
from clinic.web.helpers import current_actor, form_value, manager_required
from clinic.web.patients import render_patient_page
from clinic.web.templating import describe_voucher

bp = Blueprint("referrals", __name__)
MILESTONE_NAMES = {"visit": "First visit", "payment": "First payment"}


@bp.before_request
@login_required
def _staff_only():
    """Milestones are for any member of staff; reversing is for managers (checked per view)."""


def milestone_message(result: MilestoneResult, milestone: str) -> str:
    """What the desk says after marking a milestone: who was paid what, or that it was already done."""
    name = MILESTONE_NAMES[milestone]
    if not result.recorded:
        when = result.referral.visited_at if milestone == "visit" else result.referral.paid_at
        return f"{name} already recorded on {to_clinic_time(when)}: nothing more to pay."
    paid = [f"{describe_voucher(r)} to {mask_name(r.patient.public_name)}" for r in result.paid
            if r.status == RewardStatus.ISSUED.value]
    held = [f"{mask_name(r.patient.public_name)}'s reward sent for manager approval: yearly cap reached."
            for r in result.paid if r.status == RewardStatus.REVIEW.value]
    parts = [f"{name} recorded."]
    parts += [f"Paid: {'; '.join(paid)}."] if paid else []
    parts += held
    if not paid and not held:
        parts.append("No reward was due at this stage.")
    return " ".join(parts)


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
    amount = form.amount_minor(get_clinic().currency) if form.validate() else False
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
    flash("The referral is reversed. Check the vouchers that were already spent.")
    return redirect(url_for("referrals.reversal", referral_id=referral_id), code=303)


@bp.get("/referrals/<int:referral_id>/reversal")
@manager_required
def reversal(referral_id: int):
    """The reversal report: vouchers voided, and spent vouchers that need following up by hand."""
    report = milestones.reversal_report(referral_id)
    if report is None:
        abort(404)
    return render_template("referrals/reversal.html", report=report)
