"""The manager's review queue: rewards over a yearly cap, and friends who may already be patients."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Staff
from clinic.services import milestones
from clinic.services.errors import Refused
from clinic.services.privacy import mask_name
from clinic.services.referral_reports import decided_reviews, pending_review_count
from clinic.web.forms import ReasonForm
from clinic.web.helpers import current_actor, form_value, manager_required
from clinic.web.templating import describe_voucher

bp = Blueprint("reviews", __name__, url_prefix="/admin/reviews")


@bp.before_request
@manager_required
def _managers_only():
    """Only managers decide; front-desk staff get 403."""


@bp.app_context_processor
def _pending_count():
    """``pending_review_count()`` for the manager's nav link; a function, so only pages that show it count."""

    def count() -> int:
        return pending_review_count() if current_user.is_authenticated and current_user.is_manager else 0

    return {"pending_review_count": count}


def _queue(status: int = 200, failed: dict | None = None):
    pending = milestones.pending_reviews()
    decided = decided_reviews()
    staff_ids = {r.created_by_id for r in pending + decided} | {r.decided_by_id for r in decided}
    staff = dict(db.session.execute(select(Staff.id, Staff.email).where(Staff.id.in_(staff_ids - {None}))).all())
    offers, offer_refusals = milestones.review_offers(pending)
    return render_template("reviews/index.html", pending=pending, decided=decided, staff=staff, offers=offers,
                           offer_refusals=offer_refusals, failed=failed or {}), status


@bp.get("")
def index():
    return _queue()


@bp.post("/<int:review_id>")
def decide(review_id: int):
    form = ReasonForm()
    form.validate()
    decision = request.form.get("decision")
    if decision not in ("approve", "reject"):
        return _queue(422, {"id": review_id, "reason": form.reason.data, "message": _("Choose approve or reject.")})
    try:
        review = milestones.decide_review(review_id, decision == "approve", form.reason.data, current_actor(),
                                          idempotency_key=form_value("idempotency_key"))
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        return _queue(refusal.status, {"id": review_id, "reason": form.reason.data, "message": refusal.message})
    flash(_decided_message(review))
    return redirect(url_for("reviews.index"), code=303)


def _decided_message(review) -> str:
    if review.status == "rejected":
        return _("Rejected. Nothing was issued.")
    if review.kind == "over_cap":
        reward = review.reward
        return _("Approved: %(reward)s issued to %(name)s.", reward=describe_voucher(reward),
                 name=mask_name(reward.patient.public_name))
    return _("Approved: %(friend)s is now %(referrer)s's referred friend, with the campaign's rewards.",
             friend=review.patient.full_name, referrer=mask_name(review.referrer.public_name))
