"""One handler for every error status: a page for people, JSON for the API; 500s roll back."""

from __future__ import annotations

from flask import Flask, Response, render_template, request
from flask.globals import request_ctx
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import (BadHost, BadRequest, Conflict, Forbidden, HTTPException, InternalServerError,
                                 TooManyRequests, UnprocessableEntity)

from clinic.extensions import db
from clinic.services.database_trouble import DISK_FULL, NOT_WRITABLE, UNAVAILABLE, database_trouble
from clinic.services.transaction import forget_saves, may_have_saved
from clinic.web.helpers import is_htmx


# Headers of an HTTP error that mean something to the client (405 lists the methods a path takes).
KEPT_ERROR_HEADERS = ("Allow", "Retry-After")
# Werkzeug's own English explanations: a page says the same in the reader's language with its title and text.
WERKZEUG_DESCRIPTIONS = frozenset(error.description for error in (BadRequest, Forbidden, Conflict, UnprocessableEntity,
                                                                   InternalServerError))


# Where an htmx request's server error is shown (base.html; the desk's is above its panel): beside the form that
# was sent, never in its place, so that what was typed and the form's idempotency key stay for pressing again.
ERROR_SLOT = "#request-error"
# Seconds to wait before trying again, by database trouble (clinic/services/database_trouble.py).
RETRY_AFTER = {UNAVAILABLE: "5", DISK_FULL: "60", NOT_WRITABLE: "60"}
# The API's error code for each (clinic/api/spec.py documents them).
TROUBLE_CODES = {UNAVAILABLE: "database_unavailable", DISK_FULL: "database_not_writable",
                 NOT_WRITABLE: "database_not_writable"}


def render_error(status: int, message: str | None = None, headers: dict | None = None, *, code: str | None = None):
    if request.path.startswith("/api/"):
        from clinic.api.errors import api_error

        return api_error(status, code, message=message, headers=headers)
    if request_ctx.url_adapter is None:  # a Host header that is no host name: no URL, so no page, can be built
        return Response(f"{status} {message or ''}".strip() + "\n", status, headers, mimetype="text/plain")
    if message in WERKZEUG_DESCRIPTIONS:
        message = None
    headers = dict(headers or {})
    if is_htmx():
        template = "errors/_message.html"
        if status >= 500:
            headers.update({"HX-Retarget": ERROR_SLOT, "HX-Reswap": "innerHTML"})
    else:
        template = "errors/error.html"
    return render_template(template, status=status, message=message, maybe_saved=may_have_saved()), status, headers


def trouble_message(trouble: str) -> str:
    """What staff read when the database refused: what happened, whether anything was saved, what to do."""
    if may_have_saved():
        return _("The database failed before the answer was ready: this may have been saved. Check before doing "
                 "it again.")
    return {UNAVAILABLE: _("The database is busy or out of reach: nothing was saved. Press again in a moment."),
            DISK_FULL: _("The server's disk is full: nothing was saved. Tell the manager: nothing can be saved "
                         "until space is freed on the server."),
            NOT_WRITABLE: _("The server cannot write to its database (it is read-only, or a disk failed): nothing "
                            "was saved. Tell the manager.")}[trouble]


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
        if error.code == 429:  # the rate limiter's own words (clinic/web/limits.py), or the usual ones
            said = error.description if error.description != TooManyRequests.description else None
            return render_error(429, said or _("Too many tries in a short time. Please wait a minute, then try again."),
                                headers)
        return render_error(error.code or 500, error.description if error.code in (400, 403, 409, 422) else None,
                            headers)

    @app.before_request
    def _count_saves_from_here():
        forget_saves()

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        db.session.rollback()
        # The route, never the path or query string: /p/<token> and /v/<code> are secrets, ?q= a phone number.
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        trouble = database_trouble(error)
        if trouble is not None:
            app.logger.warning("Database %s on %s %s: %s", trouble, request.method, route, error)
            return render_error(503, trouble_message(trouble), {"Retry-After": RETRY_AFTER[trouble]},
                                code=TROUBLE_CODES[trouble])
        app.logger.exception("Unhandled error on %s %s", request.method, route)
        return render_error(500, InternalServerError.description)
