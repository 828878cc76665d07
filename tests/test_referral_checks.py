"""Referrals to check (clinic/services/referral_checks.py): each rule flags its pattern and not the near miss just
under its threshold, with the vouchers' money exact; the manager's page, its filters, its export and who may open it.

Friends are registered through the desk's own redemption (the default campaign pays the referrer CN¥200.00 and the
friend a service voucher at once), then their referrals are moved to the moments in each test. The rule tests read
April 2026 in UTC; the page tests use the real clock and the page's default period (the last 90 days).
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone
from itertools import count

import pytest
from sqlalchemy import select, update

from clinic.extensions import db
from clinic.models import AuditEvent, Referral, Voucher
from clinic.models._time import utcnow
from clinic.services import erasure, milestones, referral_checks, vouchers
from clinic.services.clinic_settings import update_clinic
from clinic.services.money import format_money
from clinic.services.patients import PatientDetails
from clinic.services.redemption import redeem_code
from clinic.services.reports import Scope
from clinic.services.transaction import Actor, atomic

APRIL = Scope.for_days(date(2026, 4, 1), date(2026, 4, 30), timezone.utc)
SPRING = Scope.for_days(date(2026, 4, 1), date(2026, 5, 31), timezone.utc)
DAY = datetime(2026, 4, 10, 9, 0)
REFERRER_MONEY = 20000  # tests/conftest.py CAMPAIGN: CN¥200.00 to the referrer, a service voucher to the friend


@pytest.fixture
def bring(app):
    """``bring(referrer, at, phone=..., actor=...)`` -> referral id: a friend redeemed at the desk, registered at ``at``.

    Friends' phones differ from each other well before their last two digits, unless a test gives one.
    """
    numbers = count(1)

    def bring_friend(referrer, at: datetime, phone: str | None = None, actor: Actor | None = None) -> int:
        number = next(numbers)
        details = PatientDetails(full_name=f"Friend {number}", phone=phone or f"13{number:04d}00000",
                                 external_id=None)
        referral_id = redeem_code(referrer.personal_code, details, actor or Actor()).referral.id
        with atomic():
            db.session.execute(update(Referral).where(Referral.id == referral_id).values(created_at=at))
        return referral_id

    return bring_friend


@pytest.fixture
def manager_actor(manager_user) -> Actor:
    return Actor(staff_id=manager_user.id)


def flagged(checks) -> list[tuple]:
    return [(check.referrer.id, check.count) for check in checks]


def test_a_burst_of_three_friends_within_a_day_is_flagged_not_two_nor_three_over_25_hours(
        make_patient, bring, manager_actor):
    burst, two, spread, undone = (make_patient(full_name=name)[0] for name in ("Bo", "Tu", "Spread", "Undone"))
    burst_referrals = [bring(burst, DAY + timedelta(hours=hours)) for hours in (0, 10, 23.5)]
    bring(burst, DAY + timedelta(hours=100))  # the same referrer's friend days later: not part of the burst
    for hours in (0, 1):
        bring(two, DAY + timedelta(hours=hours))
    for hours in (0, 12, 25):
        bring(spread, DAY + timedelta(hours=hours))
    first, *_rest = [bring(undone, DAY + timedelta(hours=hours)) for hours in (0, 1, 2)]
    milestones.reverse_referral(first, "Friend cancelled", manager_actor)
    voided = db.session.scalar(select(Voucher.id).where(Voucher.referral_id == burst_referrals[0],
                                                        Voucher.kind == "money"))
    vouchers.void_voucher(voided, "Issued twice", manager_actor)  # a void voucher costs nothing

    checks = referral_checks.bursts(APRIL)

    assert flagged(checks) == [(burst.id, 3)]
    assert checks[0].money == {"CNY": 2 * REFERRER_MONEY} and checks[0].service_vouchers == 3
    assert (checks[0].first_at, checks[0].last_at) == (DAY, DAY + timedelta(hours=23.5))


def test_a_burst_outside_the_period_or_branch_is_not_flagged(make_patient, bring):
    burst = make_patient(full_name="Bo")[0]
    for hours in (0, 1, 2):
        bring(burst, datetime(2026, 3, 30) + timedelta(hours=hours))
    assert referral_checks.bursts(APRIL) == []
    assert flagged(referral_checks.bursts(Scope.for_days(date(2026, 3, 1), date(2026, 3, 31), timezone.utc))) \
        == [(burst.id, 3)]


def test_friends_who_never_came_are_flagged_only_when_none_of_three_old_ones_visited(
        make_patient, bring, manager_actor):
    farm, came, two, recent, voided = (make_patient(full_name=name)[0]
                                       for name in ("Farm", "Came", "Two", "Recent", "Voided"))
    now = datetime(2026, 5, 10, 12, 0)
    for day in (2, 6, 9):
        bring(farm, datetime(2026, 4, day))
    came_referrals = [bring(came, datetime(2026, 4, day)) for day in (2, 6, 9)]
    for day in (2, 6):
        bring(two, datetime(2026, 4, day))
    for day in (12, 16, 20):  # fewer than 30 days before now: they may still come
        bring(recent, datetime(2026, 4, day))
    voided_referrals = [bring(voided, datetime(2026, 4, day)) for day in (2, 6, 9)]
    visitor = db.session.get(Referral, came_referrals[1]).friend_id
    milestones.record_visit(visitor, manager_actor)
    for voucher_id in db.session.scalars(select(Voucher.id).where(Voucher.referral_id.in_(voided_referrals))):
        vouchers.void_voucher(voucher_id, "Made-up friends", manager_actor)

    checks = referral_checks.friends_who_never_came(APRIL, now)

    assert flagged(checks) == [(farm.id, 3)]
    assert checks[0].money == {"CNY": 3 * REFERRER_MONEY} and checks[0].service_vouchers == 3


def test_one_desk_redeeming_five_friends_of_one_referrer_in_30_days_and_80_percent_is_flagged(
        make_patient, make_staff, bring):
    desk, other = (Actor(staff_id=make_staff(email=email).id) for email in ("one@example.com", "two@example.com"))
    flagged_referrer, four, shared, slow = (make_patient(full_name=name)[0]
                                            for name in ("Flagged", "Four", "Shared", "Slow"))
    for day in range(5):
        bring(flagged_referrer, DAY + timedelta(days=4 * day), actor=desk)
    bring(flagged_referrer, DAY, actor=other)  # 5 of 6: 83 %
    for day in range(4):
        bring(four, DAY + timedelta(days=day), actor=desk)
    for day in range(5):
        bring(shared, DAY + timedelta(days=day), actor=desk)
    for day in range(2):
        bring(shared, DAY + timedelta(days=day), actor=other)  # 5 of 7: 71 %
    for day in range(5):  # five, but never five within 30 days
        bring(slow, DAY + timedelta(days=7.6 * day), actor=desk)

    checks = referral_checks.one_desk(SPRING)

    assert flagged(checks) == [(flagged_referrer.id, 5)]
    check = checks[0]
    assert (check.staff_email, check.share, check.friends_in_period) == ("one@example.com", 83, 6)
    assert check.money == {"CNY": 5 * REFERRER_MONEY}


def test_friends_phones_differing_only_in_the_last_two_digits_are_flagged(make_patient, bring, manager_actor):
    alike, apart, alone, undone, one, another = (make_patient(full_name=name)[0] for name in
                                                 ("Alike", "Apart", "Alone", "Undone", "One", "Another"))
    bring(alike, DAY, phone="13912345601")
    bring(alike, DAY + timedelta(days=9), phone="13912345678")
    bring(alike, DAY, phone="13812345678")
    bring(apart, DAY, phone="13922345601")
    bring(apart, DAY, phone="13922345701")  # differs in the third digit from the end
    bring(alone, DAY, phone="13932345601")
    bring(undone, DAY, phone="13942345601")
    milestones.reverse_referral(bring(undone, DAY, phone="13942345602"), "Friend cancelled", manager_actor)
    bring(one, DAY, phone="13952345601")
    bring(another, DAY, phone="13952345602")  # alike, but friends of two referrers

    checks = referral_checks.look_alike_phones(APRIL)

    assert flagged(checks) == [(alike.id, 2)]
    assert checks[0].phones == ("13912345601", "13912345678")
    assert checks[0].money == {"CNY": 2 * REFERRER_MONEY}


def _refused(staff_id: int, at: datetime, reason: str = "unknown_code") -> None:
    with atomic():
        db.session.add(AuditEvent(at=at, action="redemption", outcome="refused", reason=reason, staff_id=staff_id))


def test_twenty_wrong_codes_at_one_desk_within_a_day_are_flagged(make_staff):
    guesser, careful, slow, other_reason = (make_staff(email=f"{name}@example.com").id
                                            for name in ("guesser", "careful", "slow", "other"))
    for minute in range(20):
        _refused(guesser, DAY + timedelta(minutes=69 * minute), "mistyped_code" if minute % 2 else "unknown_code")
    for minute in range(19):
        _refused(careful, DAY + timedelta(minutes=minute))
    for step in range(20):
        _refused(slow, DAY + timedelta(hours=25 * step / 19))
    for minute in range(20):
        _refused(other_reason, DAY + timedelta(minutes=minute), "existing_patient")

    checks = referral_checks.wrong_codes(APRIL)

    assert [(check.staff_email, check.count) for check in checks] == [("guesser@example.com", 20)]
    assert checks[0].referrer is None and checks[0].money == {}


# The page.

def _now_minus(**delta) -> datetime:
    return utcnow() - timedelta(**delta)


def test_the_manager_sees_a_flagged_referrer_masked_with_the_money(manager, make_patient, bring):
    referrer = make_patient(full_name="Burst Bo", phone="13811112222")[0]
    for hours in (1, 2, 3):
        bring(referrer, _now_minus(hours=hours))

    response = manager.get("/admin/checks")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Burst of friends" in page and "Burst Bo" in page and "138****2222" in page
    assert "13811112222" not in page
    assert format_money(3 * REFERRER_MONEY, "CNY", "en") in page
    assert f'href="/patients/{referrer.id}"' in page
    assert "Nothing to check in this period." not in page


def test_the_page_in_chinese(manager, make_patient, bring, manager_actor):
    referrer = make_patient(full_name="王丽")[0]
    for hours in (1, 2, 3):
        bring(referrer, _now_minus(hours=hours))
    update_clinic({"language": "zh_CN"}, manager_actor)  # staff who chose no language read the clinic's
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert '<html lang="zh' in page and "王丽" in page
    assert "Burst of friends" not in page and "Referrals to check" not in page


def test_an_empty_period_says_nothing_to_check(manager):
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert "Nothing to check in this period." in page


def test_an_erased_referrer_is_not_named(manager, make_patient, bring, manager_actor):
    referrer = make_patient(full_name="Burst Bo", phone="13811112222")[0]
    for hours in (1, 2, 3):
        bring(referrer, _now_minus(hours=hours))
    erasure.erase_patient(referrer.id, "patient_request", manager_actor)
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert "Erased patient" in page and "Burst Bo" not in page and "2222" not in page


def test_wrong_codes_typed_at_the_desk_reach_the_page(app, desk, manager, desk_user):
    for _attempt in range(referral_checks.WRONG_CODES_ATTEMPTS):
        response = desk.post("/desk/redeem", {"code": "ABCD-EFGH"}, htmx=True)  # its check symbol does not match
        assert response.status_code == 422
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert "Wrong codes at the desk" in page and desk_user.email in page
    assert f"staff_id={desk_user.id}" in page


def test_desk_staff_may_not_open_the_page_or_its_export(desk):
    assert desk.get("/admin/checks").status_code == 403
    assert desk.get("/admin/exports/checks.csv").status_code == 403


@pytest.mark.parametrize("query, message", [
    ({"from": "yesterday"}, "The from date is not a date"),
    ({"to": "2026-13-01"}, "The to date is not a date"),
    ({"from": "2026-05-01", "to": "2026-04-01"}, "The end date is before the start date."),
    ({"branch": "999"}, "There is no such branch"),
    ({"branch": "x"}, "There is no such branch"),
])
def test_bad_filters_are_refused_with_a_message(manager, query, message):
    response = manager.get("/admin/checks", query_string=query)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_the_export_lists_the_rows_masked_and_is_audited(manager, make_patient, bring):
    referrer = make_patient(full_name="Burst Bo", phone="13811112222")[0]
    for hours in (1, 2, 3):
        bring(referrer, _now_minus(hours=hours))

    response = manager.get("/admin/exports/checks.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert [(row["rule"], row["referrer"], row["referrer phone"], row["count"], row["reward money"], row["currency"])
            for row in rows] == [("burst", "Burst Bo", "138****2222", "3", "600.00", "CNY")]
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export.checks")).one()
    assert event.details["rows"] == 1


def test_the_dashboard_links_to_the_checks(manager):
    assert 'href="/admin/checks"' in manager.get("/admin/dashboard").get_data(as_text=True)

