"""Rate limits on everything a script could use to guess: codes, logins and the public pages.

Codes are bearer secrets: a personal code, a scratch-card code or a voucher code is all it takes
to claim a reward. Each is long enough that guessing is hopeless *if* guesses are slow, so every
place a code can be typed is limited per client address and, for staff, per account as well
(a stolen desk login cannot be turned into a code scanner either). Wrong codes (unknown or
mistyped) count against a much smaller allowance than codes in general, because a desk mistypes
a code now and then while a script gets almost every guess wrong.

All limits live in this one table so that they can be read, tested and tuned in one place; the
numbers come from config (``RATELIMIT_*``, see clinic/config.py), read when the app is created.
Storage is Redis when ``REDIS_URL`` is set, so that every worker and every host shares the same counters.
"""

from __future__ import annotations

import time
from typing import Callable

from flask import Flask, g, request
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_limiter import Limiter
from limits.storage import MemoryStorage

# Unknown (404) and mistyped (422) codes: what a guesser mostly gets. "Already used" (409/410)
# means the code was real, so it is not a guess.
WRONG_CODE_STATUSES = frozenset({404, 422})


def too_many_tries() -> str:
    """The refusal's message, in the reader's language.

    A function rather than a lazy string: Flask-Limiter hashes every limit on every request, and
    hashing a lazy string translates it (locale selection, the clinic row) even when nothing is refused.
    """
    return _("Too many tries in a short time. Please wait a minute, then try again.")


class SweptMemoryStorage(MemoryStorage):
    """limits' per-process storage (no ``REDIS_URL``), without its timer thread: ``clinic-memory://``.

    ``MemoryStorage`` drops expired counters from a 10 ms timer thread that it starts again
    whenever the last one has ended: under load a new thread every few requests, each start
    waiting for the OS to run it. Counters are checked for expiry whenever they are read anyway,
    so here the same sweep simply runs inside the request that finds it due, at most once a second.
    """

    STORAGE_SCHEME = ["clinic-memory"]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()
        self.next_sweep = time.monotonic() + self.SWEEP_SECONDS

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the parent's private timer start
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()


def client_address() -> str:
    """The client's address; behind a reverse proxy ProxyFix has already put the real one here."""
    return request.remote_addr or "unknown"


def staff_account() -> str:
    """The logged-in staff member, so that one account is limited wherever it logs in from."""
    if current_user.is_authenticated:
        return f"staff:{current_user.id}"
    return f"anonymous:{client_address()}"


def api_token() -> str:
    """The integration API token a request came with (set by clinic/api before the view runs)."""
    holder = g.get("api_token")
    return f"api-token:{holder.id}" if holder is not None else f"anonymous:{client_address()}"


def _is_wrong_code(response) -> bool:
    return response.status_code in WRONG_CODE_STATUSES


def _login_failed(response) -> bool:
    return response.status_code == 422


def _code_entry(limiter: Limiter, view, config):
    """Desk pages where a code is typed or scanned: per client and per staff account."""
    for key_func, who in ((client_address, "client"), (staff_account, "staff")):
        view = limiter.shared_limit(config["RATELIMIT_CODE_ATTEMPTS"], scope=f"code-attempts-{who}",
                                    key_func=key_func, methods=["POST"], error_message=too_many_tries)(view)
        view = limiter.shared_limit(config["RATELIMIT_WRONG_CODES"], scope=f"wrong-codes-{who}",
                                    key_func=key_func, methods=["POST"], deduct_when=_is_wrong_code,
                                    error_message=too_many_tries)(view)
    return view


def _public_page(limiter: Limiter, view, config):
    """Pages anyone can open with a code or token in the URL: per client; unknown ones count extra."""
    view = limiter.shared_limit(config["RATELIMIT_PUBLIC_PAGES"], scope="public-pages", key_func=client_address,
                                error_message=too_many_tries)(view)
    return limiter.shared_limit(config["RATELIMIT_WRONG_CODES"], scope="wrong-codes-client",
                                key_func=client_address, deduct_when=_is_wrong_code,
                                error_message=too_many_tries)(view)


def _login(limiter: Limiter, view, config):
    """Failed log-ins per client address (a successful one costs nothing)."""
    return limiter.limit(config["RATELIMIT_LOGIN"], key_func=client_address, methods=["POST"],
                         deduct_when=_login_failed, error_message=too_many_tries)(view)


def _api_request(limiter: Limiter, view, config):
    """Every integration API request, per token (an HIS behind one address may hold several tokens)."""
    return limiter.limit(config["RATELIMIT_API"], key_func=api_token, scope="api",
                         error_message=too_many_tries)(view)


# What a guesser gets from the API; a bad phone number (also a 422) is not a guess.
API_WRONG_CODES = frozenset({"unknown_code", "mistyped_code", "not_a_code", "wrong_length"})


def _is_wrong_code_for_api(response) -> bool:
    return _is_wrong_code(response) and (response.get_json(silent=True) or {}).get("error", {}).get("code") \
        in API_WRONG_CODES


def _api_code_entry(limiter: Limiter, view, config):
    """API requests that read a code: also the wrong codes among them, per token."""
    view = limiter.shared_limit(config["RATELIMIT_API_WRONG_CODES"], scope="api-wrong-codes", key_func=api_token,
                                deduct_when=_is_wrong_code_for_api, error_message=too_many_tries)(view)
    return _api_request(limiter, view, config)


# endpoint -> how it is limited. tests/test_limits.py checks every endpoint here exists and that
# every view reading a code is listed.
LIMITED_ENDPOINTS: dict[str, Callable] = {
    "auth.login": _login,
    "desk.lookup": _code_entry,
    "desk.redeem": _code_entry,
    "desk.spend": _code_entry,
    "desk.send_for_review": _code_entry,
    "cards.activate": _code_entry,
    "public.invite": _public_page,
    "public.invite_qr": _public_page,
    "public.progress": _public_page,
    "public.progress_poster": _public_page,
    "public.voucher": _public_page,
    "api.create_patient": _api_request,
    "api.find_patients": _api_request,
    "api.get_patient": _api_request,
    "api.rotate_progress_link": _api_request,
    "api.record_visit": _api_request,
    "api.record_payment": _api_request,
    "api.validate_code": _api_code_entry,
    "api.redeem": _api_code_entry,
    "api.get_voucher": _api_code_entry,
    "api.spend_voucher": _api_code_entry,
    "api.void_voucher": _api_code_entry,
    "api.activate_card": _api_code_entry,
    "api.create_batch": _api_request,
    "api.get_batch": _api_request,
    "api.batch_pdf": _api_request,
}


# Limits that Flask-Limiter checks in its before_request hook rather than in a route's wrapper.
_LIMITS_CHECKED_BEFORE_EVERY_REQUEST = ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")


def init_app(app: Flask) -> Limiter:
    """One limiter per app (its limits are registered by view name, so apps must not share one)."""
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    limiter = Limiter(key_func=client_address)
    for endpoint, limit in LIMITED_ENDPOINTS.items():
        # Flask-Limiter checks a decorated limit in the wrapper it returns: the view must be replaced.
        # The limits as strings read from the config now, not callables: Flask-Limiter parses a callable's
        # limits again on every request (about 1 % of a public page).
        app.view_functions[endpoint] = limit(limiter, app.view_functions[endpoint], app.config)
    limiter.init_app(app)
    hooks = app.before_request_funcs[None]
    if limiter._check_request_limit in hooks and not any(app.config.get(name) for name in
                                                         _LIMITS_CHECKED_BEFORE_EVERY_REQUEST):
        # Every limit is a route's own (the table above), checked by the wrapper that replaced the view.
        # Flask-Limiter's before_request pass is there for default, application-wide and meta limits; with
        # none configured it finds nothing to check, at about 5 % of a public page's CPU.
        # (Not there at all when RATELIMIT_ENABLED is off.)
        hooks.remove(limiter._check_request_limit)
    app.extensions["clinic_limiter"] = limiter  # the limits hold it only weakly
    return limiter
