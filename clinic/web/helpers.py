"""Small pieces every view uses: htmx detection, fragments, the acting staff member, roles."""

from __future__ import annotations

from functools import wraps

from flask import Response, abort, render_template, request, send_file
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_login import current_user, login_required
from markupsafe import Markup
from werkzeug.routing import IntegerConverter

from clinic.i18n import LANGUAGES, clinic_language, current_language, valid_language
from clinic.services.transaction import Actor


def is_htmx() -> bool:
    """True for an htmx request that will swap the answer into part of the page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render_fragment_or_page(fragment: str, page: str, status: int = 200, **context):
    """The fragment alone for htmx, else the full page that includes it."""
    return render_template(fragment if is_htmx() else page, **context), status


PRINT_LANGUAGE_ARG = "print"


def print_language() -> str:
    """The language of the slips this page prints: the one the desk picked (``?print=zh_CN``), else the clinic's.

    Anything but one of the portal's languages is refused (400) rather than quietly printed in another.
    """
    raw = request.args.get(PRINT_LANGUAGE_ARG)
    if raw is None:
        return clinic_language()
    language = valid_language(raw[:20])
    if language is None:
        abort(400, description=_("There is no such language to print in."))
    return language


def render_printed(template: str, language: str, **context) -> Markup:
    """A part of a page that is printed and handed to a patient (the desk's receipt, the welcome slip), rendered in
    ``language`` (:func:`print_language`); the rest of the page stays in the staff member's own.

    A receptionist who reads the portal in English at a Chinese-speaking clinic would otherwise hand out English
    slips. In another language than the page's, the part says so in its ``lang`` (screen readers switch voice).
    """
    if language == current_language():
        return Markup(render_template(template, **context))
    with force_locale(language):
        html = render_template(template, **context)
    return Markup('<div lang="{}">').format(language.replace("_", "-")) + Markup(html) + Markup("</div>")


# A language named inside a sentence of the reader's language ("收据以英文打印", not "收据以English打印"); the links to
# print in another language name each in itself instead (LANGUAGES), so that whoever reads it finds their own.
LANGUAGE_NAMES_IN_TEXT = {"en": lazy_gettext("English"), "zh_CN": lazy_gettext("Simplified Chinese")}


def print_language_choice(language: str) -> dict:
    """What a printable page shows about its slip's language: the language's name when it is not the page's, and the
    other languages the desk can print it in instead (for the friend who reads another)."""
    return {"print_language": LANGUAGE_NAMES_IN_TEXT[language] if language != current_language() else None,
            "print_alternatives": {code: name for code, name in LANGUAGES.items() if code != language}}


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
