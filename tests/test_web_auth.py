"""Logging in and out, who may see which page, and CSRF on every POST."""

import re

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Staff
from clinic.services.transaction import atomic
from tests.conftest import PASSWORD, Browser

MANAGER_PAGES = ["/admin/settings", "/admin/campaigns", "/admin/campaigns/new", "/admin/reviews", "/admin/audit"]
STAFF_PAGES = ["/desk/", "/patients/", "/patients/new"]


def test_login_and_logout_are_audited(browser, desk_user):
    response = browser.post("/login", {"email": "DESK@example.com ", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"].endswith("/desk/")
    assert browser.get("/desk/").status_code == 200
    assert browser.post("/logout").status_code == 302
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


def test_bumping_the_session_version_ends_existing_sessions(browser, desk_user):
    browser.login(desk_user.email)
    with atomic():
        db.session.get(Staff, desk_user.id).session_version += 1
    assert browser.get("/desk/").status_code == 302


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


def test_every_post_route_refuses_a_missing_csrf_token(app, manager):
    post_rules = [rule for rule in app.url_map.iter_rules() if "POST" in rule.methods]
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
