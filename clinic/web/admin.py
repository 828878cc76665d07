"""Manager pages: clinic settings, campaigns, voiding vouchers, the audit log."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_babel import refresh as refresh_language

from clinic.extensions import db
from clinic.models import Campaign, Staff, Voucher
from clinic.models._time import utcnow
from clinic.services import audit as audit_service
from clinic.services import clinic_settings
from clinic.services import posters as poster_service
from clinic.services import retention as retention_service
from clinic.services import staff as staff_service
from clinic.web.accounts import staff_page
from clinic.services import two_step
from clinic.services import vouchers as voucher_service
from clinic.services.errors import Refused
from clinic.services.rewards import campaign_in_force
from clinic.web.forms import CampaignForm, ClinicSettingsForm, RetentionForm, VoidVoucherForm
from clinic.web.helpers import current_actor, form_value, manager_required, parse_id
from clinic.web.posters import file_response

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 100
RETENTION_LIST = 200  # patients listed by name (masked) before the retention rule's button; the count says the rest
# Patients the button erases per press: some 10 ms each, so a press stays well within gunicorn's timeout (60 s).
RETENTION_PRESS = 1000
SETTINGS_FORM_FIELDS = ("name", "phone", "address", "brand_colour", "currency", "language", "timezone",
                        "public_base_url")
# The settings form with a logo far over clinic_settings.MAX_LOGO_BYTES (a photo straight from a phone): still read,
# so that the form refuses the logo next to its field and keeps the rest. Larger still is refused unread (413).
SETTINGS_BODY_BYTES = 10 * 1024 * 1024


def largest_body() -> int:
    """The settings form's limit, the largest of this blueprint's (web/__init__.py sizes chunked bodies by it)."""
    return SETTINGS_BODY_BYTES


@bp.url_value_preprocessor
def _room_for_a_large_logo(endpoint, _values):
    """Allow SETTINGS_BODY_BYTES on the settings form only (the app's limit is MAX_CONTENT_LENGTH).

    URL value preprocessors run before every before_request function, so the limit is raised
    before the CSRF check reads the form.
    """
    if endpoint == "admin.settings":
        request.max_content_length = SETTINGS_BODY_BYTES


@bp.before_request
@manager_required
def _managers_only():
    """Every page here is for managers; front-desk staff get 403."""


@bp.route("/settings", methods=["GET", "POST"])
def settings():
    clinic = clinic_settings.get_clinic()
    form = ClinicSettingsForm(obj=clinic)
    if request.method == "POST":
        if form.validate():
            values = {field: " ".join((form[field].data or "").split()) for field in SETTINGS_FORM_FIELDS}
            values["public_base_url"] = values["public_base_url"].rstrip("/") or None
            values["address"] = (form.address.data or "").strip()
            values["managers_need_two_step"] = bool(form.managers_need_two_step.data)
            values["retention_months"] = form.retention_months.data
            upload = form.logo.data
            try:
                if upload and upload.filename:
                    clinic_settings.update_clinic_with_logo(values, upload.stream, current_app.config["UPLOAD_FOLDER"],
                                                            current_actor())
                else:
                    clinic_settings.update_clinic(values, current_actor())
            except Refused as refusal:
                form[refusal.field if refusal.field in form else "logo"].errors.append(refusal.message)
                return _settings_page(form, refusal.status)
            refresh_language()  # a new default language: say "saved" in it, as the next page will be
            flash(_("Settings saved."))
            return redirect(url_for("admin.settings"), code=303)
        return _settings_page(form, 422)
    return _settings_page(form)


def _settings_page(form: ClinicSettingsForm, status: int = 200):
    return render_template("admin/settings.html", form=form, retention_due=retention_service.due_count()), status


@bp.route("/retention", methods=["GET", "POST"])
def retention():
    """Who the retention rule would erase now (masked), and the button that erases them, as the nightly command does.

    Pressing twice erases nothing more: the second press finds none due.
    """
    form = RetentionForm()
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate():
            report = retention_service.erase_inactive_patients(current_actor(), limit=RETENTION_PRESS)
            flash(ngettext("The personal data of %(num)d patient was erased.",
                           "The personal data of %(num)d patients was erased.", len(report.erased)))
            if report.failed:
                flash(ngettext("%(num)d erasure failed: that patient stays due and is tried again next time.",
                               "%(num)d erasures failed: those patients stay due and are tried again next time.",
                               len(report.failed)))
            return redirect(url_for("admin.retention"), code=303)
    due, listed = retention_service.due_patients(limit=RETENTION_LIST)
    return render_template("admin/retention.html", form=form, due=due, listed=listed,
                           months=retention_service.retention_months()), status


@bp.route("/campaign", methods=["GET", "POST"])
def campaign():
    """The former single campaign page: now editing the default campaign (old bookmarks and open forms)."""
    current = clinic_settings.default_campaign()
    if current is None:
        return redirect(url_for("admin.campaigns"))
    if request.method == "POST":
        return edit_campaign(current.id)
    return redirect(url_for("admin.edit_campaign", campaign_id=current.id))


@bp.get("/campaigns")
def campaigns():
    now = utcnow()
    return render_template("admin/campaigns.html", campaigns=clinic_settings.list_campaigns(), now=now,
                           for_personal=campaign_in_force(for_cards=False, now=now),
                           for_cards=campaign_in_force(for_cards=True, now=now))


@bp.route("/campaigns/new", methods=["GET", "POST"])
def new_campaign():
    form = CampaignForm()
    if request.method == "POST":
        return _save_campaign(form, None)
    return _campaign_page(form, None)


@bp.route("/campaigns/<int:campaign_id>", methods=["GET", "POST"])
def edit_campaign(campaign_id: int):
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        abort(404)
    if request.method == "POST":
        return _save_campaign(CampaignForm(), campaign)
    form = CampaignForm(obj=campaign)
    form.fill_from(campaign, clinic_settings.current_clinic().currency)
    return _campaign_page(form, campaign)


def _save_campaign(form: CampaignForm, campaign: Campaign | None):
    """Create or update from the posted form; on any problem the same form comes back with 422 (409 for a change
    of the offer printed on cards)."""
    values = form.campaign_values(clinic_settings.current_clinic().currency)
    status = 422
    if values is not None:
        try:
            if campaign is None:
                saved = clinic_settings.create_campaign(values, current_actor())
            else:
                saved = clinic_settings.update_campaign(campaign.id, values, current_actor())
        except Refused as refusal:
            form.add_error(refusal.field, refusal.message)
            status = refusal.status
        else:
            flash(_("Campaign “%(name)s” saved. Rewards already promised and vouchers already issued keep "
                    "their terms.", name=saved.name))
            return redirect(url_for("admin.campaigns"), code=303)
    return _campaign_page(form, campaign), status


def _campaign_page(form: CampaignForm, campaign: Campaign | None) -> str:
    """The campaign form, saying how many scratch cards print the campaign's offer (which then cannot change)."""
    printed_cards = clinic_settings.cards_carrying_offer(campaign.id) if campaign else 0
    return render_template("admin/campaign.html", form=form, campaign=campaign, printed_cards=printed_cards)


@bp.route("/vouchers/<int:voucher_id>/void", methods=["GET", "POST"])
def void_voucher(voucher_id: int):
    voucher = db.session.get(Voucher, voucher_id)
    if voucher is None:
        abort(404)
    form = VoidVoucherForm()
    if request.method == "POST":
        if form.validate():
            try:
                voucher_service.void_voucher(voucher_id, form.reason.data, current_actor(),
                                             idempotency_key=form_value("idempotency_key"))
            except Refused as refusal:
                form.reason.errors.append(refusal.message)
            else:
                flash(_("Voucher %(code)s is void.", code=voucher.code))
                return redirect(url_for("patients.show", patient_id=voucher.patient_id), code=303)
        return render_template("admin/void_voucher.html", form=form, voucher=voucher), 422
    return render_template("admin/void_voucher.html", form=form, voucher=voucher)


@bp.get("/staff")
def staff():
    """Who has an account, whether it is enabled, and on how many devices it is logged in."""
    return staff_page()


def _staff_action(action, staff_id: int, done: str):
    try:
        action()
    except Refused as refusal:
        return staff_page(refusal.status, refusal=refusal, refused_id=staff_id)
    flash(done)
    return redirect(url_for("admin.staff"), code=303)


@bp.post("/staff/<int:staff_id>/disable")
def disable_staff(staff_id: int):
    return _staff_action(lambda: staff_service.set_enabled(staff_id, False, current_actor()), staff_id,
                         _("The account is disabled and logged out everywhere."))


@bp.post("/staff/<int:staff_id>/enable")
def enable_staff(staff_id: int):
    return _staff_action(lambda: staff_service.set_enabled(staff_id, True, current_actor()), staff_id,
                         _("The account is enabled: they can log in again."))


@bp.post("/staff/<int:staff_id>/sessions/end")
def end_staff_sessions(staff_id: int):
    """Log someone out on every device (a lost phone, a password seen by others)."""
    return _staff_action(lambda: staff_service.end_sessions(staff_id, current_actor()), staff_id,
                         _("Logged out on every device."))


@bp.post("/staff/<int:staff_id>/two-step/reset")
def reset_two_step(staff_id: int):
    """Turn off someone's two-step login (a lost phone) and log them out everywhere: they log in with their
    password, then set it up again."""
    return _staff_action(lambda: two_step.reset(staff_id, current_actor()), staff_id,
                         _("Two-step login is off for that account and it is logged out everywhere: the password "
                           "alone logs in until its owner turns two-step login on again."))


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return parse_id(value)


@bp.get("/audit")
def audit():
    action = (request.args.get("action") or "")[:40] or None
    outcome = request.args.get("outcome") if request.args.get("outcome") in ("ok", "refused") else None
    filters = dict(action=action, outcome=outcome, staff_id=_int_arg("staff_id"), patient_id=_int_arg("patient_id"))
    events = audit_service.search_events(**filters, before_id=_int_arg("before"), limit=AUDIT_PAGE)
    older_url = None
    if len(events) == AUDIT_PAGE:
        older_url = url_for("admin.audit", before=events[-1].id, **{k: v for k, v in filters.items() if v})
    return render_template("admin/audit.html", events=events, filters=filters, older_url=older_url,
                           actions=audit_service.audit_actions(),
                           staff=db.session.scalars(db.select(Staff).order_by(Staff.email)).all())


def _posters_page(values: dict, error: str | None = None, status: int = 200):
    return render_template("admin/posters.html", values=values, error=error, designs=poster_service.DESIGNS,
                           sizes=poster_service.SIZES, limit=poster_service.MAX_POSTERS), status


@bp.get("/posters")
def posters():
    """Posters for a selection of patients, for example everyone enrolled today."""
    today = clinic_settings.clinic_today().isoformat()
    return _posters_page({"from": today, "to": today, "design": poster_service.DESIGNS[0],
                          "size": poster_service.SIZES[0]})


def _day(text: str, message: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Refused("bad_date", message, status=400) from None


@bp.get("/posters.pdf")
def posters_pdf():
    """One PDF, a page per patient enrolled in the chosen days (clinic time), newest first."""
    values = {name: (request.args.get(name) or "").strip()[:20] for name in ("from", "to", "design", "size")}
    today = clinic_settings.clinic_today().isoformat()
    try:
        first = _day(values["from"] or today, _("The start date is not a date: pick one from the calendar."))
        last = _day(values["to"] or today, _("The end date is not a date: pick one from the calendar."))
        design, size = poster_service.poster_options(values["design"], values["size"])
        patients = poster_service.enrolled_between(first, last)
    except Refused as refusal:
        return _posters_page(values, refusal.message, refusal.status)
    return file_response(poster_service.posters_pdf(patients, design, size), "application/pdf",
                         f"posters-{first}-to-{last}-{design}-{size}.pdf")
