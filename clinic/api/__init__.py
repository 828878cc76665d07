"""The integration API (/api/v1): JSON for the clinic's own HIS/EMR, with bearer tokens.

Thin views over the same services as the web pages. Authentication is the token alone: the staff
session cookie is never read here, so a page open in a browser cannot be made to call the API,
and CSRF protection (which guards cookie-authenticated forms) does not apply.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, request

from clinic.api.errors import api_error, insufficient_scope, refusal_response
from clinic.api.scopes import ENDPOINT_SCOPES
from clinic.extensions import csrf
from clinic.services import api_tokens
from clinic.services.errors import Refused
from clinic.services.transaction import Actor

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

# Open without a token: the description of the API itself.
PUBLIC_ENDPOINTS = frozenset({"api.openapi", "api.docs"})


def bearer_token() -> str | None:
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@bp.before_request
def _authenticate():
    """Every API request but the spec carries a valid, unrevoked token (else 401) with every scope its operation
    needs (else 403, before its input is looked at). Refusals are not audited: they change nothing."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    token = bearer_token()
    holder = api_tokens.authenticate(token)
    if holder is None:
        challenge = 'Bearer realm="clinic-api"' + (', error="invalid_token"' if token else "")
        return api_error(401, headers={"WWW-Authenticate": challenge})
    g.api_token = holder
    needed = ENDPOINT_SCOPES.get(request.endpoint)
    if not needed:
        current_app.logger.error("API route %s is missing from the scope table: refused", request.endpoint)
        return api_error(403)
    missing = [scope for scope in needed if scope not in holder.scopes]
    if missing:
        return insufficient_scope(needed, missing)
    return None


def api_actor() -> Actor:
    """Who acts: the manager who created the token (none for a CLI token), from the client's address."""
    holder = g.api_token
    return Actor(staff_id=holder.created_by_id, ip=request.remote_addr, api_token=holder.name)


@bp.errorhandler(Refused)
def _refused(refusal: Refused):
    return refusal_response(refusal)


def register(app: Flask) -> None:
    from clinic.api import views  # noqa: F401  (its routes join the blueprint)

    app.register_blueprint(bp)
