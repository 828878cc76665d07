"""Managers' page for integration API tokens: create one (shown once), see when each was last used, revoke."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from clinic.services import api_tokens as token_service
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.web.helpers import current_actor, form_value, manager_required

bp = Blueprint("api_tokens", __name__, url_prefix="/admin/api-tokens")


@bp.before_request
@manager_required
def _managers_only():
    """Tokens reach every patient's details: managers only."""


def _page(status: int = 200, **context):
    return render_template("admin/api_tokens.html", tokens=token_service.list_tokens(),
                           scopes=token_service.SCOPES, **context), status


@bp.get("/")
def index():
    return _page()


@bp.post("/")
def create():
    """The raw token is in this answer only (never redirected to, never stored): copy it now.

    No scope is ticked to begin with: the manager says what the system may do, and nothing more is given.
    """
    name = form_value("name", 200)
    chosen = [scope[:40] for scope in request.form.getlist("scopes")]
    try:
        token, raw = token_service.create_token(name, chosen, current_actor())
    except FieldErrors as problems:
        return _page(problems.status, name=name, chosen=chosen, errors=problems.errors)
    return _page(201, new_token=token, raw_token=raw)


@bp.post("/<int:token_id>/revoke")
def revoke(token_id: int):
    try:
        token = token_service.revoke_token(token_id, current_actor())
    except Refused:
        abort(404)
    flash(_("The token “%(name)s” is revoked: requests with it are refused from now on.", name=token.name))
    return redirect(url_for("api_tokens.index"), code=303)
