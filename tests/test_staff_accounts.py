"""Staff accounts without a shell: a manager adds someone, resets a password, changes a role; everyone changes
their own password. A temporary password is shown once and opens only the page to choose one's own."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Role, Staff
from clinic.services import staff as staff_service
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import PASSWORD, Browser

TEMPORARY = re.compile(r'<p class="code code-xl" id="temporary-password">([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})</p>')
NEW_PASSWORD = "a quiet harbour at dawn"


def text(response) -> str:
    return response.get_data(as_text=True)


def staff_row(email: str) -> Staff:
    staff = db.session.scalar(select(Staff).where(Staff.email == email))
    db.session.rollback()
    return staff


def audited(action: str) -> list[dict]:
    details = [event.details for event in db.session.scalars(select(AuditEvent).where(AuditEvent.action == action))]
    db.session.rollback()
    return details


def add(manager, email: str, role: str = "front_desk") -> str:
    response = manager.post("/admin/staff/new", {"email": email, "role": role})
    assert response.status_code == 200, text(response)
    return TEMPORARY.search(text(response))[1]


def test_a_manager_adds_a_receptionist_who_chooses_a_password_at_the_first_login(app, manager):
    temporary = add(manager, " New.Desk@Example.com ")
    staff = staff_row("new.desk@example.com")
    assert staff.role == "front_desk" and staff.password_change_required and staff.check_password(temporary)
    assert audited("staff.created")[-1]["email"] == "new.desk@example.com"
    assert temporary not in str(audited("staff.created"))
    assert temporary not in text(manager.get("/admin/staff")), "shown once, never again"

    receptionist = Browser(app.test_client())
    receptionist.login("new.desk@example.com", temporary)
    for page in ("/desk/", "/patients/", "/account/security"):
        response = receptionist.get(page)
        assert response.status_code == 303 and response.headers["Location"].endswith("/account/password"), page
    assert receptionist.post("/desk/lookup", {"code": "ABCD-EFGH"}).status_code == 303
    form = text(receptionist.get("/account/password"))
    assert "You logged in with a temporary password" in form

    wrong = receptionist.post("/account/password", {"current_password": "guess", "new_password": NEW_PASSWORD,
                                                   "repeat_password": NEW_PASSWORD})
    assert wrong.status_code == 422 and "That is not your current password." in text(wrong)
    mismatch = receptionist.post("/account/password", {"current_password": temporary, "new_password": NEW_PASSWORD,
                                                      "repeat_password": NEW_PASSWORD + "!"})
    assert mismatch.status_code == 422 and "The two new passwords are not the same." in text(mismatch)
    assert staff_row("new.desk@example.com").check_password(temporary), "a refused change changes nothing"

    done = receptionist.post("/account/password", {"current_password": temporary, "new_password": NEW_PASSWORD,
                                                  "repeat_password": NEW_PASSWORD})
    assert done.status_code == 303
    assert receptionist.get("/desk/").status_code == 200
    staff = staff_row("new.desk@example.com")
    assert not staff.password_change_required and staff.check_password(NEW_PASSWORD)
    assert staff.password_changed_at is not None
    assert audited("staff.password_changed")[-1] == {"other_sessions_ended": 0}


@pytest.mark.parametrize("form, message, status", [
    ({"email": "not-an-address", "role": "front_desk"}, "Give a valid email address.", 422),
    ({"email": "", "role": "front_desk"}, "Enter their email address.", 422),
    ({"email": "x" * 300 + "@example.com", "role": "manager"}, "An email address has at most 254 characters.", 422),
    ({"email": "someone@example.com", "role": "admin"}, "Choose front desk or manager.", 422),
    ({"email": "someone@example.com", "role": ""}, "Choose front desk or manager.", 422),
    ({"email": "manager@example.com", "role": "manager"}, "manager@example.com already has an account.", 409),
    ({"email": "a\x00b@example.com", "role": "front_desk"}, "Give a valid email address.", 422),
])
def test_an_account_that_cannot_be_added_says_why_and_adds_nothing(manager, form, message, status):
    before = db.session.scalar(select(func.count()).select_from(Staff))
    response = manager.post("/admin/staff/new", form)
    assert response.status_code == status and message in text(response)
    assert not TEMPORARY.search(text(response))
    assert db.session.scalar(select(func.count()).select_from(Staff)) == before


def test_a_reset_password_logs_the_person_out_and_only_the_temporary_one_opens(app, manager, desk, desk_user):
    assert desk.get("/desk/").status_code == 200
    response = manager.post(f"/admin/staff/{desk_user.id}/password")
    assert response.status_code == 200 and "New temporary password for desk@example.com" in text(response)
    temporary = TEMPORARY.search(text(response))[1]
    assert desk.get("/desk/").status_code == 302, "logged out everywhere at once"
    assert audited("staff.password_reset")[-1]["sessions"] == 1
    assert desk.post("/login", {"email": "desk@example.com", "password": PASSWORD}).status_code == 422
    desk.login("desk@example.com", temporary)
    assert desk.get("/desk/").headers["Location"].endswith("/account/password")


def test_nobody_resets_their_own_password_on_the_staff_page(manager, manager_user):
    response = manager.post(f"/admin/staff/{manager_user.id}/password")
    assert response.status_code == 409 and "Change your own password on your account page." in text(response)
    assert staff_row("manager@example.com").check_password(PASSWORD)
    assert manager.post("/admin/staff/999999/password").status_code == 404


def test_the_front_desk_cannot_manage_accounts(desk, manager_user):
    assert desk.post("/admin/staff/new", {"email": "x@example.com", "role": "manager"}).status_code == 403
    assert desk.post(f"/admin/staff/{manager_user.id}/password").status_code == 403
    assert desk.post(f"/admin/staff/{manager_user.id}/role", {"role": "front_desk"}).status_code == 403
    assert staff_row("manager@example.com").role == "manager" and staff_row("x@example.com") is None


def test_a_manager_changes_a_role_but_not_their_own(manager, manager_user, desk_user):
    assert manager.post(f"/admin/staff/{desk_user.id}/role", {"role": "manager"}).status_code == 303
    assert staff_row("desk@example.com").role == "manager"
    assert audited("staff.role_changed")[-1]["changes"] == {"role": ["front_desk", "manager"]}
    own = manager.post(f"/admin/staff/{manager_user.id}/role", {"role": "front_desk"})
    assert own.status_code == 409 and "Another manager has to change your own role." in text(own)
    for nonsense in ("admin", "", "manager\x00", "x" * 5000):
        response = manager.post(f"/admin/staff/{desk_user.id}/role", {"role": nonsense})
        assert response.status_code == 422 and "Choose front desk or manager." in text(response)
    assert staff_row("manager@example.com").role == "manager" and staff_row("desk@example.com").role == "manager"


def test_the_last_enabled_manager_keeps_the_role(app, manager_user):
    with pytest.raises(Refused) as refused:
        staff_service.change_role(manager_user.id, "front_desk", Actor())  # the command line, say
    assert refused.value.reason == "last_manager"
    assert staff_row("manager@example.com").role == Role.MANAGER.value


def test_changing_ones_password_logs_out_the_other_devices_only(app, desk, desk_user):
    other_device = Browser(app.test_client())
    other_device.login("desk@example.com")
    response = desk.post("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                               "repeat_password": NEW_PASSWORD})
    assert response.status_code == 303
    assert desk.get("/desk/").status_code == 200
    assert other_device.get("/desk/").status_code == 302
    assert audited("staff.password_changed")[-1] == {"other_sessions_ended": 1}


@pytest.mark.parametrize("new, repeat, message", [
    ("short", "short", "The password needs at least 10 characters."),
    (PASSWORD, PASSWORD, "Choose a password other than the one you have now."),
    ("", "", "The password needs at least 10 characters."),
    ("\x00" * 12, "\x00" * 12, None),
])
def test_a_new_password_that_breaks_a_rule_changes_nothing(desk, new, repeat, message):
    response = desk.post("/account/password", {"current_password": PASSWORD, "new_password": new,
                                               "repeat_password": repeat})
    if message is None:
        assert response.status_code in (303, 422)
    else:
        assert response.status_code == 422 and message in text(response)
        assert staff_row("desk@example.com").check_password(PASSWORD)
