"""The API's views: read the JSON, call one service, answer JSON. Refusals become errors in
clinic/api/__init__.py; the rules themselves live in clinic/services only."""

from __future__ import annotations

from flask import g, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from clinic.api import PUBLIC_ENDPOINTS, api_actor, bp, payloads
from clinic.api.errors import api_error, refusal_response
from clinic.api.scopes import VOUCHER_DETAILS_SCOPE
from clinic.api.inputs import (
    MAX_ID,
    amount_field,
    boolean_field,
    idempotency_key,
    integer_field,
    invalid,
    json_body,
    only_fields,
    patient_details,
    text_field,
    unknown_name,
)
from clinic.api.spec import openapi_document, reference
from clinic.extensions import db
from clinic.models import CardBatch, Patient, RewardStatus, Stage, Voucher
from clinic.services import cards as card_service
from clinic.services import desk as desk_service
from clinic.services import milestones
from clinic.services import patients as patient_service
from clinic.services import redemption as redemption_service
from clinic.services import vouchers as voucher_service
from clinic.services.clinic_settings import current_clinic
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.services.patients import PatientDetails
from clinic.services.text import clean_text
from clinic.web.helpers import send_private_file

# The services' names of a new patient's fields: in a redemption they are inside "new_patient".
PATIENT_FIELDS = frozenset({"full_name", "display_name", "phone", "external_id", "name_on_posters"})
# The query parameters each operation takes; any other is refused, so that a misspelt one is not ignored.
QUERY_PARAMETERS = {"api.find_patients": frozenset({"external_id", "phone"})}


@bp.before_request
def _refuse_unknown_query_parameters():
    if request.endpoint not in PUBLIC_ENDPOINTS:
        unknown_name(request.args, "query parameter", QUERY_PARAMETERS.get(request.endpoint, frozenset()))


def patient_or_404(patient_id: int) -> Patient:
    found = db.session.get(Patient, patient_id) if patient_id <= MAX_ID else None
    if found is None:
        raise Refused("not_found", _("No patient has this id."), status=404)
    return found


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/docs")
def docs():
    document = openapi_document()
    return render_template("api/docs.html", spec=document, ref=reference(document))


@bp.post("/patients")
def create_patient():
    details = patient_details(json_body())
    found, token = patient_service.enrol_patient(details, api_actor())
    return jsonify(payloads.patient(found, token)), 201, {"Location": url_for("api.get_patient",
                                                                               patient_id=found.id)}


@bp.get("/patients")
def find_patients():
    """By the clinic's record number or by phone: a list of at most one patient."""
    external_id, phone = request.args.get("external_id"), request.args.get("phone")
    if (external_id is None) == (phone is None):
        raise invalid(_("Give exactly one of external_id or phone."), "external_id")
    try:
        if external_id is not None:
            wanted = Patient.external_id == clean_text(external_id, max_length=patient_service.EXTERNAL_ID_MAX,
                                                       label="external_id", required=True)
        else:
            wanted = Patient.phone == patient_service.normalize_phone(phone)
    except ValueError as problem:
        raise invalid(str(problem), "external_id" if external_id is not None else "phone") from None
    found = db.session.scalars(select(Patient).where(wanted).limit(1)).all()
    return jsonify(patients=[payloads.patient(p) for p in found])


# Two rules on one path (GET and PATCH): an id beyond the bounded converter would then answer the second method 405
# (werkzeug checks methods before converters), so these take any id and patient_or_404 answers 404 above MAX_ID.
ANY_PATIENT_ID = "/patients/<int(max=None):patient_id>"


@bp.get(ANY_PATIENT_ID)
def get_patient(patient_id: int):
    patient = patient_or_404(patient_id)
    return jsonify(payloads.patient(patient)), {"ETag": _etag(patient)}


# What PATCH may correct, by the API's field names, with the patient's attribute each stands for.
CORRECTABLE = {"name": "full_name", "display_name": "display_name", "phone": "phone", "external_id": "external_id"}


@bp.patch(ANY_PATIENT_ID)
def correct_patient(patient_id: int):
    """Correct the fields sent (the others stay), if nobody changed the patient since the ETag in If-Match."""
    body = json_body()
    only_fields(body, set(CORRECTABLE))
    if not body:
        raise invalid(_("Send at least one of name, display_name, phone, external_id."))
    patient = patient_service.patient_to_change(patient_or_404(patient_id).id)
    seen = _if_match(patient)
    sent = {name: text_field(body, name, required=name == "name") for name in body}
    details = PatientDetails.from_form(**{attribute: sent[name] if name in sent else getattr(patient, attribute)
                                          for name, attribute in CORRECTABLE.items()})
    try:
        patient_service.correct_details(patient_id, details, api_actor(), seen=seen)
    except Refused as refusal:
        if refusal.reason != "changed_meanwhile":
            raise
        raise Refused("changed_meanwhile", _("The patient's details changed since the ETag in If-Match: get the "
                                             "patient again, then send the correction with the new ETag."),
                      status=412) from None
    patient = db.session.get(Patient, patient_id, populate_existing=True)
    return jsonify(payloads.patient(patient)), {"ETag": _etag(patient)}


def _etag(patient: Patient) -> str:
    """A digest of the details a correction may change: what a client sends back in If-Match."""
    return f'"{patient_service.details_fingerprint(patient)}"'


def _if_match(patient: Patient) -> str:
    """The fingerprint the client saw (If-Match), or the current one for ``*``: a correction overwriting whatever
    is there, which the client asked for by name."""
    wanted = request.headers.get("If-Match")
    if wanted is None:
        raise Refused("precondition_required", _("Send If-Match with the ETag of GET /api/v1/patients/%(id)s (or * "
                                                 "to correct whatever the details are now).", id=patient.id),
                      status=428, field="If-Match")
    if wanted.strip() == "*":
        return patient_service.details_fingerprint(patient)
    return wanted.strip().removeprefix('"').removesuffix('"')


@bp.post("/patients/<int:patient_id>/progress-link")
def rotate_progress_link(patient_id: int):
    """A new private progress link; the old one stops working at once."""
    patient_or_404(patient_id)
    token = patient_service.rotate_progress_link(patient_id, api_actor())
    return jsonify(payloads.patient(patient_or_404(patient_id), token))


def _milestone(result: milestones.MilestoneResult):
    issued = [r for r in result.paid if r.status == RewardStatus.ISSUED.value]
    return jsonify(recorded=result.recorded, referral=payloads.referral(result.referral),
                   rewards=[payloads.reward(r) for r in result.paid],
                   **payloads.issued_vouchers([r.voucher for r in issued]))


@bp.post("/patients/<int:patient_id>/visit")
def record_visit(patient_id: int):
    only_fields(json_body(required=False), set())  # a body is optional, but one with fields is a mistake to say
    patient_or_404(patient_id)
    key = idempotency_key()
    return _milestone(milestones.record_visit(patient_id, api_actor(), idempotency_key=key))


@bp.post("/patients/<int:patient_id>/payment")
def record_payment(patient_id: int):
    body = json_body(required=False)
    only_fields(body, {"amount"})
    amount = amount_field(body, "amount", current_clinic().currency)
    patient_or_404(patient_id)
    key = idempotency_key()
    return _milestone(milestones.record_payment(patient_id, amount, api_actor(), idempotency_key=key))


@bp.post("/codes/validate")
def validate_code():
    """What the desk would say about a code, without using it. A voucher's details (its value, state and whose it
    is) are what GET /vouchers/{code} shows: only to a token that may read vouchers, so that redeeming cannot read
    through them; any other token learns only that the code is a voucher's."""
    body = json_body()
    only_fields(body, {"code"})
    found = desk_service.identify_code(text_field(body, "code", required=True))
    if isinstance(found, Voucher):
        details = payloads.voucher(found) if VOUCHER_DETAILS_SCOPE in g.api_token.scopes else None
        return jsonify(code=found.code, code_display=format_code(found.code), kind="voucher",
                       referral=None, voucher=details)
    offer = payloads.offer(found, current_clinic().currency)
    return jsonify(code=offer["code"], code_display=offer["code_display"], kind=offer["kind"], referral=offer,
                   voucher=None)


@bp.post("/redemptions")
def redeem():
    """Register the friend, link them to the referrer and issue the vouchers due now."""
    body = json_body()
    only_fields(body, {"code", "new_patient"})
    code = text_field(body, "code", required=True)
    new_patient = body.get("new_patient")
    if not isinstance(new_patient, dict):
        raise invalid("new_patient must be an object with the friend's name and phone.", "new_patient")
    try:
        details = patient_details(new_patient, "new_patient.")
        result = redemption_service.redeem_code(code, details, api_actor(), idempotency_key=idempotency_key())
    except Refused as refusal:
        return refusal_response(refusal, "new_patient.", PATIENT_FIELDS)
    headers = {"Location": url_for("api.get_patient", patient_id=result.friend.id)}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    # The vouchers this redemption issued, told apart by their rewards' stage: a replay after the friend's
    # first visit must not list the visit's vouchers as the redemption's.
    issued = sorted((r.voucher for r in result.referral.rewards if r.stage == Stage.REDEMPTION.value and r.voucher_id),
                    key=lambda voucher: voucher.id)
    return jsonify(referral=payloads.referral(result.referral), friend=payloads.patient(result.friend),
                   **payloads.issued_vouchers(issued),
                   rewards=[payloads.reward(r) for r in result.referral.rewards]), 201, headers


def _voucher_by_code(code: str) -> Voucher:
    found = voucher_service.find_voucher(voucher_service.parse_voucher_code(code))
    if found is None:
        raise voucher_service.explain_unusable(None)
    return found


@bp.get("/vouchers/<code>")
def get_voucher(code: str):
    return jsonify(payloads.voucher(_voucher_by_code(code)))


@bp.post("/vouchers/<code>/spend")
def spend_voucher(code: str):
    # A voucher is spent whole: {"amount": 100} must not spend a ¥500 voucher in silence.
    only_fields(json_body(required=False), set())
    key = idempotency_key()
    spent, replayed = voucher_service.spend_voucher(code, api_actor(), idempotency_key=key)
    return jsonify(payloads.voucher(spent)), 200, {"Idempotent-Replayed": "true"} if replayed else {}


@bp.post("/vouchers/<code>/void")
def void_voucher(code: str):
    body = json_body()
    only_fields(body, {"reason"})
    reason = text_field(body, "reason", required=True)
    found = _voucher_by_code(code)
    key = idempotency_key()
    return jsonify(payloads.voucher(voucher_service.void_voucher(found.id, reason, api_actor(),
                                                                 idempotency_key=key)))


@bp.post("/cards/<serial>/activate")
def activate_card(serial: str):
    """At discharge: the card's hidden code becomes this patient's single-use referral code."""
    body = json_body()
    only_fields(body, {"patient_id"})
    patient_id = integer_field(body, "patient_id", required=True, minimum=1)
    try:
        card = card_service.activate_card(serial, patient_id, api_actor())
    except Refused as refusal:
        if refusal.reason == "not_found":
            refusal.field = "patient_id"
        raise
    return jsonify(payloads.card(card))


@bp.post("/card-batches")
def create_batch():
    """Queue a print run; poll the Location for its progress, then fetch its PDF."""
    body = json_body()
    only_fields(body, {"size", "design", "bleed"})
    size = integer_field(body, "size", required=True, minimum=1, maximum=card_service.MAX_BATCH_SIZE)
    design = text_field(body, "design")
    bleed = boolean_field(body, "bleed")
    batch = card_service.create_batch(size, "classic" if design is None else design, bleed, api_actor())
    card_service.start_batch(batch.id, api_actor())  # 503 not_queued when the job queue is out of reach
    return jsonify(payloads.batch(batch)), 202, {"Location": url_for("api.get_batch", batch_id=batch.id)}


def _batch_or_404(batch_id: int) -> CardBatch:
    found = db.session.get(CardBatch, batch_id) if batch_id <= MAX_ID else None
    if found is None:
        raise Refused("not_found", _("No card batch has this id."), status=404)
    return found


@bp.get("/card-batches/<int:batch_id>")
def get_batch(batch_id: int):
    return jsonify(payloads.batch(_batch_or_404(batch_id)))


@bp.get("/card-batches/<int:batch_id>/cards.pdf")
def batch_pdf(batch_id: int):
    batch = _batch_or_404(batch_id)
    if card_service.effective_status(batch) != "done":
        raise Refused("not_ready", _("Batch %(batch)s is not printed yet: poll it until its status is done.",
                                      batch=batch.label), status=409)
    path = card_service.batch_pdf_path(batch)
    if path is None:
        return api_error(404, "not_found", _("The batch's PDF is no longer stored."))
    return send_private_file(path, "application/pdf", f"cards-{batch.label}.pdf")
