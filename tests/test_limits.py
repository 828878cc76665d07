"""Rate limits: a script guessing codes or passwords is stopped; everyone else carries on."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter

import pytest
import redis

from clinic import create_app
from clinic.services.codes import generate_personal_code
from clinic.web.limits import LIMITED_ENDPOINTS, SweptMemoryStorage
from tests.conftest import PASSWORD, Browser

GUESSER = "203.0.113.7"
NEIGHBOUR = "198.51.100.20"


def limited_app(app, **settings):
    """A second app on the test's database with rate limits switched on (the tests' default is off)."""
    config = {key: app.config[key] for key in ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "UPLOAD_FOLDER",
                                               "BATCH_FOLDER", "IMPORT_FOLDER", "PUBLIC_BASE_URL")}
    # The exact moving window: production's sliding-window counter is an approximation that can let
    # one more request through when a test happens to straddle the turn of a minute.
    return create_app({**config, "TESTING": True, "RATELIMIT_ENABLED": True, "RATELIMIT_STRATEGY": "moving-window",
                       "RATELIMIT_STORAGE_URI": "memory://", **settings})


def browser_from(address: str, limited) -> Browser:
    client = limited.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return Browser(client)


def unknown_code() -> str:
    """A well-formed personal code (the check symbol is right) that nobody has."""
    return generate_personal_code()


def test_every_limited_endpoint_exists(app):
    assert set(LIMITED_ENDPOINTS) <= set(app.view_functions)


def test_every_api_operation_that_needs_a_token_is_limited(app):
    """A token's requests are counted on every operation (a new one too), not only on those that read a code."""
    from clinic.web.access import ACCESS, Access

    needs_a_token = {endpoint for endpoint, access in ACCESS.items() if access is Access.API_TOKEN}
    assert needs_a_token - set(LIMITED_ENDPOINTS) == set()


def test_a_thousand_wrong_codes_are_refused_after_the_limit_and_other_desks_carry_on(app, make_staff):
    limited = limited_app(app)
    guesser_account, neighbour_account = make_staff(), make_staff()
    guesser = browser_from(GUESSER, limited)
    guesser.login(guesser_account.email)
    token = guesser.csrf_token()

    statuses = Counter()
    for attempt in range(1000):
        code = unknown_code() if attempt % 2 else "NOT-A-CODE-" + secrets.token_hex(3)
        response = guesser.post("/desk/lookup", {"code": code}, htmx=True, csrf=False,
                                headers={"X-CSRFToken": token})
        statuses[response.status_code] += 1
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[429] >= 1000 - 20, statuses  # RATELIMIT_WRONG_CODES: 20 a minute
    assert statuses[404] + statuses[422] == 1000 - statuses[429]

    refused = guesser.post("/desk/lookup", {"code": unknown_code()}, htmx=True)
    assert refused.status_code == 429
    assert "Too many tries" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) > 0

    neighbour = browser_from(NEIGHBOUR, limited)
    neighbour.login(neighbour_account.email)
    assert neighbour.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 404


def test_a_staff_account_is_limited_wherever_it_logs_in_from(app, make_staff, referrer):
    limited = limited_app(app, RATELIMIT_WRONG_CODES="5/minute")
    account = make_staff()
    first = browser_from(GUESSER, limited)
    first.login(account.email)
    for _ in range(5):
        assert first.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 404
    assert first.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 429

    second = browser_from(NEIGHBOUR, limited)  # same account, another address
    second.login(account.email)
    assert second.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 429


def test_right_codes_do_not_use_up_the_wrong_code_allowance(app, desk_user, referrer):
    limited = limited_app(app, RATELIMIT_WRONG_CODES="3/minute")
    desk = browser_from(GUESSER, limited)
    desk.login(desk_user.email)
    for _ in range(10):
        assert desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).status_code == 200
    assert desk.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 404


def test_the_desk_s_wrong_codes_do_not_refuse_patients_behind_the_same_address(app, desk_user, make_patient):
    """The desk PC and patients' phones on the clinic's Wi-Fi reach the server from one address."""
    limited = limited_app(app, RATELIMIT_WRONG_CODES="3/minute")
    desk = browser_from(GUESSER, limited)
    desk.login(desk_user.email)
    for _ in range(3):
        assert desk.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 404
    assert desk.post("/desk/lookup", {"code": unknown_code()}, htmx=True).status_code == 429
    _patient, token = make_patient()
    phone = browser_from(GUESSER, limited)
    assert phone.get(f"/p/{token}").status_code == 200
    assert phone.get(f"/r/{unknown_code()}").status_code == 404, "the public pages' own allowance is untouched"


def test_guessing_invite_links_is_refused_but_other_phones_still_open_theirs(app, referrer):
    limited = limited_app(app)
    guesser = browser_from(GUESSER, limited)
    statuses = Counter(guesser.get(f"/r/{unknown_code()}").status_code for _ in range(1000))
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[404] == 20 and statuses[429] == 980, statuses
    assert guesser.get(f"/r/{referrer.personal_code}").status_code == 429  # the guesser is stopped for good codes too

    phone = browser_from(NEIGHBOUR, limited)
    assert phone.get(f"/r/{referrer.personal_code}").status_code == 200


def test_progress_links_are_limited_per_client(app, make_patient):
    limited = limited_app(app, RATELIMIT_PUBLIC_PAGES="5/minute")
    _patient, token = make_patient()
    reader = browser_from(GUESSER, limited)
    assert [reader.get(f"/p/{token}").status_code for _ in range(6)] == [200] * 5 + [429]
    assert browser_from(NEIGHBOUR, limited).get(f"/p/{token}").status_code == 200


def test_failed_logins_are_limited_per_client_and_successful_ones_cost_nothing(app, desk_user):
    limited = limited_app(app, RATELIMIT_LOGIN="3/minute")
    attacker = browser_from(GUESSER, limited)
    statuses = [attacker.post("/login", {"email": desk_user.email, "password": "wrong password!"}).status_code
                for _ in range(5)]
    assert statuses == [422, 422, 422, 429, 429]
    refused = attacker.post("/login", {"email": desk_user.email, "password": PASSWORD})
    assert refused.status_code == 429  # even the right password waits: the attacker must not learn it

    colleague = browser_from(NEIGHBOUR, limited)
    for _ in range(5):
        colleague.login(desk_user.email)
        colleague.post("/logout")


def wrong_password_from(address: str, limited, email: str):
    return browser_from(address, limited).post("/login", {"email": email, "password": "wrong password!"})


def test_failed_logins_for_one_account_are_limited_from_every_address_together(app, desk_user, make_staff):
    """A botnet trying passwords on one account, one try per address, meets the account's own allowance; the account
    is the typed address as the login reads it (any case, spaces around), and other accounts carry on."""
    limited = limited_app(app, RATELIMIT_LOGIN_ACCOUNT="3 per 15 minutes")
    typed = [desk_user.email, desk_user.email.upper(), f"  {desk_user.email} "]
    statuses = [wrong_password_from(f"203.0.113.{n}", limited, email).status_code for n, email in enumerate(typed)]
    assert statuses == [422, 422, 422]
    refused = browser_from("203.0.113.50", limited).post("/login", {"email": desk_user.email, "password": PASSWORD})
    assert refused.status_code == 429  # even the right password waits: the guesser must not learn it
    assert "Too many failed log-ins for this account" in refused.get_data(as_text=True)
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60

    colleague = make_staff(email="colleague@example.com")
    browser_from("203.0.113.50", limited).login(colleague.email)


def test_an_address_without_an_account_is_counted_and_refused_the_same_way(app, desk_user):
    """No account enumeration: an unknown address gets the same answers, in the same order, as a real one."""
    limited = limited_app(app, RATELIMIT_LOGIN_ACCOUNT="2 per 15 minutes")

    def answers(email: str) -> list[tuple[int, str]]:
        found = []
        for n in range(3):
            response = wrong_password_from(f"198.51.100.{n}", limited, email)
            body = response.get_data(as_text=True)
            found.append((response.status_code, "Too many failed log-ins for this account" in body))
        return found

    assert answers(desk_user.email) == answers("nobody@example.com") == [(422, False), (422, False), (429, True)]


def test_by_default_ten_failed_logins_per_account_and_successful_ones_cost_nothing(app, desk_user):
    """The default numbers (README): 10 failures per account in 15 minutes, whichever addresses they come from.
    Logging in successfully, however often, uses none of them."""
    limited = limited_app(app)
    assert limited.config["RATELIMIT_LOGIN_ACCOUNT"] == "10 per 15 minutes"
    for n in range(12):
        browser_from(f"192.0.2.{n}", limited).login(desk_user.email)
    statuses = [wrong_password_from(f"203.0.113.{n}", limited, desk_user.email).status_code for n in range(11)]
    assert statuses == [422] * 10 + [429]


def test_guessing_one_s_own_current_password_is_limited_per_account_wherever_it_comes_from(app, desk_user):
    """A desk PC left logged in, or a stolen session cookie, must not become a password oracle from many addresses:
    wrong current passwords on the password page count per account too, like wrong two-step codes."""
    limited = limited_app(app, RATELIMIT_LOGIN="2/minute")
    wrong = {"current_password": "not my password", "new_password": "a quiet harbour at dawn",
             "repeat_password": "a quiet harbour at dawn"}
    first = browser_from(GUESSER, limited)
    first.login(desk_user.email)
    assert [first.post("/account/password", wrong).status_code for _ in range(2)] == [422, 422]
    second = browser_from(NEIGHBOUR, limited)  # the same account from another address
    second.login(desk_user.email)
    assert second.post("/account/password", wrong).status_code == 429


def test_behind_a_proxy_the_forwarded_address_is_the_client(app, desk_user):
    limited = limited_app(app, TRUSTED_PROXY_HOPS=1, RATELIMIT_LOGIN="2/minute")
    proxy = browser_from("127.0.0.1", limited)  # every request arrives from the proxy

    def attempt(client_address: str) -> int:
        return proxy.post("/login", {"email": desk_user.email, "password": "wrong password!"},
                          headers={"X-Forwarded-For": client_address}).status_code

    assert [attempt(GUESSER) for _ in range(3)] == [422, 422, 429]
    assert attempt(NEIGHBOUR) == 422  # another client behind the same proxy is not punished


def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(app, desk_user):
    limited = limited_app(app, RATELIMIT_LOGIN="2/minute")
    attacker = browser_from(GUESSER, limited)
    statuses = [attacker.post("/login", {"email": desk_user.email, "password": "wrong password!"},
                              headers={"X-Forwarded-For": f"10.0.0.{n}"}).status_code for n in range(3)]
    assert statuses == [422, 422, 429]


def _redis_or_skip() -> str:
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return url


def test_with_redis_every_worker_shares_the_same_counters(app):
    url = _redis_or_skip()
    prefix = f"clinic-test-{secrets.token_hex(6)}"
    workers = [limited_app(app, RATELIMIT_STORAGE_URI=url, RATELIMIT_KEY_PREFIX=prefix,
                           RATELIMIT_PUBLIC_PAGES="4/minute") for _ in range(2)]
    statuses = [browser_from(GUESSER, workers[n % 2]).get("/r/NOPE").status_code for n in range(6)]
    assert statuses == [404, 404, 404, 404, 429, 429]
    connection = redis.Redis.from_url(url)
    for key in connection.scan_iter(f"{prefix}*"):
        connection.delete(key)


def test_when_redis_goes_away_the_desk_keeps_working(app, desk_user, referrer):
    limited = limited_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")  # nothing listens there
    desk = browser_from(GUESSER, limited)
    desk.login(desk_user.email)
    assert desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).status_code == 200


def test_while_redis_is_away_each_process_still_counts_and_refuses(app):
    """RouteLimiter falls back to this process's counters: a guesser is slowed even with the shared storage down."""
    limited = limited_app(app, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATELIMIT_PUBLIC_PAGES="3/minute")
    phone = browser_from(GUESSER, limited)
    assert [phone.get(f"/r/{unknown_code()}").status_code for _ in range(4)] == [404, 404, 404, 429]
    assert browser_from(NEIGHBOUR, limited).get(f"/r/{unknown_code()}").status_code == 404


def test_a_refused_page_says_when_to_try_again(app, make_patient):
    limited = limited_app(app, RATELIMIT_PUBLIC_PAGES="1/minute")
    _patient, token = make_patient()
    reader = browser_from(GUESSER, limited)
    assert reader.get(f"/p/{token}").status_code == 200
    refused = reader.get(f"/p/{token}")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert "Too many tries" in refused.get_data(as_text=True)


def test_without_redis_counters_live_in_the_process_and_no_timer_thread_is_started(app, make_patient):
    """The default per-process storage counts and refuses like limits' own, and sweeps expired counters inline."""
    limited = limited_app(app, RATELIMIT_STORAGE_URI="clinic-memory://", RATELIMIT_STRATEGY="sliding-window-counter",
                          RATELIMIT_PUBLIC_PAGES="5/minute")
    storage = limited.extensions["clinic_limiter"].storage
    assert isinstance(storage, SweptMemoryStorage)
    phone = browser_from(GUESSER, limited)
    threads = threading.active_count()
    statuses = [phone.get(f"/p/{secrets.token_urlsafe(24)}").status_code for _ in range(8)]
    assert statuses == [404] * 5 + [429] * 3
    assert threading.active_count() <= threads  # limits' MemoryStorage would have started a timer here
    assert browser_from(NEIGHBOUR, limited).get(f"/p/{secrets.token_urlsafe(24)}").status_code == 404

    storage.incr("soon-gone", expiry=0.01)
    time.sleep(0.02)
    storage.next_sweep = 0  # due now: the next counting request sweeps
    storage.incr("another", expiry=60)
    assert "soon-gone" not in storage.storage and "another" in storage.storage
