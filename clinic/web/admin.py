"""Manager pages: clinic settings, the default campaign, voiding vouchers, the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from clinic.extensions import db
from clinic.models import Staff, Voucher
from clinic.services import audit as audit_service
from clinic.services import clinic_settings
from clinic.services import vouchers as voucher_service
from clinic.services.errors import Refused
from clinic.services.money import major_units_text
from clinic.web.forms import CampaignForm, ClinicSettingsForm, VoidVoucherForm
from clinic.web.helpers import current_actor, manager_required

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 100
SETTINGS_FORM_FIELDS = ("name", "phone", "address", "brand_colour", "currency", "timezone", "public_base_url")


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
            upload = form.logo.data
            try:
                if upload and upload.filename:
                    values["logo_filename"] = clinic_settings.save_logo(upload.stream,
                                                                        current_app.config["UPLOAD_FOLDER"])
            except Refused as refusal:
                form.logo.errors.append(refusal.message)
            else:
                clinic_settings.update_clinic(values, current_actor())
                flash("Settings saved.")
                return redirect(url_for("admin.settings"), code=303)
        return render_template("admin/settings.html", form=form), 422
    return render_template("admin/settings.html", form=form)


@bp.route("/campaign", methods=["GET", "POST"])
def campaign():
    clinic = clinic_settings.get_clinic()
    current = clinic_settings.default_campaign()
    if request.method == "POST":
        form = CampaignForm()
        values = form.campaign_values(clinic.currency)
        if values is None:
            return render_template("admin/campaign.html", form=form), 422
        clinic_settings.update_default_campaign(values, current_actor())
        flash("Campaign saved. Vouchers already issued keep their value.")
        return redirect(url_for("admin.campaign"), code=303)
    form = CampaignForm(obj=current)
    if current is not None:
        form.referrer_reward_amount.data = major_units_text(current.referrer_reward_amount, clinic.currency)
        form.friend_reward_amount.data = major_units_text(current.friend_reward_amount, clinic.currency)
    return render_template("admin/campaign.html", form=form)


@bp.route("/vouchers/<int:voucher_id>/void", methods=["GET", "POST"])
def void_voucher(voucher_id: int):
    voucher = db.session.get(Voucher, voucher_id)
    if voucher is None:
        abort(404)
    form = VoidVoucherForm()
    if request.method == "POST":
        if form.validate():
            try:
                voucher_service.void_voucher(voucher_id, form.reason.data, current_actor())
            except Refused as refusal:
                form.reason.errors.append(refusal.message)
            else:
                flash(f"Voucher {voucher.code} is void.")
                return redirect(url_for("patients.show", patient_id=voucher.patient_id), code=303)
        return render_template("admin/void_voucher.html", form=form, voucher=voucher), 422
    return render_template("admin/void_voucher.html", form=form, voucher=voucher)


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 12 else None


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
