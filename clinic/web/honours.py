"""Tiers and honours: the manager's tier rules and referrer rankings, certificates, and the public leaderboard."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Branch
from clinic.services import tiers as tier_service
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.web.forms import TierForm
from clinic.web.helpers import current_actor, manager_required, parse_id
from clinic.web.posters import file_response

bp = Blueprint("honours", __name__)
RANKING_SIZE = 50
PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


def _tiers_page(form: TierForm, status: int = 200):
    return render_template("honours/tiers.html", form=form, tiers=tier_service.list_tiers()), status


@bp.route("/admin/tiers", methods=["GET", "POST"])
@manager_required
def tiers():
    """The tier rules, with a form to add one."""
    form = TierForm()
    if request.method == "POST":
        if form.validate():
            try:
                tier = tier_service.create_tier(form.rules, current_actor())
            except FieldErrors as problems:
                form.add_errors(problems)
            else:
                flash(_("Tier “%(name)s” added.", name=tier.name))
                return redirect(url_for("honours.tiers"), code=303)
        return _tiers_page(form, 422)
    return _tiers_page(form)


def _tier_or_404(tier_id: int):
    try:
        return tier_service.get_tier(tier_id)
    except Refused:
        abort(404)


@bp.route("/admin/tiers/<int:tier_id>", methods=["GET", "POST"])
@manager_required
def edit_tier(tier_id: int):
    tier = _tier_or_404(tier_id)
    if request.method == "POST":
        form = TierForm()
        if form.validate():
            try:
                tier_service.update_tier(tier_id, form.rules, current_actor())
            except FieldErrors as problems:
                form.add_errors(problems)
            else:
                flash(_("Tier “%(name)s” saved.", name=form.rules.name))
                return redirect(url_for("honours.tiers"), code=303)
        return render_template("honours/tier_edit.html", form=form, tier=tier), 422
    return render_template("honours/tier_edit.html", form=TierForm(obj=tier), tier=tier)


@bp.post("/admin/tiers/<int:tier_id>/delete")
@manager_required
def delete_tier(tier_id: int):
    name = _tier_or_404(tier_id).name
    try:
        tier_service.delete_tier(tier_id, current_actor())
    except Refused:
        abort(404)
    flash(_("Tier “%(name)s” deleted.", name=name))
    return redirect(url_for("honours.tiers"), code=303)


def _branches() -> list[Branch]:
    return list(db.session.scalars(select(Branch).order_by(Branch.name)))


def _period_and_branch() -> tuple[tier_service.Period, Branch | None]:
    """``?year=`` (default this year) or ``?from=&to=`` dates, and an optional ``?branch=`` id; 400 if wrong."""
    args = {name: (request.args.get(name) or "").strip()[:20] for name in ("year", "from", "to", "branch")}
    if args["from"] or args["to"]:
        try:
            period = tier_service.Period(date.fromisoformat(args["from"]), date.fromisoformat(args["to"]))
        except ValueError:
            raise Refused("bad_date", _("Pick both a start and an end date."), status=400) from None
        if period.last < period.first:
            raise Refused("bad_range", _("The end date is before the start date."), status=400)
    elif args["year"]:
        if not (args["year"].isascii() and args["year"].isdigit() and 2000 <= int(args["year"]) <= 2100):
            raise Refused("bad_year", _("Choose a year from 2000 to 2100."), status=400)
        period = tier_service.Period.year(int(args["year"]))
    else:
        period = tier_service.this_year()
    branch = None
    if args["branch"]:
        branch_id = parse_id(args["branch"])
        branch = db.session.get(Branch, branch_id) if branch_id is not None else None
        if branch is None:
            raise Refused("bad_branch", _("There is no such branch."), status=400)
    return period, branch


def _period_args(period: tier_service.Period, branch: Branch | None) -> dict:
    """The query that names this period and branch again, for the certificate links."""
    dates = {"year": period.first.year} if period.is_calendar_year else {"from": period.first.isoformat(),
                                                                         "to": period.last.isoformat()}
    return {**dates, **({"branch": branch.id} if branch else {})}


@bp.get("/admin/honours")
@manager_required
def honours():
    """Referrers ranked for a year or any dates, overall or at one branch, with the winner's certificate."""
    values = {name: (request.args.get(name) or "")[:20] for name in ("year", "from", "to", "branch")}
    context = {"values": values, "branches": _branches(), "ranking": [], "period": None, "branch": None}
    try:
        period, branch = _period_and_branch()
    except Refused as refusal:
        return render_template("honours/honours.html", error=refusal.message, **context), refusal.status
    start, end = period.bounds
    context.update(period=period, branch=branch,
                   ranking=tier_service.top_referrers(start, end, branch.id if branch else None, RANKING_SIZE),
                   certificate_args=_period_args(period, branch))
    return render_template("honours/honours.html", **context)


@bp.get("/admin/honours/certificate.pdf")
@manager_required
def certificate():
    """The certificate PDF for ``?patient_id=`` ranked in the period of the honours page."""
    patient_id = request.args.get("patient_id", "")
    if parse_id(patient_id) is None:
        abort(404)
    try:
        period, branch = _period_and_branch()
        pdf = tier_service.honour_certificate(int(patient_id), period, branch.id if branch else None,
                                              branch.name if branch else None)
    except Refused as refusal:
        abort(refusal.status, refusal.message)
    return file_response(pdf, "application/pdf", f"certificate-{patient_id}-{period.first}-{period.last}.pdf")


@bp.get("/leaderboard")
def leaderboard():
    """The public leaderboard: this year's top referrers who agreed to appear, masked names and counts only."""
    period = tier_service.this_year()
    return render_template("honours/leaderboard.html", entries=tier_service.public_leaderboard(period),
                           period=period), 200, PUBLIC_CACHE


@bp.post("/patients/<int:patient_id>/leaderboard-consent")
@login_required
def leaderboard_consent(patient_id: int):
    choice = request.form.get("leaderboard_opt_in")
    if choice not in ("yes", "no"):
        abort(400, _("Say whether the patient agrees to appear on the leaderboard."))
    try:
        tier_service.set_leaderboard_consent(patient_id, choice == "yes", current_actor())
    except Refused:
        abort(404)
    flash(_("They will appear on the leaderboard, with a masked name.") if choice == "yes"
          else _("They will not appear on the leaderboard."))
    return redirect(url_for("patients.show", patient_id=patient_id), code=303)
