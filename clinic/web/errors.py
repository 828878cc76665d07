"""One handler for every error status: a page for people, JSON for the API; 500s roll back."""

from __future__ import annotations

from flask import Flask, Response, render_template, request
from flask.globals import request_ctx
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import (BadHost, BadRequest, Conflict, Forbidden, HTTPException, InternalServerError,
                                 UnprocessableEntity)

from clinic.extensions import db
from clinic.web.helpers import is_htmx


# Headers of an HTTP error that mean something to the client (405 lists the methods a path takes).
KEPT_ERROR_HEADERS = ("Allow", "Retry-After")
# Werkzeug's own English explanations: a page says the same in the reader's language with its title and text.
WERKZEUG_DESCRIPTIONS = frozenset(error.description for error in (BadRequest, Forbidden, Conflict, UnprocessableEntity,
                                                                   InternalServerError))


def render_error(status: int, message: str | None = None, headers: dict | None = None, *, code: str | None = None):
    if request.path.startswith("/api/"):
        from clinic.api.errors import api_error

        return api_error(status, code, message=message, headers=headers)
    if request_ctx.url_adapter is None:  # a Host header that is no host name: no URL, so no page, can be built
        return Response(f"{status} {message or ''}".strip() + "\n", status, headers, mimetype="text/plain")
    if message in WERKZEUG_DESCRIPTIONS:
        message = None
    template = "errors/_message.html" if is_htmx() else "errors/error.html"
    return render_template(template, status=status, message=message), status, headers or {}


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(error):
        return render_error(400, _("This form has expired or was not sent by this site. Reload the page and try again."))

    @app.errorhandler(BadHost)
    def _bad_host(error):
        """Only scripts send one (a browser sends the host it was given): a short answer in plain words."""
        return render_error(400, _("The Host header is not a valid host name."), code="bad_host")

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        if error.code == 413:
            return render_error(413, _("That upload is too large."))
        headers = {name: value for name, value in error.get_headers() if name in KEPT_ERROR_HEADERS}
        if error.code == 429:
            return render_error(429, _("Too many tries in a short time. Please wait a minute, then try again."),
                                headers)
        return render_error(error.code or 500, error.description if error.code in (400, 403, 409, 422) else None,
                            headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        db.session.rollback()
        # The route, never the path or query string: /p/<token> and /v/<code> are secrets, ?q= a phone number.
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        app.logger.exception("Unhandled error on %s %s", request.method, route)
        return render_error(500, InternalServerError.description)
