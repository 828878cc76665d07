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

The counting is done by ``limits`` (storage, strategies); the check around each view is the few lines of
:class:`RouteLimiter`. Until session 7 Flask-Limiter did it, and its general per-request machinery (which
limits apply, exemptions, the X-RateLimit headers of every answer) cost about five times the counting
itself: a tenth of a patient's page.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from functools import wraps
from typing import Callable

from flask import Flask, g, request
from flask_babel import gettext as _
from flask_login import current_user
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)

# Unknown (404) and mistyped (422) codes: what a guesser mostly gets. "Already used" (409/410)
# means the code was real, so it is not a guess.
WRONG_CODE_STATUSES = frozenset({404, 422})


def too_many_tries() -> str:
    """The refusal's message, in the reader's language (translated only when a request is refused)."""
    return _("Too many tries in a short time. Please wait a minute, then try again.")


def too_many_logins_for_account() -> str:
    """Said for any address typed, with or without an account: the answer must not tell which addresses exist."""
    return _("Too many failed log-ins for this account. Logging in to it is paused for a few minutes to stop password "
             "guessing: please wait, then try again.")


def too_many_call_backs() -> str:
    """A friend over the call-back allowance waits an hour, not a minute: say so, and the way that still works."""
    return _("Too many call-back requests from this connection. Please call the clinic, or try again in an hour.")


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


@dataclass(frozen=True)
class Rule:
    """One allowance on a view: how many requests, the counter they share, whose they are, and which count.

    Without ``deduct_when`` every request (of ``methods``, or of any method) counts before the view runs,
    and the one over the allowance is refused. With it the allowance is only checked before the view, and
    the answer counts afterwards when ``deduct_when(response)`` says so (a wrong code, a failed log-in).
    """

    limits: tuple[RateLimitItem, ...]
    scope: str
    key_func: Callable[[], str]
    methods: frozenset[str] | None = None
    deduct_when: Callable | None = None
    message: Callable[[], str] = too_many_tries  # the refusal's words


def _rule(limits: str, scope: str, key_func: Callable[[], str], *, methods=None, deduct_when=None,
          message: Callable[[], str] = too_many_tries) -> Rule:
    return Rule(tuple(parse_many(limits)), scope, key_func, frozenset(methods) if methods else None, deduct_when,
                message)


def _code_entry(config) -> list[Rule]:
    """Desk pages where a code is typed or scanned: per client and per staff account.

    The desk's wrong codes have counters of their own, apart from the public pages' (``desk-…``): the desk PC and the
    patients' phones on the clinic's Wi-Fi often reach the server from one address, and the desk's typos must not
    refuse a patient their progress page.
    """
    return [rule for key_func, who in ((client_address, "client"), (staff_account, "staff"))
            for rule in (_rule(config["RATELIMIT_CODE_ATTEMPTS"], f"code-attempts-{who}", key_func, methods=["POST"]),
                         _rule(config["RATELIMIT_WRONG_CODES"], f"desk-wrong-codes-{who}", key_func,
                               methods=["POST"], deduct_when=_is_wrong_code))]


def _public_page(config) -> list[Rule]:
    """Pages anyone can open with a code or token in the URL: per client; unknown ones count extra."""
    return [_rule(config["RATELIMIT_PUBLIC_PAGES"], "public-pages", client_address),
            _rule(config["RATELIMIT_WRONG_CODES"], "wrong-codes-client", client_address, deduct_when=_is_wrong_code)]


def _call_back_request(config) -> list[Rule]:
    """The invite page's "Call me back" form: a public page, and few requests per client (a person asks once or
    twice; a script filling the desk's list with made-up numbers asks all day)."""
    return [*_public_page(config), _rule(config["RATELIMIT_CALL_BACKS"], "call-backs", client_address,
                                         methods=["POST"], message=too_many_call_backs)]


def login_account() -> str:
    """The account a password is being tried for: the typed address normalised as the login looks it up, hashed.

    Taken from the form, never from the database, so an address without an account is counted and refused exactly
    like one with an account (no lookup, no difference in the answer or its timing). Hashed so that the counters'
    keys (in Redis) hold no staff addresses and have one length however long the typed text.
    """
    from clinic.services.staff import normalize_email

    typed = normalize_email(request.form.get("email"))
    return "login-account:" + hashlib.sha256(typed.encode("utf-8", "surrogatepass")).hexdigest()


def _login(config) -> list[Rule]:
    """Failed log-ins per client address, and per account from every address together: a botnet trying passwords
    on one account from thousands of addresses meets the account's allowance (a successful log-in costs nothing)."""
    return [_rule(config["RATELIMIT_LOGIN"], "login", client_address, methods=["POST"], deduct_when=_login_failed),
            _rule(config["RATELIMIT_LOGIN_ACCOUNT"], "login-account", login_account, methods=["POST"],
                  deduct_when=_login_failed, message=too_many_logins_for_account)]


def pending_login_account() -> str:
    """The account a login waiting for its code is for: its code is guessed from any number of addresses."""
    from clinic.web.auth import pending_login

    pending = pending_login()
    return f"two-step:{pending['staff']}" if pending else f"anonymous:{client_address()}"


def _login_code(config) -> list[Rule]:
    """A wrong second-step code counts like a wrong password, per address and per account."""
    return [_rule(config["RATELIMIT_LOGIN"], "login", client_address, methods=["POST"], deduct_when=_login_failed),
            _rule(config["RATELIMIT_LOGIN"], "login-code-account", pending_login_account, methods=["POST"],
                  deduct_when=_login_failed)]


def _own_secrets(config) -> list[Rule]:
    """Pages of one's own account that take the current password or a two-step code: wrong ones count like a failed
    login, per address and per account, so a logged-in desk PC left open (or a stolen session) cannot be used to
    guess either from any number of addresses."""
    return [_rule(config["RATELIMIT_LOGIN"], "login", client_address, methods=["POST"], deduct_when=_login_failed),
            _rule(config["RATELIMIT_LOGIN"], "own-secrets-account", staff_account, methods=["POST"],
                  deduct_when=_login_failed)]


def _api_request(config) -> list[Rule]:
    """Every integration API request, per token (an HIS behind one address may hold several tokens)."""
    return [_rule(config["RATELIMIT_API"], "api", api_token)]


# What a guesser gets from the API; a bad phone number (also a 422) is not a guess.
API_WRONG_CODES = frozenset({"unknown_code", "mistyped_code", "not_a_code", "wrong_length"})


def _is_wrong_code_for_api(response) -> bool:
    return _is_wrong_code(response) and (response.get_json(silent=True) or {}).get("error", {}).get("code") \
        in API_WRONG_CODES


def _api_code_entry(config) -> list[Rule]:
    """API requests that read a code: also the wrong codes among them, per token."""
    return [*_api_request(config), _rule(config["RATELIMIT_API_WRONG_CODES"], "api-wrong-codes", api_token,
                                         deduct_when=_is_wrong_code_for_api)]


# endpoint -> how it is limited. tests/test_limits.py checks every endpoint here exists, that
# every view reading a code is listed, and that every API operation needing a token is.
LIMITED_ENDPOINTS: dict[str, Callable] = {
    "auth.login": _login,
    "auth.login_code": _login_code,
    "accounts.change_password": _own_secrets,  # a wrong current password counts as a failed log-in
    "auth.two_step_confirm": _own_secrets,
    "auth.two_step_off": _own_secrets,
    "auth.recovery_codes": _own_secrets,
    "desk.lookup": _code_entry,
    "desk.redeem": _code_entry,
    "desk.spend": _code_entry,
    "desk.send_for_review": _code_entry,
    "cards.activate": _code_entry,
    "public.invite": _public_page,
    "public.invite_qr": _public_page,
    "public.call_me": _call_back_request,
    "public.call_me_page": _public_page,
    "public.progress": _public_page,
    "public.progress_poster": _public_page,
    "public.choices": _public_page,
    "public.save_choices": _public_page,
    "public.feedback": _public_page,
    "public.feedback_callback": _public_page,
    "public.voucher": _public_page,
    "public.voucher_qr": _public_page,
    "api.create_patient": _api_request,
    "api.correct_patient": _api_request,
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


class RouteLimiter:
    """Checks each limited view's rules against the counters in ``limits``' storage.

    When the shared storage (Redis) cannot be reached, the requests are counted in this process for
    ``FALLBACK_SECONDS`` before Redis is tried again: the desk keeps working, and a guesser is still slowed.
    """

    FALLBACK_SECONDS = 30.0

    def __init__(self, config):
        self.enabled = config["RATELIMIT_ENABLED"]
        self.prefix = config["RATELIMIT_KEY_PREFIX"]
        strategy = STRATEGIES[config["RATELIMIT_STRATEGY"]]
        self.storage = storage_from_string(config["RATELIMIT_STORAGE_URI"], wrap_exceptions=True)
        self.shared: RateLimiter = strategy(self.storage)
        self.local: RateLimiter = strategy(SweptMemoryStorage())
        self.shared_again_at = 0.0

    def _count(self, method: str, item: RateLimitItem, scope: str, key: str):
        """``hit``, ``test`` or ``get_window_stats`` on the shared counters (this process's while they are away)."""
        if time.monotonic() >= self.shared_again_at:
            try:
                return getattr(self.shared, method)(item, self.prefix, scope, key)
            except StorageError:
                log.warning("Rate limit storage unreachable: counting in this process for %d s", self.FALLBACK_SECONDS,
                            exc_info=True)
                self.shared_again_at = time.monotonic() + self.FALLBACK_SECONDS
        return getattr(self.local, method)(item, self.prefix, scope, key)

    def check(self, rules: list[Rule]) -> None:
        """Before the view: refuse with 429 when an allowance is used up; count the requests that always count."""
        deferred = []
        for rule in rules:
            if rule.methods is not None and request.method not in rule.methods:
                continue
            key = rule.key_func()
            for item in rule.limits:
                if not self._count("hit" if rule.deduct_when is None else "test", item, rule.scope, key):
                    reset_at = self._count("get_window_stats", item, rule.scope, key).reset_time
                    raise TooManyRequests(rule.message(), retry_after=max(1, math.ceil(reset_at - time.time())))
            if rule.deduct_when is not None:
                deferred.append((rule, key))
        if deferred:
            g.deferred_limits = deferred

    def count_answer(self, response):
        """After the view (and any error page): count the answers that the rules count, such as a wrong code."""
        for rule, key in g.pop("deferred_limits", ()):
            if rule.deduct_when(response):
                for item in rule.limits:
                    self._count("hit", item, rule.scope, key)
        return response

    def limit(self, view, rules: list[Rule]):
        @wraps(view)
        def limited(*args, **kwargs):
            self.check(rules)
            return view(*args, **kwargs)

        return limited


def init_app(app: Flask) -> RouteLimiter:
    """One limiter per app, wrapping the views in the table above."""
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    limiter = RouteLimiter(app.config)
    if limiter.enabled:
        for endpoint, rules in LIMITED_ENDPOINTS.items():
            # The limits are parsed once, now, from the config.
            app.view_functions[endpoint] = limiter.limit(app.view_functions[endpoint], rules(app.config))
        app.after_request(limiter.count_answer)
    app.extensions["clinic_limiter"] = limiter
    return limiter
