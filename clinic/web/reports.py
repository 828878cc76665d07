"""Manager pages for the programme's results: the dashboard, CSV exports, and the clinic's branches."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from clinic.extensions import db
from clinic.i18n import format_day
from clinic.models import Branch
from clinic.services import branches as branch_service
from clinic.services import exports as export_service
from clinic.services import feedback as feedback_service
from clinic.services import referral_checks as check_service
from clinic.services import reports as report_service
from clinic.services.clinic_settings import clinic_today, clinic_zone, current_clinic
from clinic.services.errors import Refused
from clinic.web import charts
from clinic.web.errors import render_error
from clinic.web.helpers import (current_actor, form_value, is_htmx, manager_required, parse_id,
                                render_fragment_or_page)

bp = Blueprint("reports", __name__, url_prefix="/admin")
MAX_DAYS = 3661  # ten years and their leap days
CHECKS_DAYS = 90  # the referrals to check cover the last 90 days unless asked otherwise
EARLIEST_YEAR, LATEST_YEAR = 1900, 2999  # beyond these, time-zone arithmetic overflows or means nothing


@bp.before_request
@manager_required
def _managers_only():
    """Reports hold every patient's name and phone: managers only, desk staff get 403."""


def _this_month() -> tuple[date, date]:
    today = clinic_today()
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def _day(text: str, which: str) -> date:
    """``which`` is the query's field, "from" or "to"."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        message = (_("The from date is not a date: pick one from the calendar (YYYY-MM-DD).") if which == "from"
                   else _("The to date is not a date: pick one from the calendar (YYYY-MM-DD)."))
        raise Refused("bad_date", message, field=which, status=400) from None
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        message = (_("The from date must be between %(first)s and %(last)s.", first=EARLIEST_YEAR, last=LATEST_YEAR)
                   if which == "from" else
                   _("The to date must be between %(first)s and %(last)s.", first=EARLIEST_YEAR, last=LATEST_YEAR))
        raise Refused("bad_date", message, field=which, status=400)
    return day


def _is_id(text: str) -> bool:
    """Plain ASCII digits that fit a database integer (``"²".isdigit()`` is true, but ``int("²")`` fails)."""
    return parse_id(text) is not None


def _filter_values() -> dict[str, str]:
    return {name: (request.args.get(name) or "").strip()[:20] for name in ("from", "to", "branch")}


def _scope(values: dict[str, str], default: tuple[date, date] | None = None) -> report_service.Scope:
    """The period and branch asked for in the query string; ``default`` (this month) and all branches by default."""
    first, last = default or _this_month()
    if values["from"]:
        first = _day(values["from"], "from")
    if values["to"]:
        last = _day(values["to"], "to")
    if last < first:
        raise Refused("bad_range", _("The end date is before the start date."), field="to", status=400)
    if (last - first).days >= MAX_DAYS:
        raise Refused("bad_range", _("Choose a period of at most ten years."), field="to", status=400)
    branch_id = None
    if values["branch"]:
        if not _is_id(values["branch"]) or db.session.get(Branch, int(values["branch"])) is None:
            raise Refused("unknown_branch", _("There is no such branch: pick one from the list."), field="branch",
                          status=400)
        branch_id = int(values["branch"])
    return report_service.Scope.for_days(first, last, clinic_zone(), branch_id)


@bp.get("/dashboard")
def dashboard():
    values = _filter_values()
    context = {"values": values, "branches": branch_service.list_branches()}
    try:
        scope = _scope(values)
    except Refused as refusal:
        return render_template("reports/dashboard.html", error=refusal.message, error_field=refusal.field,
                               **context), refusal.status
    values.update({"from": scope.first_day.isoformat(), "to": scope.last_day.isoformat()})
    figures = report_service.dashboard(scope)
    return render_template("reports/dashboard.html", figures=figures, chart=charts.referrals_chart(figures.series),
                           funnel_rows=charts.funnel_chart(figures.funnel),
                           period_days=(format_day(scope.first_day), format_day(scope.last_day)),
                           card_split=charts.share_split(figures.funnel.paid_with_card, figures.funnel.paid),
                           branch=db.session.get(Branch, scope.branch_id) if scope.branch_id else None,
                           export_args={k: v for k, v in values.items() if v}, **context)


@bp.get("/feedback")
def feedback_calls():
    """"Patients to call": detractors who asked the manager to call them (clinic/services/feedback.py).

    Full phone numbers, unlike the desk's masked ones (DESIGN.md: masked "except where needed"): the manager is here
    to dial them, and the patient asked for exactly that. The page is managers' only, as the whole blueprint is.
    """
    return render_template("reports/feedback_calls.html", calls=_call_page())


def _call_page() -> feedback_service.CallPage:
    """The page of the call list the URL asks for (``?page=2``); nonsense reads as the first page."""
    return feedback_service.patients_to_call(parse_id(request.args.get("page")) or 1)


@bp.post("/feedback/<int:feedback_id>/called")
def feedback_called(feedback_id: int):
    """The manager's "Called" (audited): the row again for htmx (swapped in place), else back to the list (303)."""
    try:
        row = feedback_service.mark_called(feedback_id, current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        row = feedback_service.call_row(feedback_id)
        return render_fragment_or_page("reports/_feedback_call.html", "reports/feedback_calls.html",
                                       refusal.status, call=row, calls=_call_page(),
                                       error=refusal.message, error_id=feedback_id)
    if is_htmx():
        return render_template("reports/_feedback_call.html", call=row)
    flash(_("Recorded: %(name)s was called.", name=row.full_name))
    return redirect(url_for("reports.feedback_calls", page=parse_id(request.args.get("page"))), code=303)


def _checks_period() -> tuple[date, date]:
    today = clinic_today()
    return today - timedelta(days=CHECKS_DAYS - 1), today


def _checks_page(values: dict[str, str], show_checked: bool, *, error: Refused | None = None,
                 error_key: tuple[str, str] | None = None):
    """The page for the filter ``values``; rows marked as checked (and nothing newer since) only with
    ``show_checked``. ``error``: said at the row ``error_key`` (rule, subject) when there is one, else above."""
    context = {"values": values, "branches": branch_service.list_branches(), "rules": check_service,
               "show_checked": show_checked}
    try:
        scope = _scope(values, _checks_period())
    except Refused as refusal:
        return render_template("reports/checks.html", error=refusal.message, error_field=refusal.field,
                               **context), refusal.status
    values.update({"from": scope.first_day.isoformat(), "to": scope.last_day.isoformat()})
    every = check_service.with_marks(check_service.referral_checks(scope))
    shown, hidden = _shown(every, show_checked)
    keys = {(check.rule, check.subject) for check in shown}
    return render_template("reports/checks.html", checks=shown, hidden=hidden,
                           period_days=(format_day(scope.first_day), format_day(scope.last_day)),
                           branch=db.session.get(Branch, scope.branch_id) if scope.branch_id else None,
                           export_args={k: v for k, v in values.items() if v},
                           row_error=error.message if error and error_key in keys else None, error_key=error_key,
                           page_error=error.message if error and error_key not in keys else None,
                           **context), error.status if error else 200


@bp.get("/checks")
def checks():
    """Referrals to check (clinic/services/referral_checks.py): the last CHECKS_DAYS days by default, so that it holds
    friends registered long enough ago to have visited (this month alone would hold almost none). Rows a manager
    marked as checked are left out unless ``?checked=1``, until newer evidence brings them back."""
    return _checks_page(_filter_values(), request.args.get("checked") == "1")


def _posted_id(name: str) -> int | None:
    """An optional id field of the mark form: empty is None, anything but an id is refused (400)."""
    text = form_value(name, 40).strip()
    if not text:
        return None
    if not _is_id(text):
        raise Refused("unknown_subject", _("This row was not sent as the page made it: reload the page."),
                      status=400)
    return int(text)


@bp.post("/checks/mark")
def mark_checked():
    """"Mark as checked" on a row (audited): the row again for htmx (swapped in place), else back to the page (303)
    with the same filters. The form carries the page's filters so that the row can be drawn again as the page had it."""
    values = {name: form_value(name, 20).strip() for name in ("from", "to", "branch")}
    show_checked = form_value("checked", 2) == "1"
    rule = form_value("rule", 20)
    key = None
    try:
        referrer_id, staff_id, evidence_id = (_posted_id(name) for name in ("referrer", "staff", "evidence"))
        key = (rule, check_service.subject_key(referrer_id, staff_id))
        check_service.mark_checked(rule, referrer_id, staff_id, evidence_id, form_value("note"), current_actor())
    except Refused as refusal:
        if is_htmx():
            row = _find_check(_checks_in(values), key) if key else None
            if row is None:
                return render_error(refusal.status, refusal.message)
            return render_template("reports/_check_row.html", c=row, values=values, show_checked=show_checked,
                                   rules=check_service, row_error=refusal.message, error_key=key), refusal.status
        return _checks_page(values, show_checked, error=refusal, error_key=key)
    if is_htmx():
        every = _checks_in(values) or []
        shown, hidden = _shown(every, show_checked)
        # No row when the flag no longer shows in this period (a referral reversed meanwhile): the row goes.
        return render_template("reports/_marked.html", c=_find_check(every, key), values=values,
                               show_checked=show_checked, rules=check_service, shown_count=len(shown),
                               hidden=hidden, export_args={k: v for k, v in values.items() if v})
    flash(_("Marked as checked."))
    return redirect(url_for("reports.checks", checked="1" if show_checked else None,
                            **{k: v for k, v in values.items() if v}), code=303)


def _checks_in(values: dict[str, str]) -> list[check_service.Check] | None:
    """Every row of the filters' period, checked ones included, with their marks; None if the filters are refused."""
    try:
        scope = _scope(values, _checks_period())
    except Refused:
        return None
    return check_service.with_marks(check_service.referral_checks(scope))


def _shown(every: list[check_service.Check], show_checked: bool) -> tuple[list[check_service.Check], int]:
    """The rows the page lists, and how many checked ones it hides (none with ``show_checked``)."""
    shown = every if show_checked else [check for check in every if not check.checked]
    return shown, len(every) - len(shown)


def _find_check(checks: list[check_service.Check] | None, key: tuple[str, str] | None) -> check_service.Check | None:
    """The row for ``key`` (rule, subject) among ``checks``; None if it is not there."""
    return next((check for check in checks or [] if (check.rule, check.subject) == key), None)


EXPORTS = {"referrals", "vouchers", "patients", "campaigns", "checks"}


@bp.get("/exports/<kind>.csv")
def export(kind: str):
    """A CSV of referrals, vouchers, patients, the campaign comparison or the referrals to check, for the page's
    period and branch (audited)."""
    if kind not in EXPORTS:
        abort(404)
    try:
        scope = _scope(_filter_values(), _checks_period() if kind == "checks" else None)
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    actor = current_actor()
    if kind == "referrals":
        result = export_service.export_referrals(scope, current_clinic().currency, actor)
    elif kind == "vouchers":
        result = export_service.export_vouchers(scope, actor)
    elif kind == "campaigns":
        result = export_service.export_campaigns(scope, current_clinic().currency, actor)
    elif kind == "checks":
        result = export_service.export_checks(scope, actor)
    else:
        result = export_service.export_patients(scope, actor)
    return Response(result.text.encode("utf-8"), mimetype="text/csv", headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{result.filename(scope)}"',
        "Cache-Control": "no-store",
    })


def _branches_page(error: Refused | None = None, values: dict | None = None):
    """The page; an error is said under the field it names, or above everything when the page draws no such field
    (a form not sent as the page made it, a staff member gone meanwhile)."""
    staff = branch_service.staff_with_branches()
    drawn = {"name", "address", *(f"branch-{member.id}" for member in staff)}
    return render_template("reports/branches.html", branches=branch_service.list_branches(), staff=staff, error=error,
                           page_error=error if error is not None and error.field not in drawn else None,
                           values=values or {}), error.status if error else 200


@bp.get("/branches")
def branches():
    return _branches_page()


@bp.post("/branches")
def create_branch():
    values = {"name": form_value("name", 400), "address": form_value("address", 1000)}
    try:
        branch = branch_service.create_branch(values["name"], values["address"], current_actor())
    except Refused as refusal:
        return _branches_page(refusal, values)
    flash(_("Branch %(name)s added.", name=branch.name))
    return redirect(url_for("reports.branches"), code=303)


@bp.route("/branches/<int:branch_id>", methods=["GET", "POST"])
def edit_branch(branch_id: int):
    branch = db.session.get(Branch, branch_id)
    if branch is None:
        abort(404)
    if request.method == "GET":
        return render_template("reports/branch_edit.html", branch=branch, error=None,
                               values={"name": branch.name, "address": branch.address})
    values = {"name": form_value("name", 400), "address": form_value("address", 1000)}
    try:
        branch = branch_service.update_branch(branch_id, values["name"], values["address"], current_actor())
    except Refused as refusal:
        return render_template("reports/branch_edit.html", branch=branch, error=refusal,
                               values=values), refusal.status
    flash(_("Branch %(name)s saved.", name=branch.name))
    return redirect(url_for("reports.branches"), code=303)


@bp.post("/branches/staff")
def assign_staff():
    """The staff list's form: one select per person, named ``branch-<staff id>``; empty means no branch."""
    assignments = {}
    for name, value in request.form.items(multi=True):
        if not name.startswith("branch-"):
            continue
        staff_id = name.removeprefix("branch-")
        # One field per person, named as the page names it: "branch-02" beside "branch-2", or a repeated field,
        # would leave which one counts to the order the browser sent them in.
        if not _is_id(staff_id) or str(int(staff_id)) != staff_id or int(staff_id) in assignments:
            return _branches_page(Refused("bad_form", _("This form was not sent as the page made it. Reload the "
                                                        "page and try again.")))
        value = value.strip()
        if value and not _is_id(value):
            return _branches_page(Refused("unknown_branch", _("Pick one of the listed branches."), field=name))
        assignments[int(staff_id)] = int(value) if value else None
    try:
        changed = branch_service.assign_branches(assignments, current_actor())
    except Refused as refusal:
        return _branches_page(refusal)
    flash(ngettext("%(num)d staff member moved.", "%(num)d staff members moved.", changed) if changed
          else _("Nothing changed."))
    return redirect(url_for("reports.branches"), code=303)
