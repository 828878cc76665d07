"""Flask's signed-cookie sessions, without building a signer for a request that brings no session cookie."""

from __future__ import annotations

from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's own, except that a request without a session cookie gets its new, empty session at once.

    Flask builds the cookie's signer (an itsdangerous serializer) for every request before it looks for the
    cookie; a patient's phone opening its page has none, and the signer was about 1 % of such a page. What
    the page gets is the same: a new empty session (``None`` without a secret key, as Flask answers), which is
    saved as a signed cookie if the request writes to it.
    """

    def open_session(self, app, request):
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class() if app.secret_key else None
        return super().open_session(app, request)
