"""Patients: enrol, search, the patient page, the welcome slip with the private link, correcting details."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from clinic.extensions import db
from clinic.models import Patient
from clinic.services import cards as card_service
from clinic.services import erasure as erasure_service
from clinic.services import invitation_messages, invite_opens
from clinic.services import notifications as notification_service
from clinic.services import patient_data as patient_data_service
from clinic.services import patients as patient_service
from clinic.services import posters as poster_service
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.services.urls import invite_url, progress_url
from clinic.web.forms import (CorrectDetailsForm, ErasureForm, NotificationPreferencesForm, PatientDetailsForm,
                              PaymentForm, ReasonForm, VoidVoucherForm)
from clinic.web.fresh_links import fresh_progress_token, remember_fresh_progress_token
from clinic.web.helpers import (current_actor, manager_required, print_language, print_language_choice,
                                render_fragment_or_page, render_printed)
from clinic.web.posters import FORMATS, poster_response

bp = Blueprint("patients", __name__, url_prefix="/patients")


@bp.before_request
@login_required
def _staff_only():
    """Every patient page needs a logged-in member of staff."""


@bp.get("/")
def search():
    query = (request.args.get("q") or "")[:100]
    return render_fragment_or_page("patients/_rows.html", "patients/index.html",
                                   patients=patient_service.search_patients(query), q=query,
                                   search_limit=patient_service.SEARCH_LIMIT)


@bp.route("/new", methods=["GET", "POST"])
def enrol():
    form = PatientDetailsForm()
    if request.method == "POST":
        if form.validate():
            try:
                patient, token = patient_service.enrol_patient(form.details, current_actor())
            except Refused as refusal:
                form.add_error(refusal.field, refusal.message)
            else:
                remember_fresh_progress_token(patient.id, token)
                flash(_("%(name)s is enrolled. Print the welcome slip for them now.", name=patient.full_name))
                return redirect(url_for("patients.welcome", patient_id=patient.id), code=303)
        return render_template("patients/new.html", form=form), 422
    form.preferred_language.data = patient_service.default_message_language()
    return render_template("patients/new.html", form=form)


def _timeline_or_404(patient_id: int):
    timeline = patient_service.patient_timeline(patient_id)
    if timeline is None:
        abort(404)
    return timeline


@bp.get("/<int:patient_id>")
def show(patient_id: int):
    return render_patient_page(patient_id)


def render_patient_page(patient_id: int, status: int = 200, **forms):
    """The patient page; a failed form posted from it (a payment, a reversal) comes back in ``forms``.

    The small forms without a form class (a card's serial, the poster consent) come back as ``errors`` and
    ``values``, keyed by the field's name.
    """
    timeline = _timeline_or_404(patient_id)
    forms.setdefault("errors", {})
    forms.setdefault("values", {})
    forms.setdefault("payment_form", PaymentForm(formdata=None))
    forms.setdefault("reverse_form", ReasonForm(formdata=None))
    forms.setdefault("notification_form", NotificationPreferencesForm(formdata=None, obj=timeline.patient))
    return render_template("patients/show.html", t=timeline, void_form=VoidVoucherForm(formdata=None),
                           cards=card_service.patient_cards(patient_id), card_designs=card_service.DESIGNS,
                           poster_designs=poster_service.DESIGNS, poster_sizes=poster_service.SIZES,
                           invite_link=invite_url(timeline.patient.personal_code),
                           opens=invite_opens.opens_of(patient_id), **forms), status


@bp.post("/<int:patient_id>/progress-link")
def rotate_progress_link(patient_id: int):
    try:
        token = patient_service.rotate_progress_link(patient_id, current_actor())
    except Refused:
        abort(404)
    remember_fresh_progress_token(patient_id, token)
    flash(_("A new private progress link was issued. The old link no longer works."))
    return redirect(url_for("patients.welcome", patient_id=patient_id), code=303)


@bp.post("/<int:patient_id>/poster-consent")
def poster_consent(patient_id: int):
    consent = request.form.get("name_on_posters") == "yes"
    try:
        patient_service.set_poster_consent(patient_id, consent, current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        return render_patient_page(patient_id, refusal.status, errors={"name_on_posters": refusal.message})
    flash(_("Their name will be printed on posters.") if consent else _("Posters will not show their name."))
    return redirect(url_for("patients.show", patient_id=patient_id), code=303)


@bp.post("/<int:patient_id>/notifications")
def notification_preferences(patient_id: int):
    """Record how the patient wants to hear about rewards (SMS / WeChat / not at all) and whether they agreed."""
    form = NotificationPreferencesForm()
    if form.validate():
        try:
            patient = notification_service.set_preferences(
                patient_id, form.preferred_channel.data, form.preferred_language.data, form.notification_consent.data,
                current_actor())
        except FieldErrors as problems:
            for field, message in problems.errors.items():
                form[field].errors.append(message)
        except Refused:
            abort(404)
        else:
            flash(_("They will get messages about their rewards.") if patient.notification_consent
                  else _("They will get no messages."))
            return redirect(url_for("patients.show", patient_id=patient_id, _anchor="messages"), code=303)
    return render_patient_page(patient_id, 422, notification_form=form)


@bp.post("/<int:patient_id>/invitation")
def send_invitation(patient_id: int):
    """Send the patient their code and invite link by message, now (they lost the slip, or never got a poster)."""
    try:
        invitation_messages.invite_patient(patient_id, current_actor())
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        return render_patient_page(patient_id, refusal.status, errors={"invitation": refusal.message})
    flash(_("Their code and invite link are on their way by message."))
    return redirect(url_for("patients.show", patient_id=patient_id, _anchor="messages"), code=303)


@bp.get(f"/<int:patient_id>/poster.<{FORMATS}:kind>")
def poster(patient_id: int, kind: str):
    """The patient's referral poster: PDF (``?design=&size=``) or the phone image (``?design=``)."""
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        abort(404)
    _refuse_erased(patient)
    return poster_response(patient, kind)


def _refuse_erased(patient: Patient) -> None:
    """Nothing personal is printed for a patient whose data was erased: their code no longer works either."""
    if patient.erased_at is not None:
        abort(410, _("This patient's personal data was erased: there is nothing of theirs to print."))


@bp.get("/<int:patient_id>/welcome")
def welcome(patient_id: int):
    """The printable welcome slip: code, invite QR and, while it is fresh, the progress link QR."""
    timeline = _timeline_or_404(patient_id)
    _refuse_erased(timeline.patient)
    token = fresh_progress_token(patient_id)
    progress_link = progress_url(token) if token else None
    language = print_language()
    slip = render_printed("patients/_welcome_slip.html", language, patient=timeline.patient,
                          progress_link=progress_link, invite_link=invite_url(timeline.patient.personal_code))
    return render_template("patients/welcome.html", patient=timeline.patient, slip=slip, progress_link=progress_link,
                           **print_language_choice(language))


@bp.route("/<int:patient_id>/erase", methods=["GET", "POST"])
@manager_required
def erase(patient_id: int):
    """Erase the patient's personal data, after a page that says what it changes and what it keeps."""
    form = ErasureForm()
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate():
            try:
                erasure_service.erase_patient(patient_id, form.reason.data, current_actor())
            except Refused as refusal:
                if refusal.status == 404:
                    abort(404)
                status = refusal.status
                (form[refusal.field].errors if refusal.field else form.form_errors).append(refusal.message)
            else:
                flash(_("The patient's personal data is erased. Their vouchers stay valid; their code and cards no "
                        "longer work."))
                return redirect(url_for("patients.show", patient_id=patient_id), code=303)
    plan = erasure_service.erasure_plan(patient_id)
    if plan is None:
        abort(404)
    return render_template("patients/erase.html", plan=plan, form=form), status


@bp.get("/<int:patient_id>/data.json")
@manager_required
def data(patient_id: int):
    """Everything held about the patient, to hand to them when they ask (audited; never cached)."""
    try:
        patient, text = patient_data_service.patient_data(patient_id, current_actor())
    except Refused:
        abort(404)
    return Response(text.encode("utf-8"), mimetype="application/json", headers={
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="patient-{patient.id}-data.json"',
    })


@bp.route("/<int:patient_id>/details", methods=["GET", "POST"])
def correct_details(patient_id: int):
    """Correct the patient's name, display name, phone and record number (a typo at the desk, or at their request).
    Front-desk staff see the phone masked, as everywhere else, and replace it whole or leave it."""
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        abort(404)
    if patient.erased_at is not None:
        abort(410, _("This patient's personal data was erased: nothing can be changed."))
    form = CorrectDetailsForm(formdata=None) if request.method == "GET" else CorrectDetailsForm()
    if not current_user.is_manager:
        form.keep_phone_masked(patient)
    if request.method == "GET":
        form.fill_from(patient, patient_service.details_fingerprint(patient))
        return _details_page(patient, form)
    if not form.validate():
        return _details_page(patient, form, 422)
    try:
        changed = patient_service.correct_details(patient_id, form.details, current_actor(), seen=form.seen.data)
    except FieldErrors as problems:
        for field, message in problems.errors.items():
            form.add_error(field, message)
        return _details_page(patient, form, problems.status)
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        if refusal.reason != "changed_meanwhile":
            form.add_error(refusal.field, refusal.message)
            return _details_page(patient, form, refusal.status)
        patient = db.session.get(Patient, patient_id)
        typed = form.show_current(patient, patient_service.details_fingerprint(patient))
        return _details_page(patient, form, refusal.status, changed_meanwhile=refusal.message, typed=typed)
    if not changed:
        flash(_("Nothing changed."))
    elif "name_on_posters" in changed:
        flash(_("The details are corrected. Posters show no name until the patient agrees to the new one."))
    else:
        flash(_("The details are corrected."))
    return redirect(url_for("patients.show", patient_id=patient_id), code=303)


def _details_page(patient: Patient, form: CorrectDetailsForm, status: int = 200, **context):
    return render_template("patients/details.html", patient=patient, form=form, **context), status
