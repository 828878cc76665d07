"""The retention rule: who is due (each kind of activity keeps a patient), who never is, and the erasure of the rest."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from clinic.extensions import db
from clinic.models import (AuditEvent, Card, CardBatch, Clinic, Patient, Referral, ReviewRequest, Voucher,
                           VoucherStatus)
from clinic.models._time import utcnow
from clinic.services import audit, clinic_settings, redemption, retention, tiers
from clinic.services.transaction import Actor, atomic
from tests.conftest import counts, friend

LONG_AGO = datetime(2020, 3, 31, 9, 30)
RECENTLY = timedelta(days=30)
SETTINGS = {"name": "Harbour Dental", "phone": "", "address": "", "brand_colour": "#123456", "currency": "CNY",
            "language": "en", "timezone": "Asia/Shanghai", "public_base_url": ""}


def set_retention(months: int | None) -> None:
    with atomic():
        clinic_settings.get_clinic().retention_months = months


def age_everything() -> None:
    """Every moment of every patient's activity back to LONG_AGO, and every voucher expired then too."""
    with atomic():
        db.session.execute(update(Patient).values(enrolled_at=LONG_AGO, progress_link_issued_at=LONG_AGO))
        db.session.execute(update(Patient).where(Patient.notification_consent_at.is_not(None))
                           .values(notification_consent_at=LONG_AGO))
        db.session.execute(update(Referral).values(created_at=LONG_AGO))
        db.session.execute(update(Voucher).values(issued_at=LONG_AGO, expires_at=LONG_AGO + timedelta(days=90)))
        db.session.execute(update(Card).where(Card.activated_at.is_not(None)).values(activated_at=LONG_AGO))
    db.session.expire_all()


@pytest.fixture
def pair(make_patient, actor):
    """A referrer and the friend they brought (vouchers for both), with the rule at 12 months: (referrer, friend)."""
    set_retention(12)
    referrer, _token = make_patient(full_name="Wang Lixue", phone="13811112222")
    result = redemption.redeem_code(referrer.personal_code, friend("Chen Jiayi", "13933334444"), actor)
    return referrer.id, result.referral.friend_id


def due() -> set[int]:
    return set(retention.due_patient_ids())


def test_a_patient_with_nothing_for_longer_than_the_period_is_due_and_a_new_one_is_not(pair, make_patient):
    newcomer, _token = make_patient(full_name="Li Na")
    age_everything()
    with atomic():
        db.session.execute(update(Patient).where(Patient.id == newcomer.id).values(enrolled_at=utcnow(),
                                                                                  progress_link_issued_at=utcnow()))
    assert due() == set(pair)


def test_nobody_is_due_while_the_rule_is_off(pair):
    age_everything()
    set_retention(None)
    assert due() == set()
    assert retention.erase_inactive_patients(Actor()).erased == []


def _recent(model, column, where):
    def touch(referrer_id, friend_id):
        with atomic():
            db.session.execute(update(model).where(where(referrer_id, friend_id))
                               .values({column: utcnow() - RECENTLY}))
    return touch


REFERRAL = lambda referrer_id, friend_id: Referral.friend_id == friend_id  # noqa: E731
REFERRERS_VOUCHER = lambda referrer_id, friend_id: Voucher.patient_id == referrer_id  # noqa: E731


def _activate_a_card_for_the_referrer(referrer_id, friend_id):
    with atomic():
        batch = CardBatch(size=1)
        db.session.add(batch)
        db.session.flush()
        db.session.add(Card(batch_id=batch.id, serial="S-0001", code="C0000000001A", status="activated",
                            patient_id=referrer_id, activated_at=utcnow() - RECENTLY))


def _referrer_changes_a_privacy_choice(referrer_id, friend_id):
    tiers.set_leaderboard_consent(referrer_id, True, Actor())


# Each activity, done recently after everything else was aged: (what, who it keeps: "referrer", "friend" or both).
ACTIVITIES = {
    "enrolment": (_recent(Patient, "enrolled_at", lambda r, f: Patient.id == r), {"referrer"}),
    "new progress link": (_recent(Patient, "progress_link_issued_at", lambda r, f: Patient.id == r), {"referrer"}),
    "messaging consent": (_recent(Patient, "notification_consent_at", lambda r, f: Patient.id == f), {"friend"}),
    "redemption": (_recent(Referral, "created_at", REFERRAL), {"referrer", "friend"}),
    "first visit": (_recent(Referral, "visited_at", REFERRAL), {"referrer", "friend"}),
    "first payment": (_recent(Referral, "paid_at", REFERRAL), {"referrer", "friend"}),
    "voucher issued": (_recent(Voucher, "issued_at", REFERRERS_VOUCHER), {"referrer"}),
    "voucher spent": (_recent(Voucher, "spent_at", REFERRERS_VOUCHER), {"referrer"}),
    "card activated": (_activate_a_card_for_the_referrer, {"referrer"}),
    "privacy choice changed": (_referrer_changes_a_privacy_choice, {"referrer"}),
}


@pytest.mark.parametrize("activity", ACTIVITIES)
def test_each_kind_of_recent_activity_keeps_the_patient(pair, activity):
    referrer_id, friend_id = pair
    age_everything()
    assert due() == {referrer_id, friend_id}
    do, keeps = ACTIVITIES[activity]

    do(referrer_id, friend_id)

    kept = {"referrer": referrer_id, "friend": friend_id}
    assert due() == {kept[side] for side in ("referrer", "friend") if side not in keeps}


def test_a_voucher_they_can_still_spend_keeps_them_however_old(pair):
    referrer_id, friend_id = pair
    age_everything()
    with atomic():
        db.session.execute(update(Voucher).where(Voucher.patient_id == friend_id)
                           .values(expires_at=utcnow() + timedelta(days=1)))
    assert due() == {referrer_id}
    with atomic():  # spent or void: no longer theirs to spend
        db.session.execute(update(Voucher).where(Voucher.patient_id == friend_id)
                           .values(status=VoucherStatus.VOID.value))
    assert due() == {referrer_id, friend_id}


@pytest.mark.parametrize("named_as", ["patient_id", "referrer_id"])
def test_a_review_waiting_for_a_manager_keeps_the_patient_it_names(pair, named_as):
    referrer_id, friend_id = pair
    age_everything()
    with atomic():
        review = ReviewRequest(kind="existing_patient", details={}, **{named_as: friend_id})
        db.session.add(review)
    assert due() == {referrer_id}
    with atomic():
        db.session.execute(update(ReviewRequest).values(status="rejected"))
    assert due() == {referrer_id, friend_id}


def test_the_period_counts_in_calendar_months():
    assert retention.months_before(datetime(2026, 3, 31, 8), 1) == datetime(2026, 2, 28, 8)
    assert retention.months_before(datetime(2026, 1, 15), 12) == datetime(2025, 1, 15)
    assert retention.months_before(datetime(2028, 3, 31), 85) == datetime(2021, 2, 28)


def money_and_ledger() -> dict:
    totals = {
        "vouchers": db.session.scalar(select(func.count(Voucher.id))),
        "voucher_value": db.session.scalar(select(func.sum(Voucher.amount))),
        "referrals": db.session.scalar(select(func.count(Referral.id))),
        "paid": db.session.scalar(select(func.sum(Referral.paid_amount))),
    }
    db.session.rollback()
    return totals


def test_exactly_the_patients_due_are_erased_once_with_money_and_audit_intact(pair, make_patient, app):
    referrer_id, friend_id = pair
    kept, _token = make_patient(full_name="Zhou Min")
    age_everything()
    with atomic():
        db.session.execute(update(Patient).where(Patient.id == kept.id).values(enrolled_at=utcnow()))
    money, audit_before = money_and_ledger(), db.session.scalar(select(func.count(AuditEvent.id)))

    report = retention.erase_inactive_patients(Actor())

    assert sorted(report.erased) == sorted(pair) and not report.failed
    assert due() == set()  # an erased patient is never due again
    db.session.expire_all()
    erased = {p.id for p in db.session.scalars(select(Patient).where(Patient.erased_at.is_not(None)))}
    assert erased == set(pair)
    assert db.session.get(Patient, kept.id).full_name == "Zhou Min"
    assert money_and_ledger() == money
    events = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.erased")))
    assert {event.patient_id for event in events} == set(pair)
    assert all(event.staff_id is None and event.details[audit.BY] == audit.RETENTION_RULE
               and event.details["erasure_reason"] == "retention_period" for event in events)
    run = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "retention.run"))
    assert run.details["erased"] == 2 and run.details[audit.BY] == audit.RETENTION_RULE
    assert db.session.scalar(select(func.count(AuditEvent.id))) > audit_before  # only added to

    again = retention.erase_inactive_patients(Actor())
    assert again.erased == again.skipped == [] and db.session.scalar(
        select(func.count(AuditEvent.id)).where(AuditEvent.action == "retention.run")) == 1


def test_a_press_of_the_button_erases_at_most_its_share_the_oldest_first(pair):
    referrer_id, friend_id = pair
    age_everything()
    with atomic():
        db.session.execute(update(Referral).values(created_at=LONG_AGO + timedelta(days=1)))
        db.session.execute(update(Patient).where(Patient.id == friend_id)
                           .values(enrolled_at=LONG_AGO + timedelta(days=1)))
    with atomic():
        db.session.execute(update(Voucher).where(Voucher.patient_id == referrer_id)
                           .values(issued_at=LONG_AGO + timedelta(days=2)))
    assert retention.erase_inactive_patients(Actor(), limit=1).erased == [friend_id]
    assert due() == {referrer_id}


def test_one_failed_erasure_leaves_the_others_done(pair, monkeypatch):
    referrer_id, friend_id = pair
    age_everything()
    from sqlalchemy.exc import OperationalError

    real = retention.erase_patient

    def failing_for_the_friend(patient_id, reason, actor, **condition):
        if patient_id == friend_id:
            raise OperationalError("UPDATE", {}, Exception("disk full"))
        return real(patient_id, reason, actor, **condition)

    monkeypatch.setattr(retention, "erase_patient", failing_for_the_friend)
    report = retention.erase_inactive_patients(Actor())
    assert report.erased == [referrer_id] and list(report.failed) == [friend_id]
    db.session.expire_all()
    assert db.session.get(Patient, referrer_id).erased_at is not None
    assert db.session.get(Patient, friend_id).erased_at is None


def test_the_commands_dry_run_lists_ids_without_names_and_changes_nothing(pair, app):
    age_everything()
    before = counts()

    result = app.test_cli_runner().invoke(args=["erase-inactive-patients", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "2 patients are due" in result.output and "Wang" not in result.output and "Chen" not in result.output
    assert set(map(int, re.findall(r"\b\d+\b", result.output.split(":", 1)[1]))) == set(pair)
    assert counts() == before

    result = app.test_cli_runner().invoke(args=["erase-inactive-patients"])
    assert result.exit_code == 0, result.output
    assert "Erased the personal data of 2 patients" in result.output
    db.session.expire_all()
    assert all(db.session.get(Patient, pid).erased_at is not None for pid in pair)


@pytest.mark.parametrize("value", ["nonsense", "-12", "0", "13", "99999999999999999999", "12.5", "\x00"])
def test_the_setting_refuses_anything_but_the_periods_offered(manager, value):
    before = counts()
    response = manager.post("/admin/settings", {**SETTINGS, "retention_months": value})
    assert response.status_code == 422
    assert "Choose one of the periods offered, or never." in response.get_data(as_text=True)
    assert counts() == before
    assert db.session.scalar(select(Clinic.retention_months)) is None


def test_the_setting_is_saved_and_audited(manager):
    assert manager.post("/admin/settings", {**SETTINGS, "retention_months": "24"}).status_code == 303
    assert db.session.scalar(select(Clinic.retention_months)) == 24
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed")
                              .order_by(AuditEvent.id.desc()))
    assert event.details["changes"]["retention_months"] == [None, 24]
    assert manager.post("/admin/settings", {**SETTINGS, "retention_months": ""}).status_code == 303
    assert db.session.scalar(select(Clinic.retention_months)) is None


def test_the_manager_sees_who_is_due_masked_and_erases_them_once(pair, manager):
    referrer_id, friend_id = pair
    age_everything()
    assert "2 patients are due for erasure" in manager.get("/admin/settings").get_data(as_text=True)
    page = manager.get("/admin/retention").get_data(as_text=True)
    assert "Wang L." in page and "Chen J." in page and "Wang Lixue" not in page and "2020-03-31" in page
    assert "due for erasure under your retention rule. Each has had no activity for 12 months" in page

    refused = manager.post("/admin/retention", {})
    assert refused.status_code == 422 and "Tick the box" in refused.get_data(as_text=True)
    assert due() == set(pair)

    assert manager.post("/admin/retention", {"confirm": "y"}).status_code == 303
    db.session.expire_all()
    assert due() == set()
    erased_events = db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "patient.erased"))
    assert erased_events == 2
    assert manager.post("/admin/retention", {"confirm": "y"}).status_code == 303  # a second click
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "patient.erased")) == 2
    audit_page = manager.get("/admin/audit").get_data(as_text=True)
    assert "The clinic&#39;s retention rule" in audit_page or "The clinic's retention rule" in audit_page


def test_a_patient_who_comes_back_after_the_list_was_made_is_not_erased(pair, make_patient, actor, monkeypatch):
    """The list is read first and each erasure later: the erasure asks again, under the patient's lock."""
    referrer_id, friend_id = pair
    age_everything()
    listed = retention.due_patient_ids()
    assert set(listed) == {referrer_id, friend_id}
    # Between the list and the erasures, the referrer brings another friend: a new referral and voucher.
    referrer = db.session.get(Patient, referrer_id)
    redemption.redeem_code(referrer.personal_code, friend("Zhao Min", "13955556666"), actor)
    monkeypatch.setattr(retention, "due_patient_ids", lambda now=None, limit=None: listed)
    report = retention.erase_inactive_patients(Actor())
    assert report.erased == [friend_id] and report.skipped == [referrer_id]
    db.session.rollback()
    assert db.session.get(Patient, referrer_id).erased_at is None
    assert db.session.get(Patient, referrer_id).full_name == "Wang Lixue"
