"""Reading an API request: the JSON body, its fields by type, the Idempotency-Key header.

Only shapes and types are checked here; what a value must be (a phone number, a name) is decided by
the same service functions the forms use. Anything wrong is a :class:`Refused` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re

from flask import g, request
from flask_babel import gettext as _

from clinic.i18n import current_language
from clinic.services.errors import Refused
from clinic.services.money import MAX_AMOUNT_MINOR, format_money
from clinic.services.patients import PatientDetails

MAX_ID = 2**31 - 1  # the database's integer: no row has a larger id
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
NAME_SHOWN = 64  # an unknown field's name is quoted back cut to this length


def invalid(message: str, field: str | None = None) -> Refused:
    return Refused("validation_error", message, field=field)


def unknown_name(names, what: str, allowed=frozenset(), prefix: str = "") -> None:
    """Refuse the first of ``names`` that is not ``allowed``: a misspelt field must not be ignored."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        name = unknown[0][:NAME_SHOWN]
        if what == "field" and allowed:
            message = _("Unknown field %(name)s: this request takes %(allowed)s.", name=repr(name),
                        allowed=", ".join(sorted(allowed)))
        elif what == "field":
            message = _("Unknown field %(name)s.", name=repr(name))
        elif allowed:
            message = _("Unknown query parameter %(name)s: this request takes %(allowed)s.", name=repr(name),
                        allowed=", ".join(sorted(allowed)))
        else:
            message = _("Unknown query parameter %(name)s.", name=repr(name))
        raise invalid(message, prefix + name)


def json_body(required: bool = True) -> dict:
    """The request's JSON object; an empty body reads as ``{}`` when the body is optional."""
    data = request.get_data(cache=True)
    if not required and not data:
        return {}
    if not request.is_json:
        raise Refused("unsupported_media_type", _("Send the body as JSON, with Content-Type: application/json."),
                      status=415)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # also a body that is not UTF-8, or nested beyond reason
        raise Refused("malformed_json", _("The body is not valid JSON."), status=400) from None
    if not isinstance(body, dict):
        raise invalid(_("The body must be a JSON object."))
    return body


def only_fields(body: dict, allowed: set[str], prefix: str = "") -> None:
    unknown_name(body, "field", allowed, prefix)


def text_field(body: dict, name: str, prefix: str = "", required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(_("%(name)s is required.", name=name), prefix + name)
        return None
    if not isinstance(value, str):
        raise invalid(_("%(name)s must be a string.", name=name), prefix + name)
    return value


def integer_field(body: dict, name: str, *, required: bool = False, minimum: int = 0,
                  maximum: int = MAX_ID) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(_("%(name)s is required.", name=name), name)
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise invalid(_("%(name)s must be a whole number from %(minimum)s to %(maximum)s.", name=name, minimum=minimum,
                        maximum=maximum), name)
    return value


def amount_field(body: dict, name: str, currency: str) -> int | None:
    """An optional amount in minor units, at most what the forms take (money.MAX_AMOUNT_MINOR), shown in both units."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT_MINOR:
        raise invalid(_("%(name)s must be a whole number of minor units from 0 to %(maximum)s (%(limit)s).",
                        name=name, maximum=MAX_AMOUNT_MINOR,
                        limit=format_money(MAX_AMOUNT_MINOR, currency, current_language())), name)
    return value


def boolean_field(body: dict, name: str, prefix: str = "") -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise invalid(_("%(name)s must be true or false.", name=name), prefix + name)
    return value


def idempotency_key() -> str | None:
    """The client's Idempotency-Key as the services' key, kept apart per token.

    Two integrations may well pick the same key ("order-1"): each token's keys are its own, so
    neither can replay, or block, the other's request.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.match(key):
        raise invalid(_("Idempotency-Key has 8 to 128 characters: letters, digits, '.', '_', ':' or '-'."),
                      "Idempotency-Key")
    holder = g.api_token.id
    return f"api{holder}-" + hashlib.sha256(f"{holder}\x1f{key}".encode()).hexdigest()[:48]


def patient_details(body: dict, prefix: str = "") -> PatientDetails:
    """A new patient's details, checked by the same rules as the enrolment form."""
    only_fields(body, {"name", "display_name", "phone", "external_id", "name_on_posters"}, prefix)
    return PatientDetails.from_form(full_name=text_field(body, "name", prefix, required=True),
                                    display_name=text_field(body, "display_name", prefix),
                                    phone=text_field(body, "phone", prefix),
                                    external_id=text_field(body, "external_id", prefix),
                                    name_on_posters=boolean_field(body, "name_on_posters", prefix))
