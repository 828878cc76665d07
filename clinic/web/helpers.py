"""Small pieces every view uses: htmx detection, fragments, the acting staff member, roles."""

from __future__ import annotations

from functools import wraps

from flask import Response, abort, render_template, request, send_file
from flask_login import current_user, login_required
from werkzeug.routing import IntegerConverter

from clinic.services.transaction import Actor


def is_htmx() -> bool:
    """True for an htmx request that will swap the answer into part of the page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render_fragment_or_page(fragment: str, page: str, status: int = 200, **context):
    """The fragment alone for htmx, else the full page that includes it."""
    return render_template(fragment if is_htmx() else page, **context), status


def send_private_file(path, mimetype: str, download_name: str) -> Response:
    """A stored file that must stay nowhere but where it is asked for: ``no-store``, with nothing to revalidate.

    Card PDFs hold live bearer codes. ``send_file`` answers ``no-cache`` with an ETag and a Last-Modified: the
    browser (or a proxy) keeps a copy and revalidates it, and a conditional request answers 304. The app's
    ``no-store`` default is not added where a view set a Cache-Control, so the file says it itself.
    """
    response = send_file(path, mimetype=mimetype, download_name=download_name, conditional=False, etag=False)
    response.headers["Cache-Control"] = "no-store"
    response.headers.pop("Last-Modified", None)
    return response


def current_actor() -> Actor:
    """Who is acting, from where, and for which branch: every service records it."""
    if not current_user.is_authenticated:
        return Actor(ip=request.remote_addr)
    return Actor(staff_id=current_user.id, ip=request.remote_addr, branch_id=current_user.branch_id)


def manager_required(view):
    """Managers only: a logged-in front-desk user gets 403, an anonymous visitor the login page."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_manager:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


# The largest id a database integer column holds (PostgreSQL INTEGER); bigger "ids" exist nowhere.
MAX_ID = 2**31 - 1


def parse_id(text: str | None) -> int | None:
    """A row id from a query string or form: plain ASCII digits within range, else None.

    ``"²".isdigit()`` is true but ``int("²")`` fails, and PostgreSQL refuses to compare an
    INTEGER column with 2**31: both used to be 500s.
    """
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` in every route, capped at :data:`MAX_ID`: a larger id is a 404, not a database error."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def form_value(name: str, max_length: int = 4096) -> str:
    """A submitted text field, cut to a sane length so that huge posts cannot hurt later code."""
    return (request.form.get(name) or "")[:max_length]
