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
from sqlalchemy import func, select, update

from clinic.extensions import db
from clinic.models import AuditEvent, CheckMark, Referral, Voucher
from clinic.models._time import utcnow
from clinic.services import erasure, milestones, referral_checks, vouchers
from clinic.services.clinic_settings import update_clinic
from clinic.services.errors import Refused
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



# "Mark as checked".

def _burst(make_patient, bring, name: str = "Burst Bo", phone: str = "13811112222"):
    """A referrer with three friends in the last three hours (a burst on the page's default period), and the newest
    friend's referral id."""
    referrer = make_patient(full_name=name, phone=phone)[0]
    newest = [bring(referrer, _now_minus(hours=hours)) for hours in (3, 2, 1)][-1]
    return referrer, newest


def _marks(action: str = "check.marked") -> list[AuditEvent]:
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()
    db.session.rollback()
    return events


def test_a_marked_flag_is_checked_until_a_newer_friend_comes_then_checked_before(
        make_patient, bring, manager_actor, manager_user):
    referrer = make_patient(full_name="Bo")[0]
    referrals = [bring(referrer, DAY + timedelta(hours=hours)) for hours in (0, 1, 2)]

    mark = referral_checks.mark_checked("burst", referrer.id, None, referrals[-1], "  Her three  sisters ",
                                        manager_actor)

    assert (mark.evidence_id, mark.evidence_at, mark.checked_by, mark.note) == (
        referrals[-1], DAY + timedelta(hours=2), manager_user.email, "Her three sisters")
    [check] = referral_checks.with_marks(referral_checks.bursts(APRIL))
    assert check.checked and not check.checked_before
    bring(referrer, DAY + timedelta(hours=3))  # a fourth friend in the same burst: newer evidence
    [check] = referral_checks.with_marks(referral_checks.bursts(APRIL))
    assert check.checked_before and not check.checked and check.count == 4
    referral_checks.mark_checked("burst", referrer.id, None, check.last_id, "", manager_actor)
    [check] = referral_checks.with_marks(referral_checks.bursts(APRIL))
    assert check.checked and check.mark.note is None
    events = _marks()
    assert [(event.patient_id, event.details["rule"], event.details["evidence_id"]) for event in events] == [
        (referrer.id, "burst", referrals[-1]), (referrer.id, "burst", check.last_id)]
    assert "sisters" not in str(events[0].details)  # the note stays out of the append-only log


def test_marking_twice_with_the_same_or_older_evidence_records_one_mark(make_patient, bring, manager_actor):
    referrer = make_patient(full_name="Bo")[0]
    referrals = [bring(referrer, DAY + timedelta(hours=hours)) for hours in (0, 1, 2)]
    referral_checks.mark_checked("burst", referrer.id, None, referrals[-1], "first", manager_actor)
    again = referral_checks.mark_checked("burst", referrer.id, None, referrals[-1], "second", manager_actor)
    older = referral_checks.mark_checked("burst", referrer.id, None, referrals[0], "older", manager_actor)
    assert again.note == older.note == "first" and older.evidence_id == referrals[-1]
    assert len(_marks()) == 1


def test_one_desk_and_wrong_codes_are_marked_by_their_staff_member(make_patient, make_staff, bring, manager_actor):
    desk, other = (make_staff(email=email).id for email in ("one@example.com", "two@example.com"))
    referrer = make_patient(full_name="Flagged")[0]
    redeemed = [bring(referrer, DAY + timedelta(days=day), actor=Actor(staff_id=desk)) for day in range(5)]
    for minute in range(referral_checks.WRONG_CODES_ATTEMPTS):
        _refused(desk, DAY + timedelta(minutes=minute))
    [one_desk] = referral_checks.one_desk(APRIL)
    [wrong] = referral_checks.wrong_codes(APRIL)
    assert one_desk.last_id == redeemed[-1] and one_desk.subject == f"r{referrer.id}-s{desk}"

    referral_checks.mark_checked("one_desk", referrer.id, desk, one_desk.last_id, "", manager_actor)
    referral_checks.mark_checked("wrong_codes", None, desk, wrong.last_id, "new receptionist", manager_actor)
    assert [check.checked for check in referral_checks.with_marks([one_desk, wrong])] == [True, True]
    _refused(desk, DAY + timedelta(minutes=25))  # one more wrong code, after the mark
    [wrong] = referral_checks.with_marks(referral_checks.wrong_codes(APRIL))
    assert wrong.checked_before and wrong.mark.note == "new receptionist"
    with pytest.raises(Refused) as refused:  # the other desk's attempts and referrals are not this flag's evidence
        referral_checks.mark_checked("one_desk", referrer.id, other, one_desk.last_id, "", manager_actor)
    assert refused.value.status == 404


@pytest.mark.parametrize("rule, subject, evidence, note, status", [
    ("bursts", "referrer", "newest", "", 400),  # no such rule
    ("burst", "both", "newest", "", 400),  # a burst flags a referrer, not a staff member
    ("wrong_codes", "referrer", "newest", "", 400),  # wrong codes flag a staff member
    ("burst", "referrer", None, "", 400),
    ("burst", "other referrer", "newest", "", 404),  # someone else's friend is not this flag's evidence
    ("burst", "referrer", "other", "", 404),
    ("burst", "referrer", "newest", "x" * 201, 422),
    ("burst", "referrer", "newest", "bell\x07", 422),
])
def test_bad_marks_are_refused_and_write_nothing(make_patient, make_staff, bring, manager_actor, rule, subject,
                                                 evidence, note, status):
    referrer, newest = _burst(make_patient, bring)
    other = make_patient(full_name="Other")[0]
    other_referral = bring(other, _now_minus(hours=1))
    referrer_id = {"referrer": referrer.id, "both": referrer.id, "other referrer": other.id}[subject]
    staff_id = manager_actor.staff_id if subject == "both" else None
    evidence_id = {"newest": newest, "other": other_referral, None: None}[evidence]
    with pytest.raises(Refused) as refused:
        referral_checks.mark_checked(rule, referrer_id, staff_id, evidence_id, note, manager_actor)
    assert refused.value.status == status
    assert _marks() == [] and db.session.scalar(select(func.count()).select_from(CheckMark)) == 0


def test_the_page_hides_a_checked_row_until_newer_evidence_then_says_who_checked_it(
        manager, make_patient, bring, manager_user):
    referrer, newest = _burst(make_patient, bring)
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert f'id="check-burst-r{referrer.id}"' in page and f'name="evidence" value="{newest}"' in page

    response = manager.post("/admin/checks/mark", {"rule": "burst", "referrer": str(referrer.id), "staff": "",
                                                   "evidence": str(newest), "note": "Family visit"}, htmx=True)

    row = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'<tr id="check-burst-r{referrer.id}" class="check check-burst checked">' in row
    assert f"Checked by {manager_user.email}" in row and "Family visit" in row and "Mark as checked" not in row
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert "Burst Bo" not in page and "1 row marked as checked is hidden" in page
    assert "Nothing to check in this period." in page
    shown = manager.get("/admin/checks?checked=1").get_data(as_text=True)
    assert "Burst Bo" in shown and f"Checked by {manager_user.email}" in shown and "Hide checked rows" in shown

    bring(referrer, _now_minus(minutes=5))  # a new friend after the mark

    page = manager.get("/admin/checks").get_data(as_text=True)
    assert "Burst Bo" in page and f"Checked before by {manager_user.email}" in page and "newer evidence" in page
    assert "Mark as checked" in page


@pytest.mark.parametrize("checked, heading, toggle", [
    ("", "0 rows to check", "1 row marked as checked is hidden until newer evidence appears."),
    ("1", "1 row to check", "Rows marked as checked are shown."),
])
def test_marking_with_htmx_sends_the_page_counts_out_of_band(manager, make_patient, bring, checked, heading, toggle):
    """The heading and the hidden-rows line are outside the swapped row: without them in the answer they kept the
    numbers of before the mark until a reload."""
    referrer, newest = _burst(make_patient, bring)
    page = manager.get("/admin/checks").get_data(as_text=True)
    assert '<h2 id="checks-title">1 row to check</h2>' in page and '<div id="checked-toggle"></div>' in page

    answer = manager.post("/admin/checks/mark", {"rule": "burst", "referrer": str(referrer.id), "staff": "",
                                                 "evidence": str(newest), "checked": checked}, htmx=True)

    body = answer.get_data(as_text=True)
    assert answer.status_code == 200 and body.lstrip().startswith(f'<tr id="check-burst-r{referrer.id}"')
    assert f'<h2 id="checks-title" hx-swap-oob="true">{heading}</h2>' in body.split("<template>")[1]
    assert '<div id="checked-toggle" hx-swap-oob="true">' in body and toggle in body
    reloaded = manager.get(f"/admin/checks?checked={checked}").get_data(as_text=True)
    assert f'<h2 id="checks-title">{heading}</h2>' in reloaded and toggle in reloaded


def test_marking_without_htmx_comes_back_to_the_page_with_its_filters(manager, make_patient, bring):
    referrer, newest = _burst(make_patient, bring)
    today = utcnow().date()
    response = manager.post("/admin/checks/mark", {"rule": "burst", "referrer": str(referrer.id),
                                                   "evidence": str(newest), "from": (today - timedelta(days=9))
                                                   .isoformat(), "to": today.isoformat(), "checked": "1"})
    assert response.status_code == 303
    assert "/admin/checks?" in response.location and "checked=1" in response.location
    assert f"from={(today - timedelta(days=9)).isoformat()}" in response.location


def test_a_double_click_records_one_mark_and_both_answers_show_the_row(manager, make_patient, bring):
    referrer, newest = _burst(make_patient, bring)
    form = {"rule": "burst", "referrer": str(referrer.id), "evidence": str(newest)}
    answers = [manager.post("/admin/checks/mark", form, htmx=True) for _click in range(2)]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert all("Checked by" in answer.get_data(as_text=True) for answer in answers)
    assert len(_marks()) == 1


@pytest.mark.parametrize("form, status, message", [
    ({"rule": "nonsense"}, 400, "There is no such rule"),
    ({"referrer": "x"}, 400, "This row was not sent as the page made it"),
    ({"referrer": "99999999"}, 404, "There is no such row to check"),
    ({"evidence": ""}, 400, "This row was not sent as the page made it"),
    ({"staff": "1"}, 400, "This row was not sent as the page made it"),
    ({"note": "n" * 5000}, 422, "Note can be at most 200 characters."),
])
@pytest.mark.parametrize("htmx", [False, True])
def test_bad_marks_on_the_page_get_a_clear_4xx(manager, make_patient, bring, form, status, message, htmx):
    referrer, newest = _burst(make_patient, bring)
    sent = {"rule": "burst", "referrer": str(referrer.id), "staff": "", "evidence": str(newest), **form}
    response = manager.post("/admin/checks/mark", sent, htmx=htmx)
    body = response.get_data(as_text=True)
    assert response.status_code == status and message in body
    if status == 422:  # the row is drawn again with the message, its form still there
        assert f'id="check-burst-r{referrer.id}"' in body and "Mark as checked" in body
    assert _marks() == []


def test_desk_staff_may_not_mark_and_a_post_needs_its_csrf_token(desk, manager, make_patient, bring):
    referrer, newest = _burst(make_patient, bring)
    form = {"rule": "burst", "referrer": str(referrer.id), "evidence": str(newest)}
    assert desk.post("/admin/checks/mark", form).status_code == 403
    assert manager.post("/admin/checks/mark", form, csrf=False).status_code == 400
    assert _marks() == []


def test_the_export_keeps_checked_rows_and_says_so(manager, make_patient, bring, manager_actor, manager_user):
    checked, newest = _burst(make_patient, bring)
    fresh, _newest = _burst(make_patient, bring, name="Fresh Fu", phone="13822223333")
    referral_checks.mark_checked("burst", checked.id, None, newest, "=cmd()", manager_actor)

    response = manager.get("/admin/exports/checks.csv")

    rows = {row["referrer"]: row for row in csv.DictReader(io.StringIO(response.get_data(as_text=True)
                                                                       .lstrip("\ufeff")))}
    assert (rows["Burst Bo"]["checked"], rows["Burst Bo"]["checked by"]) == ("yes", manager_user.email)
    assert rows["Burst Bo"]["check note"] == "'=cmd()"  # a formula typed as a note is not run by the spreadsheet
    assert (rows["Fresh Fu"]["checked"], rows["Fresh Fu"]["check note"]) == ("", "")


def test_erasing_the_referrer_blanks_the_marks_note_and_keeps_the_flag_checked(
        make_patient, bring, manager_actor):
    referrer = make_patient(full_name="Bo")[0]
    referrals = [bring(referrer, DAY + timedelta(hours=hours)) for hours in (0, 1, 2)]
    referral_checks.mark_checked("burst", referrer.id, None, referrals[-1], "Bo's sisters", manager_actor)

    erasure.erase_patient(referrer.id, "patient_request", manager_actor)

    mark = db.session.scalars(select(CheckMark)).one()
    assert mark.note is None and mark.referrer_id == referrer.id
    [check] = referral_checks.with_marks(referral_checks.bursts(APRIL))
    assert check.checked
