"""Flask's signed-cookie sessions, without building a signer for a request that brings no session cookie, and
marked Secure whenever the request came over HTTPS."""

from __future__ import annotations

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface


def cookies_secure(app: Flask) -> bool:
    """Whether the cookies of this answer get the Secure flag: when configured (``SESSION_COOKIE_SECURE``, on by
    default for an https ``PUBLIC_BASE_URL``) and whenever the request itself came over HTTPS.

    The request's own scheme covers the usual install behind a TLS-terminating proxy with ``PUBLIC_BASE_URL`` unset
    or http: ProxyFix (``TRUSTED_PROXY_HOPS``) has already taken the scheme from the trusted proxy's
    X-Forwarded-Proto, so an untrusted client cannot turn the flag off, and a cookie set over HTTPS without it
    would later be sent over plain http to anyone on the way.
    """
    return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's own, except that a request without a session cookie gets its new, empty session at once.

    Flask builds the cookie's signer (an itsdangerous serializer) for every request before it looks for the
    cookie; a patient's phone opening its page has none, and the signer was about 1 % of such a page. What
    the page gets is the same: a new empty session (``None`` without a secret key, as Flask answers), which is
    saved as a signed cookie if the request writes to it.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return cookies_secure(app)

    def open_session(self, app, request):
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class() if app.secret_key else None
        return super().open_session(app, request)
