"""gunicorn's access log without the private parts of URLs (``logger_class`` in gunicorn.conf.py).

A progress link's path is its patient's key (``/p/<token>``), a voucher's path is its value (``/v/<code>``,
``/api/v1/vouchers/<code>``) and so is a scratch card's invite path (``/r/<card code>``: the code under the
scratch-off, which its QR code holds); a personal code's (``/r/<8 symbols>``) is printed on posters for anyone to
read and stays in the log. Query strings hold phone numbers (``/patients/?q=…``, ``/api/v1/patients?phone=…``).
An access log is kept for weeks and read by whoever runs the server, so it gets paths with those parts masked
and no query string: in the request line, the path, the query and the Referer alike (the app's Referrer-Policy
is ``same-origin``, so browsers send the full address of the portal's own pages).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from gunicorn.glogging import Logger

from clinic.services.codes import PERSONAL_CODE_LENGTH  # a longer code (a card's, 12 symbols) is a bearer secret

# Any number of leading slashes: werkzeug answers //p/<token> with a redirect, and gunicorn logs that request too.
PRIVATE_PATH = re.compile(r"\A(/+(?:p|v|api/v1/vouchers)/).+", re.DOTALL)
INVITE_PATH = re.compile(r"\A(/+r/)([^/]*).*", re.DOTALL)
ABSOLUTE_FORM = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*://")
# A request target quoted inside one of gunicorn's error messages: up to the next space or quote.
TARGET_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*|/[^\s'\"]*")


def masked_path(path: str) -> str:
    """``path`` as it may be logged: whatever follows ``/p/``, ``/v/`` or ``/api/v1/vouchers/`` is ``…``, and so is
    whatever follows ``/r/`` when it holds more symbols than a personal code (a card code, typed with dashes or not)."""
    invite = INVITE_PATH.match(path)
    if invite and sum(symbol.isascii() and symbol.isalnum() for symbol in invite.group(2)) > PERSONAL_CODE_LENGTH:
        return invite.group(1) + "…"
    return PRIVATE_PATH.sub(r"\1…", path)


def masked_url(url: str | None) -> str:
    """A full address (a Referer) as it may be logged: its path masked, without query string or fragment."""
    try:
        parts = urlsplit(url or "")
    except ValueError:  # a malformed IPv6 host
        return "-"
    if not (parts.scheme or parts.path):
        return "-"
    return f"{parts.scheme}://{parts.netloc}{masked_path(parts.path)}" if parts.scheme else masked_path(parts.path)


def logged_path(environ: dict) -> str:
    """The request's path for the log: masked when it leads to a private page, never with its query string.

    Decided on PATH_INFO, the path the app routes (``/%70/<token>`` reaches ``/p/<token>`` too), or on the
    decoded request target when gunicorn answered an error itself (its environ then has RAW_URI only); an
    ordinary path is logged as it was sent (percent-encoded) without what follows ``?``.
    """
    raw = (environ.get("RAW_URI") or "").split("?", 1)[0].split("#", 1)[0]
    if ABSOLUTE_FORM.match(raw):  # GET http://host/p/<token>: a proxy's form of the request target
        raw = urlsplit(raw).path
    routed = environ.get("PATH_INFO") or unquote(raw)
    masked = masked_path(routed)
    return masked if masked != routed else raw or routed


class PrivateAccessLogger(Logger):
    """gunicorn's logger whose access-log atoms (``%(r)s``, ``%(U)s``, ``%(q)s``, ``%(f)s``…) hold no secrets.

    gunicorn's default access_log_format stays: it is made of these atoms.
    """

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        path, referer = logged_path(environ), masked_url(environ.get("HTTP_REFERER"))
        atoms.update({"r": f"{environ['REQUEST_METHOD']} {path} {environ['SERVER_PROTOCOL']}", "U": path, "q": "",
                      "f": referer, "{referer}i": referer, "{http_referer}e": referer, "{raw_uri}e": path,
                      "{path_info}e": masked_path(environ.get("PATH_INFO") or ""), "{query_string}e": ""})
        return atoms

    def warning(self, msg, *args, **kwargs):
        """gunicorn's "Invalid request from ip=…: Invalid HTTP request line: 'GET /p/<token>…'" masked too."""
        if isinstance(msg, str) and msg.startswith("Invalid request from"):
            msg = TARGET_IN_TEXT.sub(lambda target: logged_path({"RAW_URI": target.group(0)}), msg)
        super().warning(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        """gunicorn's "Error handling request GET <target>" (the app raised past its own handlers) masked too."""
        if isinstance(msg, str) and msg.startswith("Error handling request") and args:
            args = (*args[:-1], logged_path({"RAW_URI": str(args[-1])}))
        super().exception(msg, *args, **kwargs)
