"""The OpenAPI 3.1 document of /api/v1, as Python data: served as JSON and rendered as the reference page.

Every error an operation can answer is listed under its status with the exact codes it may carry,
so that a response with a code the document does not promise fails tests/test_api_schema.py.
"""

from __future__ import annotations

from functools import cache

from flask_babel import force_locale

from clinic.api.inputs import IDEMPOTENCY_KEY, MAX_ID
from clinic.api.scopes import ENDPOINT_SCOPES, VOUCHER_DETAILS_SCOPE
from clinic.services.api_tokens import SCOPES
from clinic.services.cards import DESIGNS, MAX_BATCH_SIZE
from clinic.services.money import MAX_AMOUNT_MINOR

# Every error code: its HTTP status and what it means. Codes from the services are their refusal reasons.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "No bearer token, an unknown one, or a revoked one."),
    "insufficient_scope": (403, "The token does not hold every scope this operation needs (the missing ones are named "
                                "in the message, all it needs in the WWW-Authenticate header). Nothing was done; a "
                                "manager can make a token with them."),
    "rate_limited": (429, "Too many requests with this token, or too many unknown or mistyped codes; "
                          "wait for Retry-After seconds."),
    "malformed_json": (400, "The body is not valid JSON (or could not be read)."),
    "bad_host": (400, "The Host header is not a valid host name."),
    "payload_too_large": (413, "The body is too large."),
    "unsupported_media_type": (415, "The body is not sent as application/json."),
    "validation_error": (422, "A field or query parameter is missing, of the wrong type, out of range or unknown; "
                              "`field` names it (`new_patient.phone`, `Idempotency-Key`, …)."),
    "not_found": (404, "No patient or batch has this id, or no such path."),
    "method_not_allowed": (405, "The path exists but does not take this HTTP method (the Allow header lists those it takes)."),
    "key_reused": (409, "This Idempotency-Key was already used for a different request."),
    "empty_code": (422, "No code was given."),
    "not_a_code": (422, "Codes use only letters and digits."),
    "wrong_length": (422, "Personal codes have 8 symbols, card and voucher codes 12."),
    "mistyped_code": (422, "The check symbol does not match: a symbol was mistyped (no database lookup was made)."),
    "unknown_code": (404, "No patient, card or voucher holds this code."),
    "not_a_referral_code": (422, "This is a voucher code: spend it instead."),
    "not_a_voucher": (422, "This is a personal referral code, not a voucher code."),
    "card_not_activated": (409, "The scratch card was never given to a patient: it cannot be redeemed."),
    "already_redeemed": (409, "The scratch card was already redeemed."),
    "card_void": (409, "The scratch card is void (lost or stolen)."),
    "campaign_ended": (409, "No running campaign covers this code: no rewards can be issued."),
    "self_referral": (422, "The friend is the code's owner (same phone or record number)."),
    "contact_needed": (422, "The new patient has neither a phone number nor a record number: one is needed to tell "
                            "them from the code's owner and from existing patients."),
    "existing_patient": (409, "A patient with this phone or record number is already registered."),
    "quota_full": (409, "This month's places for referred friends are all taken."),
    "code_withdrawn": (409, "The personal code belonged to a patient whose personal data was erased: it refers nobody "
                            "now. Register the friend as a new patient without it."),
    "changed_meanwhile": (412, "The patient's details changed since the ETag sent in If-Match: get the patient again "
                               "and decide on the new values."),
    "precondition_required": (428, "A correction needs If-Match: the ETag of GET /api/v1/patients/{id}, or * to "
                                   "correct whatever the details are now."),
    "patient_erased": (409, "The patient's personal data was erased: nothing about them can be changed."),
    "already_spent": (409, "The voucher was already spent."),
    "voided": (409, "The voucher was voided."),
    "expired": (409, "The voucher expired."),
    "not_referred": (409, "This patient was not referred by anyone: there is no reward to pay."),
    "reversed": (409, "This patient's referral was reversed: milestones no longer pay rewards."),
    "bad_serial": (422, "A serial looks like B007-0042."),
    "unknown_card": (404, "No card has this serial."),
    "already_activated": (409, "The card is already activated."),
    "no_campaign": (422, "No running campaign covers scratch cards: the cards would print its offer."),
    "not_ready": (409, "The batch is not printed yet: poll it until its status is done."),
    "database_unavailable": (503, "The database is busy (a lock held too long, a statement over its time limit) or "
                                  "out of reach. Retry after Retry-After seconds, with the same Idempotency-Key "
                                  "where the operation takes one; the message says when the request may have been "
                                  "saved."),
    "database_not_writable": (503, "The server cannot save: its disk is full, or its database is read-only or on a "
                                   "failing disk. An administrator must fix the server first."),
    "not_queued": (503, "The job queue is out of reach: the batch was created and has failed; ask for a new one "
                        "later."),
}

BODY_ERRORS = ("malformed_json", "payload_too_large", "unsupported_media_type", "validation_error")
CODE_ERRORS = ("empty_code", "not_a_code", "wrong_length", "mistyped_code", "unknown_code")
CARD_ERRORS = ("card_not_activated", "already_redeemed", "card_void")
VOUCHER_ERRORS = ("already_spent", "voided", "expired")
DATABASE_ERRORS = ("database_unavailable", "database_not_writable")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict, required: list[str] | None = None, description: str = "") -> dict:
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required,
              "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


def _nullable(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


STRING = {"type": "string"}
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
TIME = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601 with Z"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time", "description": "UTC, ISO 8601 with Z"}
URL = {"type": "string", "format": "uri"}

VALUE = {
    "kind": {"type": "string", "enum": ["money", "service"]},
    "amount": {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT_MINOR,
               "description": "Minor units (fen, cents); 0 for a service."},
    "currency": {"type": "string", "description": "ISO 4217, e.g. CNY."},
    "label": {"type": "string", "description": "The service's name (\"1 bed-day waived\"); empty for money."},
}
PATIENT = {
    "id": ID,
    "name": STRING,
    "display_name": STRING,
    "phone": _nullable(STRING),
    "external_id": _nullable(STRING),
    "personal_code": _nullable({"type": "string", "description": "8 symbols, Crockford base32 with a check symbol; "
                                                                 "null once the patient is erased (withdrawn)."}),
    "personal_code_display": _nullable({"type": "string", "description": "Grouped for people: XXXX-XXXX."}),
    "invite_url": _nullable({**URL, "description": "The friend's invite page, /r/<code>; what posters' QR codes "
                                                   "encode."}),
    "name_on_posters": {"type": "boolean"},
    "referred_by_id": _nullable(ID),
    "enrolled_at": TIME,
    "progress_link_issued_at": TIME,
    "erased_at": {**NULLABLE_TIME, "description": "When the patient's personal data was erased (name, phone and "
                                                  "record number are then empty); null for everyone else."},
}

VOUCHER_WITHOUT_CODE = {
    "id": ID,
    "value": _ref("Value"),
    "status": {"type": "string", "enum": ["active", "spent", "void", "expired"]},
    "beneficiary": {"type": "string", "enum": ["referrer", "friend"]},
    "patient_id": ID,
    "referral_id": _nullable(ID),
    "issued_at": TIME,
    "valid_until": {"type": "string", "format": "date", "description": "The last day the voucher can be "
                    "spent, in the clinic's time zone: the day its pages print. ISO 8601 (YYYY-MM-DD)."},
    "expires_at": {**TIME, "description": "UTC, ISO 8601 with Z: when it stops being spendable, the clinic's "
                   "midnight at the end of valid_until."},
}
ISSUED_VOUCHERS = {
    "vouchers": {"type": "array", "items": _ref("Voucher"), "description": "The friend's vouchers issued now, in full "
                 "(codes included), to hand to the friend."},
    "referrer_vouchers": {"type": "array", "items": _ref("VoucherWithoutCode"), "description": "The referrer's "
                          "vouchers issued now, without their codes."},
}

SCHEMAS = {
    "Error": _obj({"error": _obj({
        "code": {"type": "string", "description": "Stable code: see the error codes table."},
        "message": {"type": "string", "description": "For people; may change."},
        "field": {"type": ["string", "null"], "description": "The request field the error is about, if any."},
    })}, description="Every error has this shape."),
    "Value": _obj(VALUE, description="What a voucher or reward is worth."),
    "RewardTerms": _obj({**VALUE, "stage": {
        "type": "string", "enum": ["redemption", "visit", "payment"],
        "description": "When it is paid: at redemption, the friend's first visit or first payment."}}),
    "NewPatient": _obj({
        "name": {"type": "string", "minLength": 1, "description": "Full name: at most 120 characters once runs of "
                 "white space are folded into one space and the ends trimmed (as every text below)."},
        "display_name": {"type": ["string", "null"],
                         "description": "The name the patient agrees to show (posters, invite page), at most 60 "
                                        "characters."},
        "phone": {"type": ["string", "null"], "description": "6 to 15 digits; spaces, dashes and a leading + allowed."},
        "external_id": {"type": ["string", "null"], "description": "The clinic's record number, at most 64 "
                                                                  "characters."},
        "name_on_posters": {"type": "boolean", "description": "The patient agreed to have the display name printed."},
    }, required=["name"]),
    "PatientCorrection": {**_obj({
        "name": {"type": "string", "minLength": 1, "description": "Full name, as for a new patient."},
        "display_name": {"type": ["string", "null"], "description": "A new one ends the patient's agreement to have "
                                                                    "their name printed (name_on_posters)."},
        "phone": {"type": ["string", "null"], "description": "null removes it, unless the patient agreed to "
                                                             "messages, which go to it."},
        "external_id": {"type": ["string", "null"], "description": "The clinic's record number."},
    }, required=[], description="Only the fields sent change."), "minProperties": 1},
    "Patient": _obj(PATIENT),
    "PatientWithProgressLink": _obj({**PATIENT, "progress_url": {
        **URL, "description": "The patient's private progress page, /p/<token>. Shown only in this answer: only a "
        "hash is stored, so it cannot be read back later."}}),
    "PatientList": _obj({"patients": {"type": "array", "items": _ref("Patient"), "maxItems": 1}}),
    "Voucher": _obj({
        **VOUCHER_WITHOUT_CODE,
        "code": {"type": "string", "description": "12 symbols; a bearer code: whoever holds it can spend it."},
        "code_display": STRING,
        "url": {**URL, "description": "The voucher's page with its QR code, /v/<code>."},
        "spent_at": NULLABLE_TIME,
        "voided_at": NULLABLE_TIME,
        "void_reason": _nullable(STRING),
    }),
    "VoucherWithoutCode": _obj(VOUCHER_WITHOUT_CODE, description="Someone else's voucher (the referrer's, in the "
                               "answer to a redemption or a milestone): its value and state, never its code, which is "
                               "money; the referrer gets it from their progress page and messages."),
    "Referral": _obj({
        "id": ID,
        "referrer_id": ID,
        "friend_id": ID,
        "campaign_id": ID,
        "code_used": STRING,
        "card_serial": _nullable(STRING),
        "status": {"type": "string", "enum": ["active", "reversed"]},
        "created_at": TIME,
        "visited_at": NULLABLE_TIME,
        "paid_at": NULLABLE_TIME,
        "paid_amount": {"type": ["integer", "null"], "description": "Minor units, when reported."},
        "reversed_at": NULLABLE_TIME,
    }),
    "Reward": _obj({
        "id": ID,
        "beneficiary": {"type": "string", "enum": ["referrer", "friend"]},
        "patient_id": ID,
        "stage": {"type": "string", "enum": ["redemption", "visit", "payment"]},
        "status": {"type": "string", "enum": ["pending", "issued", "review", "rejected", "cancelled"],
                   "description": "pending: its stage is not reached yet; issued: a voucher exists; review: over "
                                  "the referrer's yearly cap, waiting for a manager."},
        "value": _ref("Value"),
        "voucher_id": {**_nullable(ID), "description": "The voucher paying it, once issued."},
        "voucher_code": {**_nullable(STRING), "description": "The friend's voucher's code once issued; always null for "
                         "the referrer's reward (their code is theirs: see VoucherWithoutCode)."},
    }),
    "Redemption": _obj({
        "referral": _ref("Referral"),
        "friend": _ref("Patient"),
        **ISSUED_VOUCHERS,
        "rewards": {"type": "array", "items": _ref("Reward"), "description": "Both sides' rewards, paid or not yet."},
    }),
    "Milestone": _obj({
        "recorded": {"type": "boolean", "description": "false: the milestone was already recorded; nothing changed."},
        "referral": _ref("Referral"),
        "rewards": {"type": "array", "items": _ref("Reward"), "description": "Rewards this milestone paid or sent "
                                                                             "for review."},
        **ISSUED_VOUCHERS,
    }, description="As for a redemption, the friend's vouchers come in full and the referrer's without their codes."),
    "ReferralOffer": _obj({
        "code": STRING,
        "code_display": STRING,
        "kind": {"type": "string", "enum": ["personal", "card"]},
        "referrer": _obj({"id": ID, "name": STRING}),
        "card_serial": _nullable(STRING),
        "campaign_id": ID,
        "referrer_gets": _ref("RewardTerms"),
        "friend_gets": _ref("RewardTerms"),
    }),
    "CodeVerdict": _obj({
        "code": STRING,
        "code_display": STRING,
        "kind": {"type": "string", "enum": ["personal", "card", "voucher"]},
        "referral": {"oneOf": [_ref("ReferralOffer"), {"type": "null"}],
                     "description": "For a personal code or an activated card: who referred and what each side gets."},
        "voucher": {"oneOf": [_ref("Voucher"), {"type": "null"}],
                    "description": "For a voucher code, in whatever state it is (check its status), when the "
                                   f"token also holds `{VOUCHER_DETAILS_SCOPE}`; else null (`kind` still says "
                                   "voucher)."},
    }),
    "Card": _obj({
        "serial": STRING,
        "status": {"type": "string", "enum": ["printed", "activated", "redeemed", "void"]},
        "batch_id": ID,
        "patient_id": _nullable(ID),
        "activated_at": NULLABLE_TIME,
        "redeemed_at": NULLABLE_TIME,
    }, description="A scratch card by its serial; its code is never sent."),
    "CardBatch": _obj({
        "id": ID,
        "label": {"type": "string", "description": "B001, B002, …: the prefix of its cards' serials."},
        "size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
        "design": {"type": "string", "enum": list(DESIGNS)},
        "bleed": {"type": "boolean"},
        "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
        "progress": {"type": "integer", "minimum": 0, "description": "Cards rendered so far."},
        "created_at": TIME,
        "finished_at": NULLABLE_TIME,
        "pdf_url": {"type": ["string", "null"], "description": "Where to fetch the PDF once the status is done."},
    }),
}


def _codes_description(codes: list[str]) -> str:
    return " · ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in codes)


def _error_response(codes: list[str]) -> dict:
    return {
        "description": _codes_description(codes),
        "content": {"application/json": {"schema": {"allOf": [_ref("Error"), {"properties": {"error": {
            "properties": {"code": {"enum": codes}}}}}]}}},
    }


HEADER_LOCATION = {"description": "Where to find what was created.", "schema": STRING, "required": True}
HEADER_ETAG = {"description": "A digest of the correctable details: send it in If-Match to correct them.",
               "schema": STRING, "required": True}
HEADER_REPLAYED = {"description": "Present (true) when this answer replays an earlier request with the same "
                                  "Idempotency-Key; the body is the same.", "schema": {"type": "string",
                                                                                        "enum": ["true"]}}


def _json(status_description: str, schema: dict, headers: dict | None = None) -> dict:
    response = {"description": status_description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _operation(operation_id: str, endpoint: str, tag: str, summary: str, description: str, success: dict, *,
               errors: tuple = (), body: dict | None = None, body_required: bool = True,
               parameters: list | None = None, idempotent: bool = False) -> dict:
    """One operation; its error responses are grouped by status from the codes it may answer.

    ``endpoint`` is its Flask endpoint, whose scopes (clinic/api/scopes.py) the operation's security names.
    """
    # 422 for an unknown query parameter; bad_host for a Host header that is not a host name; the database's
    # refusals for any of them.
    codes = ["unauthorized", "insufficient_scope", "rate_limited", "validation_error", "bad_host", *errors,
             *DATABASE_ERRORS]
    if body is not None:
        codes += list(BODY_ERRORS)
    parameters = list(parameters or [])
    if idempotent:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False, "schema": {
            "type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
            "description": "Send the same key again (a retry after a timeout) and the first answer comes back, "
                           "with nothing done twice; the same key with a different request is refused "
                           "(`key_reused`). Keys are kept per token. For a redemption the request is the code "
                           "and the new patient's name, phone and external id."})
        codes += ["key_reused", "validation_error"]
    if any(p["in"] == "path" for p in parameters):
        codes.append("not_found")
    responses = dict(success)
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    for status, status_codes in sorted(by_status.items()):
        responses[str(status)] = _error_response(status_codes)
    responses["401"]["headers"] = {"WWW-Authenticate": {"schema": STRING, "required": True,
                                                        "description": "Bearer realm=\"clinic-api\""}}
    responses["403"]["headers"] = {"WWW-Authenticate": {
        "schema": STRING, "required": True,
        "description": "Bearer realm=\"clinic-api\", error=\"insufficient_scope\", scope=\"<the scopes needed, "
                       "space-separated>\""}}
    responses["429"]["headers"] = {"Retry-After": {"schema": STRING, "required": True,
                                                   "description": "Seconds to wait."}}
    responses["503"]["headers"] = {"Retry-After": {"schema": STRING, "required": False,
                                                   "description": "Seconds to wait (with the database's codes)."}}
    operation = {"operationId": operation_id, "tags": [tag], "summary": summary,
                 "description": f"{description} {scopes_needed(endpoint)}", "parameters": parameters,
                 "responses": responses, "security": [{"bearer": list(ENDPOINT_SCOPES[endpoint])}]}
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return operation


def scopes_needed(endpoint: str) -> str:
    """The end of an operation's description: the scope it needs, or all of them, said to be all needed."""
    needed = ENDPOINT_SCOPES[endpoint]
    if len(needed) == 1:
        return f"Scope: `{needed[0]}`."
    return f"Scopes: {', '.join(f'`{scope}`' for scope in needed)} (all of them)."


def _path_id(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": ID, "description": what}


PATIENT_ID = _path_id("patient_id", "The patient's id.")
BATCH_ID = _path_id("batch_id", "The batch's id.")
VOUCHER_CODE = {"name": "code", "in": "path", "required": True, "description": "The voucher's code, with or without "
                "dashes, any case.", "schema": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,40}$"}}
SERIAL = {"name": "serial", "in": "path", "required": True, "description": "The card's serial, e.g. B007-0042.",
          "schema": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,20}$"}}


def _paths() -> dict:
    milestone_errors = ("not_referred", "reversed")
    return {
        "/api/v1/patients": {
            "post": _operation(
                "createPatient", "api.create_patient", "patients", "Enrol a patient",
                "Enrols a patient with a personal code. The answer holds the invite URL and, this once, the "
                "private progress URL.",
                {"201": _json("Enrolled.", _ref("PatientWithProgressLink"), {"Location": HEADER_LOCATION})},
                errors=("existing_patient",), body=_ref("NewPatient")),
            "get": _operation(
                "findPatients", "api.find_patients", "patients", "Find a patient by record number or phone",
                "Exactly one of `external_id` or `phone` (normalised as at the desk). A list of at most one "
                "patient; empty when nobody matches.",
                {"200": _json("The patients found.", _ref("PatientList"))},
                parameters=[{"name": "external_id", "in": "query", "schema": STRING,
                             "description": "The clinic's record number."},
                            {"name": "phone", "in": "query", "schema": STRING, "description": "A phone number."}]),
        },
        "/api/v1/patients/{patient_id}": {
            "get": _operation(
                "getPatient", "api.get_patient", "patients", "Get a patient",
                "The patient with the personal code and invite URL. The progress URL is not included: only a "
                "hash of it is stored. Issue a new one with POST …/progress-link.",
                {"200": _json("The patient.", _ref("Patient"), {"ETag": HEADER_ETAG})}, parameters=[PATIENT_ID]),
            "patch": _operation(
                "correctPatient", "api.correct_patient", "patients", "Correct a patient's details",
                "Corrects the name, display name, phone or record number sent (a typo, or the patient's right to "
                "have their data corrected); the fields not sent stay. Send the ETag of GET in If-Match: if "
                "someone changed the details since, nothing is written (412). The audit log records which fields "
                "changed, not their values; messages waiting for the old phone number are cancelled.",
                {"200": _json("Corrected (or already so).", _ref("Patient"), {"ETag": HEADER_ETAG})},
                errors=("existing_patient", "patient_erased", "changed_meanwhile", "precondition_required"),
                body=_ref("PatientCorrection"),
                parameters=[PATIENT_ID, {"name": "If-Match", "in": "header", "required": True, "schema": STRING,
                                         "description": "The ETag of GET /api/v1/patients/{id}, or *."}]),
        },
        "/api/v1/patients/{patient_id}/progress-link": {
            "post": _operation(
                "rotateProgressLink", "api.rotate_progress_link", "patients", "Issue a new progress link",
                "A new private progress URL for the patient; the old one stops working at once.",
                {"200": _json("The patient with the new progress URL.", _ref("PatientWithProgressLink"))},
                errors=("patient_erased",), parameters=[PATIENT_ID]),
        },
        "/api/v1/patients/{patient_id}/visit": {
            "post": _operation(
                "recordVisit", "api.record_visit", "milestones", "Report a referred friend's first visit",
                "Records the first visit of a referred friend and pays the rewards due at a visit. Reporting it "
                "again changes nothing (`recorded`: false). No body is needed; a body with any field is refused.",
                {"200": _json("Recorded.", _ref("Milestone"))}, errors=milestone_errors,
                body=_obj({}, required=[]), body_required=False, parameters=[PATIENT_ID], idempotent=True),
        },
        "/api/v1/patients/{patient_id}/payment": {
            "post": _operation(
                "recordPayment", "api.record_payment", "milestones", "Report a referred friend's first payment",
                "Records the first payment (it implies the first visit) and pays the rewards due at a visit "
                "and at a payment. The amount, in minor units, is optional.",
                {"200": _json("Recorded.", _ref("Milestone"))}, errors=milestone_errors,
                body=_obj({"amount": {"type": ["integer", "null"], "minimum": 0,
                                      "maximum": MAX_AMOUNT_MINOR, "description": "Minor units."}}, required=[]),
                body_required=False, parameters=[PATIENT_ID], idempotent=True),
        },
        "/api/v1/codes/validate": {
            "post": _operation(
                "validateCode", "api.validate_code", "codes", "Check a code without using it",
                "The desk's verdict on a typed or scanned code (a URL from a QR code works too): a referral code "
                "with who referred and what each side gets, or a voucher: its details in their current state only "
                f"for a token that also holds `{VOUCHER_DETAILS_SCOPE}` (else `voucher` is null).",
                {"200": _json("The code is a valid referral code or a voucher.", _ref("CodeVerdict"))},
                errors=(*CODE_ERRORS, "code_withdrawn", *CARD_ERRORS, "campaign_ended"),
                body=_obj({"code": {"type": "string", "description": "As typed or scanned."}})),
        },
        "/api/v1/redemptions": {
            "post": _operation(
                "redeem", "api.redeem", "redemptions", "Redeem a referral code for a new patient",
                "Registers the friend, links them to the referrer and issues the vouchers due at redemption, all "
                "or nothing. The friend's vouchers come in full; the referrer's without their codes (bearer money "
                "of someone else, which the referrer gets from their progress page). The friend's progress URL is "
                "not in the answer (so that a replay answers the same); issue one with "
                "POST /api/v1/patients/{id}/progress-link.",
                {"201": _json("Redeemed (or replayed: see Idempotent-Replayed).", _ref("Redemption"),
                              {"Location": HEADER_LOCATION, "Idempotent-Replayed": HEADER_REPLAYED})},
                errors=(*CODE_ERRORS, "code_withdrawn", "not_a_referral_code", *CARD_ERRORS, "campaign_ended",
                        "self_referral",
                        "contact_needed", "existing_patient", "quota_full"),
                body=_obj({"code": {"type": "string", "description": "Personal code or scratch-card code."},
                           "new_patient": _ref("NewPatient")}), idempotent=True),
        },
        "/api/v1/vouchers/{code}": {
            "get": _operation(
                "getVoucher", "api.get_voucher", "vouchers", "Get a voucher",
                "The voucher with its value and state.",
                {"200": _json("The voucher.", _ref("Voucher"))},
                errors=(*CODE_ERRORS, "not_a_voucher"), parameters=[VOUCHER_CODE]),
        },
        "/api/v1/vouchers/{code}/spend": {
            "post": _operation(
                "spendVoucher", "api.spend_voucher", "vouchers", "Spend a voucher",
                "Marks an active, unexpired voucher spent, exactly once however many requests race. A voucher is "
                "spent whole: there is no amount to send, and a body with any field is refused.",
                {"200": _json("Spent (or replayed).", _ref("Voucher"), {"Idempotent-Replayed": HEADER_REPLAYED})},
                errors=(*CODE_ERRORS, "not_a_voucher", *VOUCHER_ERRORS), parameters=[VOUCHER_CODE],
                body=_obj({}, required=[]), body_required=False, idempotent=True),
        },
        "/api/v1/vouchers/{code}/void": {
            "post": _operation(
                "voidVoucher", "api.void_voucher", "vouchers", "Void a voucher",
                "Voids an active voucher with a reason (3 to 200 characters); spent vouchers stay spent.",
                {"200": _json("Voided.", _ref("Voucher"))},
                errors=(*CODE_ERRORS, "not_a_voucher", *VOUCHER_ERRORS), parameters=[VOUCHER_CODE],
                body=_obj({"reason": {"type": "string", "minLength": 3,
                                      "description": "3 to 200 characters once white space is folded and trimmed."}}),
                idempotent=True),
        },
        "/api/v1/cards/{serial}/activate": {
            "post": _operation(
                "activateCard", "api.activate_card", "cards", "Activate a scratch card for a patient",
                "At discharge: the card's hidden code becomes this patient's single-use referral code.",
                {"200": _json("Activated.", _ref("Card"))},
                errors=("bad_serial", "unknown_card", "already_activated", "already_redeemed", "card_void",
                        "patient_erased"),
                body=_obj({"patient_id": ID}), parameters=[SERIAL]),
        },
        "/api/v1/card-batches": {
            "post": _operation(
                "createCardBatch", "api.create_batch", "cards", "Start printing a batch of scratch cards",
                "Queues a batch of 1 to 10,000 cards; it is generated in the background. Poll the Location "
                "until its status is done, then fetch the PDF.",
                {"202": _json("Queued.", _ref("CardBatch"), {"Location": HEADER_LOCATION})},
                errors=("no_campaign", "not_queued"),
                body=_obj({"size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                           "design": {"type": ["string", "null"], "enum": [*DESIGNS, None], "default": "classic"},
                           "bleed": {"type": "boolean", "default": False}}, required=["size"])),
        },
        "/api/v1/card-batches/{batch_id}": {
            "get": _operation(
                "getCardBatch", "api.get_batch", "cards", "Poll a batch",
                "Its status and how many cards are rendered so far.",
                {"200": _json("The batch.", _ref("CardBatch"))}, parameters=[BATCH_ID]),
        },
        "/api/v1/card-batches/{batch_id}/cards.pdf": {
            "get": _operation(
                "getCardBatchPdf", "api.batch_pdf", "cards", "Download a batch's PDF",
                "A4 sheets of 2 × 5 cards with crop marks, once the batch is done.",
                {"200": {"description": "The PDF.", "content": {"application/pdf": {
                    "schema": {"type": "string", "format": "binary"}}}}},
                errors=("not_ready",), parameters=[BATCH_ID]),
        },
    }


DESCRIPTION = """JSON API for the clinic's own systems (HIS/EMR): register patients, validate and redeem referral
codes, report visits and payments, spend and void vouchers, activate scratch cards and print batches.
It calls the same rules as the front desk.

**Authentication**: `Authorization: Bearer <token>`. A manager creates tokens on *Settings → API tokens*
(or `flask --app wsgi create-api-token NAME --scope SCOPE …`); a token is shown once, stored only as a hash and
can be revoked.

{scopes}

**Errors** all have one shape, `{"error": {"code": "...", "message": "...", "field": "..."}}`; `code` is stable
(see the table), `message` is for people, `field` names the request field at fault or is null.

**Idempotency**: operations that move money take an `Idempotency-Key` header. A retry with the same key
does nothing twice and answers with the first answer's status and objects (as they are now: the same body,
unless something changed them since, a voucher spent say); the same key with a different request is refused
with `key_reused` (409). Keys are kept per token.

**Money** is an integer in minor units with its currency; **times** are UTC, ISO 8601 with `Z`."""


def scopes_description(paths: dict) -> str:
    """The scopes with what each allows, as the token page words them (in English, as the whole document), and the
    operations of ``paths`` that need several."""
    with force_locale("en"):
        listed = " · ".join(f"`{name}`: {description}" for name, description in SCOPES.items())
    several = " · ".join(f"`{method.upper()} {path}` needs {' + '.join(f'`{scope}`' for scope in needed)}"
                         for path, methods in paths.items() for method, operation in methods.items()
                         for needed in [operation["security"][0]["bearer"]] if len(needed) > 1)
    return ("**Scopes**: a token may do only what the scopes chosen when it was made allow. Each operation needs "
            "the scopes named at the end of its description and in its `security`, all of them; without any one "
            "the answer is 403 `insufficient_scope`, before anything in the request is looked at. Tokens made "
            f"before scopes existed hold them all. {listed}.\n\n"
            "**Operations that need several scopes**, because their answer shows what another scope guards: "
            f"{several}. A token that holds only `patients:write` can no longer correct a patient or issue a "
            "progress link (it could read any patient's record and, through the progress page, their vouchers). "
            "Validating a voucher code shows the voucher's details only to a token that also holds "
            f"`{VOUCHER_DETAILS_SCOPE}`.")


@cache
def openapi_document() -> dict:
    paths = _paths()
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clinic referral portal API", "version": "1.0.0",
                 "description": DESCRIPTION.replace("{scopes}", scopes_description(paths))},
        "tags": [{"name": name, "description": text} for name, text in (
            ("patients", "Enrol and find patients; their personal code, invite and progress links."),
            ("codes", "Check a code as the desk would, without using it."),
            ("redemptions", "A friend arrives with a code: register them and pay both sides."),
            ("milestones", "A referred friend's first visit and first payment."),
            ("vouchers", "Look up, spend and void vouchers."),
            ("cards", "Scratch cards: activation at discharge, printing batches."),
        )],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API token from Settings → API tokens."}},
        },
        "security": [{"bearer": []}],
        "x-error-codes": {code: {"status": status, "description": text}
                          for code, (status, text) in ERROR_CODES.items()},
    }


def plain(markdown: str) -> str:
    """The document's descriptions without their Markdown marks, for the reference page."""
    return markdown.replace("**", "").replace("`", "").replace("*", "").replace("\n", " ")


def type_name(schema: dict) -> str:
    """A schema in a few words for the reference page: "string or null", "array of Voucher", "Patient"."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "oneOf" in schema:
        return " or ".join(type_name(option) for option in schema["oneOf"])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    words = " or ".join("array of " + type_name(schema["items"]) if k == "array" else k for k in kinds)
    if "enum" in schema:
        words += ": " + " | ".join(str(value) for value in schema["enum"] if value is not None)
    return words


def field_rows(schema: dict) -> list[dict]:
    """An object schema's fields, one row each, for the reference page."""
    required = set(schema.get("required", []))
    rows = []
    for name, field in schema.get("properties", {}).items():
        limits = [f"{word} {field[key]}" for key, word in (("minimum", "min"), ("maximum", "max"),
                                                           ("minLength", "min length"), ("maxLength", "max length"))
                  if key in field]
        rows.append({"name": name, "type": type_name(field), "required": name in required,
                     "description": plain(" ".join([field.get("description", ""), ", ".join(limits)]).strip())})
    return rows


def reference(document: dict) -> dict:
    """The document arranged for templates/api/docs.html: operations, schemas and error codes."""
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            responses = []
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                media, schema = next(iter(content.items()), (None, {}))
                codes = (schema.get("schema", {}).get("allOf", [{}, {}])[1].get("properties", {}).get("error", {})
                         .get("properties", {}).get("code", {}).get("enum", []))
                responses.append({"status": status, "codes": codes, "media": media,
                                  "schema": type_name(schema["schema"]) if schema and not codes else None,
                                  "headers": list(response.get("headers", {})),
                                  "description": "" if codes else plain(response["description"])})
            operations.append({
                "method": method.upper(), "path": path, "id": operation["operationId"], "tag": operation["tags"][0],
                "summary": operation["summary"], "description": plain(operation["description"]),
                "parameters": [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                                "type": type_name(p["schema"]), "description": plain(p.get("description", ""))}
                               for p in operation["parameters"]],
                "body": None if body is None else {"type": type_name(body),
                                                   "required": operation["requestBody"]["required"],
                                                   "fields": [] if "$ref" in body else field_rows(body)},
                "responses": responses,
            })
    schemas = [{"name": name, "description": plain(schema.get("description", "")), "fields": field_rows(schema)}
               for name, schema in document["components"]["schemas"].items()]
    errors = [{"code": code, "status": details["status"], "description": plain(details["description"])}
              for code, details in document["x-error-codes"].items()]
    intro = [plain(paragraph) for paragraph in document["info"]["description"].split("\n\n")]
    return {"intro": intro, "operations": operations, "schemas": schemas, "errors": errors}
