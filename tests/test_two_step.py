"""Two-step login: enrolment, the code after the password, recovery codes, replay, reset by a manager or the CLI."""

from __future__ import annotations

import re
import time
from datetime import datetime

import pyotp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, RecoveryCode, Staff, StaffSession
from clinic.services import staff as staff_service
from clinic.services import two_step
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from clinic.services.two_step_secrets import open_secret
from clinic.web import auth
from tests.conftest import PASSWORD, Browser, next_code

SECRET_ON_PAGE = re.compile(r'<code id="two-step-secret">([A-Z2-7]+)</code>')
RECOVERY_ON_PAGE = re.compile(r"<li><code>([0-9A-Z]{5}-[0-9A-Z]{5})</code></li>")


def events(action: str, outcome: str = "ok") -> list[AuditEvent]:
    db.session.rollback()
    return db.session.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.outcome == outcome)
                              .order_by(AuditEvent.id)).all()


def open_sessions(staff_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(StaffSession).where(StaffSession.staff_id == staff_id))


def password_step(browser: Browser, email: str, url: str = "/login"):
    response = browser.post(url, {"email": email, "password": PASSWORD})
    assert response.status_code == 303 and response.location.endswith("/login/code"), response.location
    return response


def test_enrolment_shows_a_qr_and_the_key_and_turns_on_only_with_a_right_code(desk, desk_user):
    page = desk.get("/account/security")
    assert page.status_code == 200 and "Two-step login is off" in page.get_data(as_text=True)
    assert desk.post("/account/security/start").status_code == 303
    page = desk.get("/account/security").get_data(as_text=True)
    secret = SECRET_ON_PAGE.search(page).group(1)
    assert '<svg viewBox' in page and 'class="qr"' in page
    uri = two_step.provisioning_uri(desk_user.email, secret, "Test Clinic")
    assert uri.startswith("otpauth://totp/Test%20Clinic:desk%40example.com?secret=" + secret), uri
    totp = pyotp.TOTP(secret)

    wrong = desk.post("/account/security/confirm", {"code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.status_code == 422 and "That code is not right" in wrong.get_data(as_text=True)
    assert [e.reason for e in events("two_step.enable", "refused")] == ["wrong_code"]
    assert db.session.get(Staff, desk_user.id).totp_secret is None

    done = desk.post("/account/security/confirm", {"code": totp.now()})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    codes = RECOVERY_ON_PAGE.findall(body)
    assert len(codes) == 8 and len(set(codes)) == 8
    staff = db.session.get(Staff, desk_user.id)
    assert secret not in staff.totp_secret and open_secret(staff.totp_secret) == secret  # sealed, not in clear
    assert staff.totp_pending_secret is None and staff.two_step_enabled_at
    assert db.session.scalar(select(func.count()).select_from(RecoveryCode)) == 8
    assert all(code.replace("-", "") not in {r.code_hash for r in db.session.scalars(select(RecoveryCode))}
               for code in codes)  # only hashes are kept
    assert len(events("two_step.enabled")) == 1
    assert "8 recovery codes left" in desk.get("/account/security").get_data(as_text=True)


def test_login_needs_the_code_and_keeps_next(app, desk_user, enable_two_step):
    totp, _codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email, "/login?next=/patients/")
    assert open_sessions(desk_user.id) == 0  # nobody is logged in after the password alone
    assert browser.get("/desk/").status_code == 302
    assert browser.get("/login/code").status_code == 200
    response = browser.post("/login/code", {"code": next_code(totp)})
    assert response.status_code == 303 and response.location == "/patients/"
    assert browser.get("/desk/").status_code == 200
    assert open_sessions(desk_user.id) == 1
    assert [e.details.get("with_code") for e in events("login")] == ["totp"]


def test_a_wrong_code_is_refused_clearly_and_audited(app, desk_user, enable_two_step):
    totp, _codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    wrong = "123456" if "123456" not in {totp.at(time.time() + 30 * n) for n in (-1, 0, 1)} else "654321"
    response = browser.post("/login/code", {"code": wrong})
    assert response.status_code == 422 and "That code is not right" in response.get_data(as_text=True)
    assert 'role="alert"' in response.get_data(as_text=True)
    assert [(e.reason, e.staff_id) for e in events("login.code", "refused")] == [("wrong_code", desk_user.id)]
    assert browser.get("/desk/").status_code == 302 and open_sessions(desk_user.id) == 0


def test_a_code_is_accepted_once(app, desk_user, enable_two_step):
    totp, _codes = enable_two_step(desk_user)
    code = next_code(totp)
    first = Browser(app.test_client())
    password_step(first, desk_user.email)
    assert first.post("/login/code", {"code": code}).status_code == 303
    second = Browser(app.test_client())  # someone who saw the code over the desk
    password_step(second, desk_user.email)
    response = second.post("/login/code", {"code": code})
    assert response.status_code == 422 and "already used" in response.get_data(as_text=True)
    assert [e.reason for e in events("login.code", "refused")] == ["replayed_code"]
    # The enrolment's own code (the current step) is used up as well.
    assert second.post("/login/code", {"code": totp.now()}).status_code == 422


def test_codes_are_checked_against_their_time_step(app, desk_user):
    """pyotp's at(for_time): the window is one step either side, and the step only moves forward."""
    secret = two_step.start_enrolment(desk_user.id, Actor())
    totp, start = pyotp.TOTP(secret), datetime(2026, 11, 24, 12, 0, 0)
    two_step.confirm_enrolment(desk_user.id, totp.at(start), Actor(), for_time=start)
    later = datetime(2026, 11, 24, 12, 5, 0)
    for stale in (totp.at(start), totp.at(datetime(2026, 11, 24, 12, 4, 0))):  # used, and two steps old
        with pytest.raises(Refused):
            two_step.finish_login(desk_user.id, stale, Actor(), for_time=later)
    assert two_step.finish_login(desk_user.id, totp.at(datetime(2026, 11, 24, 12, 5, 25)), Actor(),
                                 for_time=later).session_token
    with pytest.raises(Refused) as replay:  # an earlier step, still in the window, after a later one was used
        two_step.finish_login(desk_user.id, totp.at(datetime(2026, 11, 24, 12, 4, 45)), Actor(), for_time=later)
    assert replay.value.reason == "replayed_code"


def test_a_timed_out_login_starts_again_from_the_password(app, desk_user, enable_two_step, monkeypatch):
    totp, _codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    monkeypatch.setattr(auth, "PENDING_LOGIN_SECONDS", -1)
    password_step(browser, desk_user.email)
    response = browser.post("/login/code", {"code": next_code(totp)})
    assert response.status_code == 303 and response.location.endswith("/login")
    assert "timed out" in browser.get("/login").get_data(as_text=True)
    assert open_sessions(desk_user.id) == 0
    assert browser.get("/login/code").status_code == 303  # the marker was forgotten


def test_a_recovery_code_logs_in_once(app, desk_user, enable_two_step):
    _totp, codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    typed = codes[3].replace("-", " ").lower()  # as read off paper
    assert browser.post("/login/code", {"code": typed}).status_code == 303
    assert [e.details.get("with_code") for e in events("login")] == ["recovery_code"]
    again = Browser(app.test_client())
    password_step(again, desk_user.email)
    assert again.post("/login/code", {"code": codes[3]}).status_code == 422
    assert two_step.recovery_codes_left(desk_user.id) == 7


def test_a_disabled_account_cannot_finish_its_login(app, desk_user, manager_user, enable_two_step):
    totp, _codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    staff_service.set_enabled(desk_user.id, False, Actor(staff_id=manager_user.id))
    response = browser.post("/login/code", {"code": next_code(totp)})
    assert response.status_code == 303 and response.location.endswith("/login")
    assert browser.get("/desk/").status_code == 302 and open_sessions(desk_user.id) == 0
    assert [e.reason for e in events("login", "refused")] == ["account_changed"]


def test_turning_it_off_takes_the_password_and_a_code(app, desk_user, enable_two_step):
    totp, codes = enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    browser.post("/login/code", {"code": next_code(totp)})
    refused = browser.post("/account/security/off", {"password": "not my password", "code": "123456"})
    assert refused.status_code == 422 and "password is not right" in refused.get_data(as_text=True)
    no_code = browser.post("/account/security/off", {"password": PASSWORD, "code": ""})
    assert no_code.status_code == 422 and "Type the code" in no_code.get_data(as_text=True)
    assert db.session.get(Staff, desk_user.id).two_step_on
    assert browser.post("/account/security/off", {"password": PASSWORD, "code": codes[0]}).status_code == 303
    db.session.rollback()
    assert not db.session.get(Staff, desk_user.id).two_step_on
    assert db.session.scalar(select(func.count()).select_from(RecoveryCode)) == 0
    assert len(events("two_step.disabled")) == 1
    assert Browser(app.test_client()).login(desk_user.email).location == "/desk/"


def test_a_manager_resets_a_lost_phone_from_the_staff_page(app, manager, desk_user, enable_two_step):
    enable_two_step(desk_user)
    page = manager.get("/admin/staff").get_data(as_text=True)
    assert "Reset two-step login" in page and f"/admin/staff/{desk_user.id}/two-step/reset" in page
    response = manager.post(f"/admin/staff/{desk_user.id}/two-step/reset")
    assert response.status_code == 303
    assert "Two-step login is off for that account" in manager.get("/admin/staff").get_data(as_text=True)
    assert [e.details["email"] for e in events("two_step.reset")] == [desk_user.email]
    assert Browser(app.test_client()).login(desk_user.email).location == "/desk/"  # the password alone
    again = manager.post(f"/admin/staff/{desk_user.id}/two-step/reset")
    assert again.status_code == 409 and "does not use two-step login" in again.get_data(as_text=True)


def test_a_managers_reset_logs_that_person_out_everywhere_at_once(app, manager, desk_user, enable_two_step):
    totp, codes = enable_two_step(desk_user)
    desks = [Browser(app.test_client()) for _ in range(2)]  # the desk PC, and the lost phone
    for browser, code in zip(desks, (next_code(totp), codes[0])):
        password_step(browser, desk_user.email)
        assert browser.post("/login/code", {"code": code}).status_code == 303
    waiting = Browser(app.test_client())  # someone with the password, waiting for a code
    password_step(waiting, desk_user.email)
    assert open_sessions(desk_user.id) == 2
    assert manager.post(f"/admin/staff/{desk_user.id}/two-step/reset").status_code == 303
    assert "logged out everywhere" in manager.get("/admin/staff").get_data(as_text=True)
    for browser in desks:
        assert browser.get("/desk/").status_code == 302
    assert waiting.post("/login/code", {"code": codes[1]}).status_code == 303  # back to the password
    assert waiting.get("/desk/").status_code == 302
    db.session.rollback()
    ended = db.session.scalars(select(StaffSession.ended_reason).where(StaffSession.staff_id == desk_user.id)).all()
    assert ended == ["two_step_reset", "two_step_reset"]
    assert [e.details["sessions"] for e in events("two_step.reset")] == [2]


def test_a_manager_turns_off_their_own_only_with_password_and_code(manager, manager_user, enable_two_step):
    enable_two_step(manager_user)
    assert f"/admin/staff/{manager_user.id}/two-step/reset" not in manager.get("/admin/staff").get_data(as_text=True)
    response = manager.post(f"/admin/staff/{manager_user.id}/two-step/reset")
    assert response.status_code == 409 and "your two-step login page" in response.get_data(as_text=True)
    assert db.session.get(Staff, manager_user.id).two_step_on


def test_the_front_desk_cannot_reset_anyone(desk, manager_user, enable_two_step):
    enable_two_step(manager_user)
    assert desk.post(f"/admin/staff/{manager_user.id}/two-step/reset").status_code == 403
    assert db.session.get(Staff, manager_user.id).two_step_on


def test_the_cli_resets_the_only_manager(app, manager_user, enable_two_step):
    enable_two_step(manager_user)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["reset-two-step", "MANAGER@example.com"])
    assert result.exit_code == 0 and "Two-step login is off for manager@example.com" in result.output
    assert "logged out everywhere" in result.output
    db.session.rollback()
    assert not db.session.get(Staff, manager_user.id).two_step_on
    assert len(events("two_step.reset")) == 1
    again = runner.invoke(args=["reset-two-step", "manager@example.com"])
    assert again.exit_code != 0 and "does not use two-step login" in again.output
    unknown = runner.invoke(args=["reset-two-step", "nobody@example.com"])
    assert unknown.exit_code != 0 and "No staff account" in unknown.output


def test_an_account_without_two_step_logs_in_with_its_password(app, desk_user):
    assert Browser(app.test_client()).login(desk_user.email).location == "/desk/"
    assert staff_service.authenticate(desk_user.email, PASSWORD, Actor()) is not None


def test_the_login_code_page_without_a_pending_login_sends_to_the_password(browser):
    response = browser.post("/login/code", {"code": "123456"})
    assert response.status_code == 303 and response.location.endswith("/login")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.one_of(st.text(max_size=60), st.sampled_from(["", " ", "12345", "1234567", "１２３４５６",
                                                             "123\x00456", "<b>123456</b>", "a" * 5000])))
def test_nonsense_in_the_code_field_is_refused_clearly(app, desk_user, enable_two_step, code):
    if not db.session.get(Staff, desk_user.id).two_step_on:
        enable_two_step(desk_user)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    response = browser.post("/login/code", {"code": code})
    body = response.get_data(as_text=True)
    assert response.status_code == 422 and 'role="alert"' in body
    assert "<b>123456</b>" not in body
    assert open_sessions(desk_user.id) == 0


def logged_in_with_code(app, staff, totp) -> Browser:
    browser = Browser(app.test_client())
    password_step(browser, staff.email)
    assert browser.post("/login/code", {"code": next_code(totp)}).status_code == 303
    return browser


def test_new_recovery_codes_take_the_password_and_a_code_and_replace_the_old_ones(app, desk_user, enable_two_step):
    totp, old_codes = enable_two_step(desk_user)
    browser = logged_in_with_code(app, desk_user, totp)
    assert "Make new recovery codes" in browser.get("/account/security").get_data(as_text=True)
    wrong_password = browser.post("/account/security/recovery-codes",
                                  {"renew-password": "not my password", "renew-code": old_codes[0]})
    assert wrong_password.status_code == 422 and "password is not right" in wrong_password.get_data(as_text=True)
    wrong_code = browser.post("/account/security/recovery-codes", {"renew-password": PASSWORD, "renew-code": "12345"})
    assert wrong_code.status_code == 422 and "That code is not right" in wrong_code.get_data(as_text=True)
    assert [e.reason for e in events("two_step.recovery_codes", "refused")] == ["wrong_password", "wrong_code"]
    assert two_step.recovery_codes_left(desk_user.id) == 8

    done = browser.post("/account/security/recovery-codes", {"renew-password": PASSWORD, "renew-code": old_codes[0]})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    assert "Your earlier recovery codes no longer work" in body
    new_codes = RECOVERY_ON_PAGE.findall(body)
    assert len(set(new_codes)) == 8 and not set(new_codes) & set(old_codes)
    assert len(events("two_step.recovery_codes_renewed")) == 1
    assert "8 recovery codes left" in browser.get("/account/security").get_data(as_text=True)
    for code, status in ((old_codes[1], 422), (new_codes[0], 303)):
        other = Browser(app.test_client())
        password_step(other, desk_user.email)
        assert other.post("/login/code", {"code": code}).status_code == status


def test_new_recovery_codes_are_only_for_an_account_with_two_step_on(desk):
    response = desk.post("/account/security/recovery-codes", {"renew-password": PASSWORD, "renew-code": "123456"})
    assert response.status_code == 409 and "already off" in response.get_data(as_text=True)
    assert events("two_step.recovery_codes_renewed") == []


def test_wrong_codes_for_new_recovery_codes_are_rate_limited(app, desk_user, enable_two_step):
    from tests.test_limits import limited_app

    totp, _codes = enable_two_step(desk_user)
    browser = logged_in_with_code(limited_app(app, RATELIMIT_LOGIN="2/minute"), desk_user, totp)
    statuses = [browser.post("/account/security/recovery-codes",
                             {"renew-password": PASSWORD, "renew-code": "000000"}).status_code for _ in range(3)]
    assert statuses == [422, 422, 429]
    assert two_step.recovery_codes_left(desk_user.id) == 8


def test_turning_two_step_on_logs_out_every_other_device_and_keeps_this_one(app, desk, desk_user):
    """Whoever opened a session with a password the owner now fears is known loses it when the second step comes."""
    elsewhere = Browser(app.test_client())
    elsewhere.login(desk_user.email)
    assert elsewhere.get("/desk/").status_code == 200 and open_sessions(desk_user.id) == 2
    desk.post("/account/security/start")
    secret = SECRET_ON_PAGE.search(desk.get("/account/security").get_data(as_text=True)).group(1)
    done = desk.post("/account/security/confirm", {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200 and "Any other device you were logged in on is logged out" in done.get_data(
        as_text=True)
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(StaffSession).where(
        StaffSession.staff_id == desk_user.id, StaffSession.ended_at.is_(None))) == 1
    assert desk.get("/desk/").status_code == 200  # this one stays
    assert elsewhere.get("/desk/").status_code == 302  # the other one is sent to the login page
    assert events("two_step.enabled")[0].details["other_sessions_ended"] == 1
