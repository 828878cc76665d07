"""The clinic setting "managers must use two-step login": off by default; turned on only by a manager who uses it;
when on, a manager without it is sent to set it up before any other staff page; desk staff are not affected."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Clinic, Role
from clinic.services.clinic_settings import get_clinic, update_clinic
from clinic.services.transaction import Actor
from tests.conftest import Browser, next_code
from tests.test_two_step import password_step

SETTINGS = {"name": "Harbour Dental", "phone": "", "address": "", "brand_colour": "#123456", "currency": "CNY",
            "language": "en", "timezone": "Asia/Shanghai", "public_base_url": ""}


def required() -> bool:
    db.session.rollback()
    return db.session.get(Clinic, 1).managers_need_two_step


def audited(action: str, outcome: str = "ok") -> list[AuditEvent]:
    db.session.rollback()
    return db.session.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.outcome == outcome)
                              ).all()


@pytest.fixture
def requiring(app, make_staff, enable_two_step):
    """The setting turned on by a manager who uses two-step login."""
    owner = make_staff(Role.MANAGER.value, "owner@example.com")
    enable_two_step(owner)
    get_clinic()
    update_clinic({"managers_need_two_step": True}, Actor(staff_id=owner.id))
    assert required()
    return owner


def test_it_is_off_by_default_and_on_the_settings_page(manager):
    assert not required()
    page = manager.get("/admin/settings").get_data(as_text=True)
    assert "Managers must use two-step login" in page and 'name="managers_need_two_step"' in page
    assert manager.get("/desk/").status_code == 200


def test_turning_it_on_takes_a_manager_who_uses_two_step_login(app, manager, manager_user, enable_two_step):
    refused = manager.post("/admin/settings", {**SETTINGS, "managers_need_two_step": "y"})
    assert refused.status_code == 422 and "Turn on your own two-step login first" in refused.get_data(as_text=True)
    assert not required() and get_clinic().name != "Harbour Dental"  # nothing of the form was saved
    assert [e.reason for e in audited("settings.change", "refused")] == ["two_step_first"]

    totp, _codes = enable_two_step(manager_user)
    assert manager.post("/admin/settings", {**SETTINGS, "managers_need_two_step": "y"}).status_code == 303
    assert required()
    assert manager.post("/admin/settings", SETTINGS).status_code == 303  # unticked: off again
    assert not required()
    assert [e.details["changes"]["managers_need_two_step"] for e in audited("settings.changed")
            if "managers_need_two_step" in e.details["changes"]] == [[False, True], [True, False]]


def test_a_manager_without_it_is_sent_to_set_it_up_first(app, requiring, manager_user, enable_two_step):
    browser = Browser(app.test_client())
    assert browser.login(manager_user.email).status_code == 303
    for page in ("/desk/", "/admin/settings", "/admin/staff", "/patients/"):
        sent = browser.get(page)
        assert sent.status_code == 303 and sent.location.endswith("/account/security"), page
    assert browser.get("/desk/", htmx=True).headers["HX-Redirect"] == "/account/security"
    assert browser.post("/admin/staff/1/sessions/end").status_code == 303  # a POST changes nothing either
    security = browser.get("/account/security")
    assert security.status_code == 200 and "requires managers to use two-step login" in security.get_data(as_text=True)
    assert browser.get("/static/css/app.css").status_code == 200
    assert browser.post("/account/security/start").status_code == 303
    assert browser.post("/logout").status_code == 303


def test_a_manager_is_let_through_once_set_up_and_desk_staff_never_stopped(app, requiring, manager_user, desk,
                                                                            enable_two_step):
    assert desk.get("/desk/").status_code == 200
    totp, _codes = enable_two_step(manager_user)
    browser = Browser(app.test_client())
    password_step(browser, manager_user.email)
    assert browser.post("/login/code", {"code": next_code(totp)}).status_code == 303
    assert browser.get("/admin/settings").status_code == 200


def test_a_new_manager_with_a_temporary_password_chooses_it_first_then_sets_up_two_step(app, requiring):
    """Both pages that must come first, in order, and never sending each other back and forth."""
    from clinic.services import staff as staff_service

    issued = staff_service.add_staff("new.manager@example.com", "manager", Actor(staff_id=requiring.id))
    newcomer = Browser(app.test_client())
    newcomer.login("new.manager@example.com", issued.password)
    for page in ("/desk/", "/account/security", "/admin/staff"):
        response = newcomer.get(page)
        assert response.status_code == 303 and response.headers["Location"].endswith("/account/password"), page
    assert newcomer.get("/account/password").status_code == 200
    assert newcomer.post("/account/password", {"current_password": issued.password,
                                               "new_password": "a quiet harbour at dawn",
                                               "repeat_password": "a quiet harbour at dawn"}).status_code == 303
    assert newcomer.get("/desk/").headers["Location"].endswith("/account/security")
    assert newcomer.get("/account/security").status_code == 200
    assert newcomer.get("/account/password").status_code == 200, "their own password stays changeable"
