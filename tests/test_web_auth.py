"""Logging in and out, who may see which page, and CSRF on every POST."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Staff, StaffSession
from clinic.services.transaction import Actor, atomic
from tests.conftest import PASSWORD, Browser

MANAGER_PAGES = ["/admin/settings", "/admin/campaigns", "/admin/campaigns/new", "/admin/reviews", "/admin/audit"]
STAFF_PAGES = ["/desk/", "/patients/", "/patients/new"]


def test_login_and_logout_are_audited(browser, desk_user):
    response = browser.post("/login", {"email": "DESK@example.com ", "password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"].endswith("/desk/")
    assert browser.get("/desk/").status_code == 200
    assert browser.post("/logout").status_code == 303
    assert browser.get("/desk/").status_code == 302
    actions = db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-2:] == ["login", "logout"]


@pytest.mark.parametrize("email, password", [
    ("desk@example.com", "wrong password"),
    ("nobody@example.com", PASSWORD),
    ("", ""),
    ("<script>alert(1)</script>", "x"),
    ("王小明@example.com", "🎉" * 50),
    ("a" * 5000, "b" * 5000),
])
def test_bad_logins_get_a_clear_message(browser, desk_user, email, password):
    response = browser.post("/login", {"email": email, "password": password})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "class=\"field-error\"" in page
    assert "<script>alert(1)</script>" not in page
    assert browser.get("/desk/").status_code == 302


def test_a_disabled_account_cannot_log_in_and_its_sessions_end(app, browser, desk_user):
    browser.login(desk_user.email)
    with atomic():
        db.session.get(Staff, desk_user.id).enabled = False
    assert browser.get("/desk/").status_code == 302
    assert browser.post("/login", {"email": desk_user.email, "password": PASSWORD}).status_code == 422


@pytest.mark.parametrize("attempt", ["right password", "wrong password", "no such account", "disabled account"])
def test_every_login_attempt_runs_the_password_hasher_once_at_the_same_cost(monkeypatch, desk_user, attempt):
    """A missing or disabled account costs what a wrong password costs: else the answer's time tells who exists."""
    import werkzeug.security

    from clinic.services import staff as staff_service

    staff_service.authenticate("first@example.com", "first attempt", Actor())  # whatever a process does once
    email = "nobody@example.com" if attempt == "no such account" else desk_user.email
    if attempt == "disabled account":
        with atomic():
            db.session.get(Staff, desk_user.id).enabled = False
    hashed = []
    hasher = werkzeug.security._hash_internal
    monkeypatch.setattr(werkzeug.security, "_hash_internal",
                        lambda method, salt, password: hashed.append(method) or hasher(method, salt, password))
    found = staff_service.authenticate(email, "wrong password" if attempt == "wrong password" else PASSWORD, Actor())
    assert (found is not None) == (attempt == "right password")
    assert hashed == [desk_user.password_hash.split("$")[0]]  # once, of the accounts' kind and cost


class ClientAt:
    """The test client with a base URL of its own (``https://localhost``): every request goes there."""

    def __init__(self, client, base_url: str):
        self.client, self.base_url = client, base_url

    def get(self, url: str, **kwargs):
        return self.client.get(url, base_url=self.base_url, **kwargs)

    def post(self, url: str, **kwargs):
        return self.client.post(url, base_url=self.base_url, **kwargs)


def browser_over(app, scheme: str, **environ) -> Browser:
    """A browser on ``scheme``://localhost. Its Referer says https when the request (directly or through a trusted
    proxy) is: over HTTPS Flask-WTF checks that a POST came from a page of the same https site."""
    client = app.test_client()
    secure = scheme == "https" or environ.get("HTTP_X_FORWARDED_PROTO") == "https"
    client.environ_base.update({"HTTP_REFERER": f"{'https' if secure else 'http'}://localhost/login", **environ})
    return Browser(ClientAt(client, f"{scheme}://localhost/"))


def set_cookies(response) -> dict[str, str]:
    """The answer's Set-Cookie headers by cookie name."""
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def test_over_https_the_login_cookie_is_secure_even_when_the_public_address_is_http(app, desk_user):
    """Behind a TLS-terminating proxy PUBLIC_BASE_URL may be unset or http: the cookie follows the request's own
    scheme as well, else a session cookie set over HTTPS would later go out over plain http to anyone on the way."""
    app.config.update(SESSION_COOKIE_SECURE=False, PUBLIC_BASE_URL="http://127.0.0.1:5000")
    browser = browser_over(app, "https")
    cookies = set_cookies(browser.login(desk_user.email))
    assert "Secure" in cookies["session"] and "HttpOnly" in cookies["session"]
    assert "remember_token" not in cookies  # no remember-me cookie: a login lasts as long as its session
    assert "Secure" in set_cookies(browser.get("/desk/?lang=zh_CN"))["lang"]
    assert browser.get("/desk/").status_code == 200  # and the browser sends it back over HTTPS


def test_over_plain_http_the_cookie_is_not_secure_unless_configured(app, desk_user):
    """A trial on a clinic PC over http keeps working (a Secure cookie would never come back); SESSION_COOKIE_SECURE
    (an https PUBLIC_BASE_URL, or forced) still marks it Secure."""
    app.config.update(SESSION_COOKIE_SECURE=False)
    assert "Secure" not in set_cookies(browser_over(app, "http").login(desk_user.email))["session"]
    app.config.update(SESSION_COOKIE_SECURE=True)
    assert "Secure" in set_cookies(browser_over(app, "http").login(desk_user.email))["session"]


@pytest.mark.app_settings(TRUSTED_PROXY_HOPS=1, SESSION_COOKIE_SECURE=False)
def test_behind_a_trusted_proxy_the_forwarded_https_makes_the_cookie_secure(app, desk_user):
    through_proxy = browser_over(app, "http", HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert "Secure" in set_cookies(through_proxy.login(desk_user.email))["session"]


def test_without_a_trusted_proxy_a_forwarded_scheme_is_ignored(app, desk_user):
    app.config.update(SESSION_COOKIE_SECURE=False)
    forged = browser_over(app, "http", HTTP_X_FORWARDED_PROTO="https")
    assert "Secure" not in set_cookies(forged.login(desk_user.email))["session"]


def test_logging_out_ends_the_session_on_the_server_not_just_the_cookie(app, browser, desk_user):
    browser.login(desk_user.email)
    stolen = app.test_client()
    stolen.set_cookie("session", browser.client.get_cookie("session").value)  # a copy of the cookie
    assert Browser(stolen).get("/desk/").status_code == 200
    browser.post("/logout")
    assert Browser(stolen).get("/desk/").status_code == 302
    assert db.session.scalar(select(StaffSession.ended_reason)) == "logout"


def test_logging_out_on_one_desk_leaves_the_others_logged_in(app, desk_user):
    first, second = Browser(app.test_client()), Browser(app.test_client())
    first.login(desk_user.email)
    second.login(desk_user.email)
    first.post("/logout")
    assert first.get("/desk/").status_code == 302
    assert second.get("/desk/").status_code == 200


def test_a_session_older_than_its_lifetime_stops_working(app, browser, desk_user):
    browser.login(desk_user.email)
    with atomic():
        session_row = db.session.scalar(select(StaffSession))
        session_row.created_at -= timedelta(hours=app.config["STAFF_SESSION_HOURS"], minutes=1)
    assert browser.get("/desk/").status_code == 302


def test_the_database_keeps_only_a_hash_of_the_session_token(app, browser, desk_user):
    browser.login(desk_user.email)
    with browser.client.session_transaction() as cookie_session:
        token = cookie_session["_user_id"]
    stored = db.session.scalar(select(StaffSession.token_hash))
    assert token and token not in stored and str(desk_user.id) != token


def test_next_only_redirects_within_the_site(browser, desk_user):
    token = browser.csrf_token()
    for target, expected in [("/patients/", "/patients/"), ("https://evil.example/", "/desk/"),
                             ("//evil.example/", "/desk/")]:
        browser.client.get("/login")
        response = browser.client.post(f"/login?next={target}", data={"email": desk_user.email, "password": PASSWORD},
                                       headers={"X-CSRFToken": token})
        assert response.headers["Location"].endswith(expected), target
        browser.post("/logout")
        token = browser.csrf_token()


@pytest.mark.parametrize("path", MANAGER_PAGES + STAFF_PAGES)
def test_anonymous_visitors_are_sent_to_log_in(browser, path):
    response = browser.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", MANAGER_PAGES)
def test_front_desk_gets_403_on_every_manager_page(desk, path):
    assert desk.get(path).status_code == 403


def test_front_desk_gets_403_on_manager_posts(desk, referrer):
    from clinic.models import Voucher

    assert desk.post("/admin/settings", {"name": "Hijacked"}).status_code == 403
    assert desk.post("/admin/campaign", {"name": "Hijacked"}).status_code == 403
    assert desk.post("/admin/vouchers/1/void", {"reason": "because"}).status_code == 403
    assert db.session.scalar(select(Voucher)) is None


@pytest.mark.parametrize("path", MANAGER_PAGES + STAFF_PAGES)
def test_managers_see_every_page(manager, path):
    assert manager.get(path).status_code == 200


# POST routes whose authority is a secret in the URL, not the session: a forging site cannot know it, so there is no
# CSRF to check (the view's docstring says why; the test named here checks it works without a token).
NO_SESSION_POSTS = {"public.save_choices": "tests/test_public_choices.py",
                    "public.feedback": "tests/test_visit_feedback.py",
                    "public.feedback_callback": "tests/test_visit_feedback.py",
                    # The friend on the invite page has no session at all: the code in the URL says whose page it is.
                    "public.call_me": "tests/test_friend_leads.py"}


def test_every_post_route_refuses_a_missing_csrf_token(app, manager):
    # The JSON API takes a bearer token and never the session cookie, so it has no CSRF to check (tests/test_api.py).
    post_rules = [rule for rule in app.url_map.iter_rules() if "POST" in rule.methods
                  and not rule.endpoint.startswith("api.") and rule.endpoint not in NO_SESSION_POSTS]
    assert len(post_rules) >= 8
    for rule in post_rules:
        url = re.sub(r"<int:\w+>", "1", rule.rule)
        for htmx in (False, True):
            response = manager.post(url, {"code": "x"}, htmx=htmx, csrf=False)
            assert response.status_code == 400, (url, htmx, response.status_code)


def test_a_forged_csrf_token_is_refused(manager):
    response = manager.client.post("/desk/lookup", data={"code": "x"}, headers={"X-CSRFToken": "forged"})
    assert response.status_code == 400


def test_csrf_tokens_do_not_work_across_sessions(app, manager, desk_user):
    other = Browser(app.test_client())
    other.login(desk_user.email)
    stolen = manager.csrf_token()
    response = other.client.post("/desk/lookup", data={"code": "x"}, headers={"X-CSRFToken": stolen})
    assert response.status_code == 400


def test_disabling_an_account_logs_it_out_at_once_on_every_device(app, manager, manager_user, desk_user):
    desks = [Browser(app.test_client()) for _ in range(2)]
    for desk in desks:
        desk.login(desk_user.email)
        assert desk.get("/desk/").status_code == 200
    page = manager.get("/admin/staff").get_data(as_text=True)
    assert "desk@example.com" in page and "2 devices" in page

    response = manager.post(f"/admin/staff/{desk_user.id}/disable")
    assert response.status_code == 303
    assert [desk.get("/desk/").status_code for desk in desks] == [302, 302]
    assert desks[0].post("/login", {"email": desk_user.email, "password": PASSWORD}).status_code == 422
    assert db.session.scalars(select(StaffSession.ended_reason)
                              .where(StaffSession.staff_id == desk_user.id)).all() == ["disabled", "disabled"]
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "staff.disabled")).one()
    assert event.staff_id == manager_user.id and event.details["staff_member"] == desk_user.id

    assert manager.post(f"/admin/staff/{desk_user.id}/enable").status_code == 303
    desks[0].login(desk_user.email)
    assert desks[0].get("/desk/").status_code == 200


def test_a_manager_can_log_someone_out_everywhere_without_disabling_them(app, manager, desk_user):
    desk = Browser(app.test_client())
    desk.login(desk_user.email)
    assert manager.post(f"/admin/staff/{desk_user.id}/sessions/end").status_code == 303
    assert desk.get("/desk/").status_code == 302
    desk.login(desk_user.email)
    assert desk.get("/desk/").status_code == 200


def test_a_manager_cannot_lock_the_clinic_out(manager, manager_user):
    response = manager.post(f"/admin/staff/{manager_user.id}/disable")
    assert response.status_code == 409 and "your own account" in response.get_data(as_text=True)
    assert manager.get("/admin/staff").status_code == 200


def test_the_last_enabled_manager_cannot_be_disabled(app, manager_user, make_staff):
    from clinic.services import staff as staff_service
    from clinic.services.errors import Refused
    from clinic.services.transaction import Actor

    other = make_staff("manager")
    staff_service.set_enabled(other.id, False, Actor(staff_id=manager_user.id))
    with pytest.raises(Refused) as refused:
        staff_service.set_enabled(manager_user.id, False, Actor(staff_id=other.id))
    assert refused.value.reason == "last_manager"


def test_disabling_an_unknown_account_is_a_404(manager):
    assert manager.post("/admin/staff/999999/disable").status_code == 404


def test_the_desk_cannot_manage_staff(desk, desk_user, manager_user):
    assert desk.get("/admin/staff").status_code == 403
    assert desk.post(f"/admin/staff/{manager_user.id}/disable").status_code == 403


def test_the_logged_in_staff_member_is_a_detached_copy_that_a_commit_leaves_readable(app, desk_user):
    """load_session_user: no query after an action's commit, and a Staff row the action holds is left alone."""
    from sqlalchemy import event

    from clinic.services import staff as staff_service
    from clinic.services.transaction import Actor

    email, token = desk_user.email, staff_service.authenticate(desk_user.email, PASSWORD, Actor()).session_token
    held = db.session.get(Staff, desk_user.id)  # a row an action has loaded
    current = staff_service.load_session_user(token)
    assert current is not held and current.id == desk_user.id
    held.language = "zh_CN"
    db.session.commit()
    statements = []

    def count(_connection, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert current.is_active and current.language is None and current.email == email
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert statements == [], "the copy is read without going back to the database"
    db.session.expire_all()
    assert db.session.get(Staff, desk_user.id).language == "zh_CN", "the action's change was saved"


def test_loading_the_logged_in_staff_member_opens_no_transaction(app, desk_user):
    """The session loader reads outside any transaction, so the action after it begins without a rollback.

    On PostgreSQL that rollback also dropped every statement psycopg had prepared on the connection
    (DEALLOCATE ALL): no redemption statement stayed prepared from one request to the next. Inside a
    transaction already open, the loader reads in it (one connection, one snapshot) and leaves it open.
    """
    from clinic.services import staff as staff_service
    from clinic.services.transaction import Actor

    staff_id = desk_user.id
    token = staff_service.authenticate(desk_user.email, PASSWORD, Actor()).session_token
    db.session.rollback()
    with app.test_request_context("/desk/"):
        assert staff_service.load_session_user(token).id == staff_id
        assert not db.session().in_transaction()
        db.session.get(Staff, staff_id)  # an action's own read begins its transaction
        assert staff_service.load_session_user(token).id == staff_id
        assert db.session().in_transaction()
        db.session.rollback()
