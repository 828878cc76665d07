"""The API's one error shape: ``{"error": {"code": "...", "message": "...", "field": "..."}}``.

A refusal from the services keeps its own stable reason as the code; everything the HTTP layer
refuses (no token, a malformed body, an unknown route, too many requests) has a code of its own.
clinic/api/spec.py documents every code with its status.
"""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors

# Codes for what the HTTP layer refuses, by status.
HTTP_ERROR_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}

HTTP_ERROR_MESSAGES = {
    400: _l("The request could not be read."),
    401: _l("Send a valid API token: Authorization: Bearer <token>."),
    403: _l("This token may not do that."),
    404: _l("Nothing here: check the path and the id or code in it."),
    405: _l("This path does not take that method."),
    413: _l("The body is too large."),
    415: _l("Send the body as JSON, with Content-Type: application/json."),
    429: _l("Too many requests with this token in a short time. Wait and try again (see Retry-After)."),
    500: _l("Something went wrong on our side. The request changed nothing; try again."),
}


def api_error(status: int, code: str | None = None, message: str | None = None, field: str | None = None,
              headers: dict | None = None):
    """A JSON error response; the code and message default to the ones for the status."""
    body = {"error": {"code": code or HTTP_ERROR_CODES.get(status, f"http_{status}"),
                      "message": str(message or HTTP_ERROR_MESSAGES.get(status, "")),
                      "field": field}}
    return jsonify(body), status, headers or {}


def insufficient_scope(needed: tuple[str, ...], missing: list[str]):
    """403 for a token without a scope the operation needs. The message names what is needed and, for an operation
    that needs several, which of them the token lacks; the challenge names all that are needed, space-separated, as RFC 6750
    says (its ``scope`` is what a token must hold to be let through). Nothing of the request was looked at."""
    if len(needed) == 1:
        message = _("This token may not do this: it needs the scope %(scope)s. A manager can create a token with it "
                    "on Settings → API tokens.", scope=needed[0])
    else:
        message = _("This token may not do this: it needs the scopes %(needed)s, all of them, and lacks %(missing)s. "
                    "A manager can create a token with them on Settings → API tokens.",
                    needed=", ".join(needed), missing=", ".join(missing))
    challenge = f'Bearer realm="clinic-api", error="insufficient_scope", scope="{" ".join(needed)}"'
    return api_error(403, "insufficient_scope", message, headers={"WWW-Authenticate": challenge})


# Where a service's message speaks of a form, the API says it in its own terms.
API_MESSAGES = {
    "key_reused": _l("This Idempotency-Key was already used for a different request: use a new key for a new "
                     "request."),
}

# The services name form fields; the API names some of them differently.
API_FIELD_NAMES = {"full_name": "name", "idempotency_key": "Idempotency-Key"}


def refusal_response(refusal: Refused, field_prefix: str = "", prefixed_fields: frozenset = frozenset()):
    """A service's refusal as an API error: its reason is the code, its status the HTTP status.

    Fields listed in ``prefixed_fields`` belong to a nested object of the request
    (``new_patient.phone``); the first of several field errors is named, all are in the message.
    """
    field, message = refusal.field, API_MESSAGES.get(refusal.reason, refusal.message)
    if isinstance(refusal, FieldErrors) and refusal.errors:
        field = next(iter(refusal.errors))
        message = " ".join(refusal.errors.values())
    if field is not None:
        api_field = API_FIELD_NAMES.get(field, field)
        field = field_prefix + api_field if field in prefixed_fields else api_field
    return api_error(refusal.status, refusal.reason, message, field)
