"""Admin tasks as flask commands."""

import re
from datetime import datetime

from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Card, Patient, Referral, Staff, Voucher
from clinic.services.clinic_settings import get_clinic
from clinic.services.reports import Scope, campaign_comparison


def test_create_user_prompts_for_the_password(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "New@Example.com", "--role", "manager"],
                           input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert "Created new@example.com (manager)" in result.output
    staff = db.session.scalar(select(Staff).where(Staff.email == "new@example.com"))
    assert staff.is_manager and staff.check_password("a long password")


def test_create_user_refuses_bad_input(app):
    runner = app.test_cli_runner()
    short = runner.invoke(args=["create-user", "a@example.com"], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 10" in short.output
    runner.invoke(args=["create-user", "b@example.com", "--password", "long enough pw"])
    duplicate = runner.invoke(args=["create-user", "B@example.com", "--password", "long enough pw"])
    assert duplicate.exit_code != 0 and "already has an account" in duplicate.output
    bad_role = runner.invoke(args=["create-user", "c@example.com", "--role", "owner", "--password", "long enough pw"])
    assert bad_role.exit_code != 0


def test_seed_demo_creates_a_working_clinic_once(app, browser):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed-demo", "--password", "demo-password-1"])
    assert result.exit_code == 0, result.output
    assert "manager@example.com / demo-password-1" in result.output
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 21
    assert db.session.scalar(select(func.count()).select_from(Referral)) == 15
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 30
    assert db.session.scalar(select(func.count()).select_from(Card)) == 20
    assert not get_clinic().managers_need_two_step  # the demo's manager logs in with the password alone
    assert db.session.scalar(select(func.count()).select_from(Referral).where(Referral.card_id.is_not(None))) == 1
    every_day = Scope(datetime(2000, 1, 1), datetime(2100, 1, 1))
    assert {row.name: row.registered for row in campaign_comparison(every_day)} == {
        "Bring a friend": 11, "¥100 off for both": 4}  # the dashboard has two campaigns to compare
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "voucher.spent")) == 5
    invite = re.search(r"invite page:\s+https://clinic\.test(/r/\S+)", result.output).group(1)
    progress = re.search(r"progress page:\s+https://clinic\.test(/p/\S+)", result.output).group(1)
    assert browser.get(invite).status_code == 200
    assert browser.get(progress).status_code == 200
    browser.login("desk@example.com", "demo-password-1")

    again = runner.invoke(args=["seed-demo", "--if-empty"])
    assert again.exit_code == 0 and "not added" in again.output
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 21


def test_check_printing_reports_ready(app):
    result = app.test_cli_runner().invoke(args=["check-printing"])
    assert result.exit_code == 0, result.output
    assert "Printing is ready" in result.output


def test_disable_user_ends_every_session_and_enable_user_lets_them_back(app, browser, desk_user):
    browser.login(desk_user.email)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["disable-user", "DESK@example.com"])
    assert result.exit_code == 0 and "disabled and logged out everywhere" in result.output
    assert browser.get("/desk/").status_code == 302
    assert runner.invoke(args=["enable-user", "desk@example.com"]).exit_code == 0
    browser.login(desk_user.email)
    assert browser.get("/desk/").status_code == 200
    unknown = runner.invoke(args=["disable-user", "nobody@example.com"])
    assert unknown.exit_code != 0 and "No staff account" in unknown.output


def test_the_worker_needs_redis(app):
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code != 0 and "REDIS_URL is not set" in result.output


def test_folders_the_app_cannot_write_are_named_at_start_up(tmp_path):
    """Said in the log when the app starts (clinic.create_app), not at a manager's first upload."""
    from clinic import WRITTEN_FOLDERS, folder_problems

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = {setting: str(tmp_path / "not-yet-made" / setting.lower()) for setting in WRITTEN_FOLDERS}
    assert folder_problems(config) == [], "a folder still to be made under a writable one is fine"
    config["BATCH_FOLDER"] = str(blocker / "batches")
    problems = folder_problems(config)
    assert len(problems) == 1 and problems[0].startswith(f"BATCH_FOLDER ({blocker / 'batches'}) cannot be written")
