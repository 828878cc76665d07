"""Two-step login secrets sealed at rest: a stolen database holds no usable secret, and a key change is a clear
state (refused, "ask a manager"), never a pass or a 500; secrets from before sealing are sealed on use or by CLI."""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import update

from clinic.extensions import db
from clinic.models import Staff
from clinic.services import two_step
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from clinic.services.two_step_secrets import SEALED_PREFIX, open_secret
from tests.conftest import PASSWORD, Browser, next_code
from tests.test_two_step import events, open_sessions, password_step


def stored(staff_id: int) -> Staff:
    db.session.rollback()
    return db.session.get(Staff, staff_id)


def test_the_database_holds_no_secret_in_clear(app, desk_user, enable_two_step):
    pending = two_step.start_enrolment(desk_user.id, Actor())
    row = stored(desk_user.id)
    assert row.totp_pending_secret.startswith(SEALED_PREFIX) and pending not in row.totp_pending_secret
    totp = pyotp.TOTP(pending)
    two_step.confirm_enrolment(desk_user.id, totp.now(), Actor())
    row = stored(desk_user.id)
    assert row.totp_secret.startswith(SEALED_PREFIX) and pending not in row.totp_secret
    assert open_secret(row.totp_secret) == pending


def test_a_new_secret_key_refuses_app_codes_clearly_and_a_manager_can_reset(app, manager_user, desk_user,
                                                                           enable_two_step):
    totp, _codes = enable_two_step(desk_user)
    app.config["SECRET_KEY"] = "a different key, as after a careless move to a new server"
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    response = browser.post("/login/code", {"code": next_code(totp)})
    body = response.get_data(as_text=True)
    assert response.status_code == 422 and "Type one of your recovery codes instead" in body
    assert 'role="alert"' in body
    assert open_sessions(desk_user.id) == 0 and browser.get("/desk/").status_code == 302
    assert {e.reason for e in events("login.code", "refused")} == {"secret_unreadable"}
    manager = Browser(app.test_client())
    manager.login(manager_user.email)
    staff_page = manager.get("/admin/staff").get_data(as_text=True)
    assert 'id="two-step-key-changed"' in staff_page and desk_user.email in staff_page.split("two-step-key-changed")[1]
    assert manager.post(f"/admin/staff/{desk_user.id}/two-step/reset").status_code == 303
    assert Browser(app.test_client()).login(desk_user.email).location == "/desk/"
    assert 'id="two-step-key-changed"' not in manager.get("/admin/staff").get_data(as_text=True)


def test_after_a_key_change_a_recovery_code_still_logs_in_and_turns_two_step_off(app, desk_user, enable_two_step):
    """Recovery codes are kept as hashes, not under the key: they are the way back in, for a manager above all
    (a clinic requiring two-step login would otherwise have every manager locked out by a key change)."""
    _totp, codes = enable_two_step(desk_user)
    app.config["TWO_STEP_KEY"] = "another key"
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    assert browser.post("/login/code", {"code": "AAAAA-AAAAA"}).status_code == 422  # a wrong one is still wrong
    assert browser.post("/login/code", {"code": codes[0]}).status_code == 303
    assert open_sessions(desk_user.id) == 1
    page = browser.get("/account/security").get_data(as_text=True)
    assert "cannot check the codes of your authenticator app any more" in page
    with pytest.raises(Refused) as refused:  # the same code twice: used up, whatever the key
        two_step.turn_off(desk_user.id, PASSWORD, codes[0], Actor(staff_id=desk_user.id))
    assert refused.value.reason == "wrong_code"
    with pytest.raises(Refused) as refused:  # an app code cannot be checked: said so, nothing changed
        two_step.turn_off(desk_user.id, PASSWORD, "123456", Actor(staff_id=desk_user.id))
    assert refused.value.reason == "secret_unreadable" and stored(desk_user.id).two_step_on
    two_step.turn_off(desk_user.id, PASSWORD, codes[1], Actor(staff_id=desk_user.id))
    assert not stored(desk_user.id).two_step_on


def test_start_up_says_which_accounts_the_key_cannot_open(app, manager_user, desk_user, enable_two_step, caplog):
    from clinic import _warn_about_two_step_key

    enable_two_step(desk_user)
    enable_two_step(manager_user)
    with caplog.at_level("WARNING"):
        _warn_about_two_step_key(app)
    assert caplog.records == []
    app.config["SECRET_KEY"] = "rotated without a TWO_STEP_KEY"
    with caplog.at_level("WARNING"):
        _warn_about_two_step_key(app)
    [record] = caplog.records
    message = record.getMessage()
    assert "2 account(s)" in message and desk_user.email in message and manager_user.email in message


def test_two_step_key_keeps_secrets_readable_when_secret_key_changes(app, desk_user, enable_two_step):
    app.config["TWO_STEP_KEY"] = "kept in the server's environment and with the backups"
    totp, _codes = enable_two_step(desk_user)
    app.config["SECRET_KEY"] = "rotated"
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    assert browser.post("/login/code", {"code": next_code(totp)}).status_code == 303


def _clear_secret(staff_id: int, column: str = "totp_secret") -> str:
    """The row as the release before sealing left it: the base32 secret in clear."""
    secret = pyotp.random_base32()
    db.session.execute(update(Staff).where(Staff.id == staff_id).values({column: secret}))
    db.session.commit()
    return secret


def test_a_clear_secret_from_before_still_logs_in_and_is_sealed_then(app, desk_user, enable_two_step):
    enable_two_step(desk_user)
    secret = _clear_secret(desk_user.id)
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    assert browser.post("/login/code", {"code": next_code(pyotp.TOTP(secret))}).status_code == 303
    row = stored(desk_user.id)
    assert row.totp_secret.startswith(SEALED_PREFIX) and open_secret(row.totp_secret) == secret


def test_the_cli_seals_every_clear_secret_and_leaves_sealed_ones(app, desk_user, manager_user, enable_two_step):
    enable_two_step(manager_user)
    sealed_before = stored(manager_user.id).totp_secret
    enable_two_step(desk_user)
    secret = _clear_secret(desk_user.id)
    pending = _clear_secret(manager_user.id, "totp_pending_secret")
    result = app.test_cli_runner().invoke(args=["seal-two-step-secrets"])
    assert result.exit_code == 0 and "Sealed 2 two-step login secret(s)" in result.output
    desk, manager = stored(desk_user.id), stored(manager_user.id)
    assert open_secret(desk.totp_secret) == secret and secret not in desk.totp_secret
    assert open_secret(manager.totp_pending_secret) == pending and pending not in manager.totp_pending_secret
    assert manager.totp_secret == sealed_before
    browser = Browser(app.test_client())
    password_step(browser, desk_user.email)
    assert browser.post("/login/code", {"code": next_code(pyotp.TOTP(secret))}).status_code == 303
    again = app.test_cli_runner().invoke(args=["seal-two-step-secrets"])
    assert "Sealed 0" in again.output
