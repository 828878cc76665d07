"""The manager's dashboard, CSV exports and branches, checked against a hand-computed programme.

The fixture builds eight referrals through the desk's own services (redemption, card activation,
milestones, spends, a reversal) on a clock stopped at fixed moments in March–May 2026 (the audit
log is append-only, so its events must be written at the right time), then moves the other rows'
timestamps to the moments in the table.
The clinic is in Asia/Shanghai (UTC+8): "April" is [2026-03-31 16:00, 2026-04-30 16:00) UTC.

    referral  referrer  friend registered (UTC)  branch  card  visited  paid          notes
    1         王丽      2026-04-02 02:00           North         yes      yes ¥500
    2         王丽      2026-03-31 17:00           North         yes               local 1 April
    3         王丽      2026-04-10 03:00           South   yes   yes      yes (no amount)
    4         Bob Tan   2026-04-15 03:00           South         -        -            a North desk on a South shift
    5         Bob Tan   2026-04-20 03:00           North         yes      yes ¥300     reversed
    6         Bob Tan   2026-03-20 03:00           North         yes      yes ¥700     March
    7         Carl Lim  2026-04-30 15:59           South                               local 30 April 23:59
    8         Carl Lim  2026-04-30 16:00           South                               local 1 May
"""

from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from unittest.mock import patch
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Branch, Card, CardBatch, IssuedCode, Patient, Referral, Staff, Voucher
from clinic.models import _time
from clinic.models._time import utcnow
from clinic.services import branches, cards, milestones, redemption, reports, vouchers
from clinic.services.codes import generate_bearer_code
from clinic.services.errors import Refused
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.transaction import Actor, atomic
from tests.conftest import PASSWORD

SHANGHAI = ZoneInfo("Asia/Shanghai")
APRIL = {"from": "2026-04-01", "to": "2026-04-30"}
IN_APRIL = datetime(2026, 4, 12, 4, 0)
REDEEMED_AT = {6: datetime(2026, 3, 20, 3, 0), 8: datetime(2026, 4, 30, 16, 0)}  # the rest IN_APRIL
FAR_FUTURE = timedelta(days=3650)
CREATED = {1: "2026-04-02 02:00", 2: "2026-03-31 17:00", 3: "2026-04-10 03:00", 4: "2026-04-15 03:00",
           5: "2026-04-20 03:00", 6: "2026-03-20 03:00", 7: "2026-04-30 15:59", 8: "2026-04-30 16:00"}
FORMULA_NAME = '=HYPERLINK("http://evil.example","click")'


@dataclass
class Programme:
    north: int
    south: int
    desk_north: int
    desk_south: int
    referrers: dict[str, int]
    referrals: dict[int, int]  # fixture number -> referral id


@contextmanager
def clock_at(moment: datetime):
    """Run the block as if it were ``moment`` (naive UTC) for every ``utcnow()`` in the app."""

    class Stopped(datetime):
        @classmethod
        def now(cls, tz=None):
            return moment.replace(tzinfo=timezone.utc).astimezone(tz) if tz else moment

    with patch.object(_time, "datetime", Stopped):
        yield


def april(branch_id: int | None = None) -> reports.Scope:
    return reports.Scope.for_days(date(2026, 4, 1), date(2026, 4, 30), SHANGHAI, branch_id)


def _card_for(patient_id: int, actor: Actor) -> str:
    """A printed card, made directly (printing the PDF is the card tests' business), activated at discharge."""
    code = generate_bearer_code()
    with atomic():
        batch = CardBatch(size=1, status="done")
        db.session.add(batch)
        db.session.flush()
        db.session.add(IssuedCode(code=code, kind="card"))
        db.session.add(Card(batch_id=batch.id, serial=f"{batch.label}-0001", code=code))
        serial = f"{batch.label}-0001"
    cards.activate_card(serial, patient_id, actor)
    return code


@pytest.fixture
def programme(app, make_staff, manager_user) -> Programme:
    with clock_at(IN_APRIL):
        north = branches.create_branch("North 北院", "1 North Road", Actor()).id
        south = branches.create_branch("South", "", Actor()).id
        desk_north = make_staff(email="north@example.com").id
        desk_south = make_staff(email="south@example.com").id
        branches.assign_branches({desk_north: north, desk_south: south}, Actor())
        as_north = Actor(staff_id=desk_north, branch_id=north)
        as_south = Actor(staff_id=desk_south, branch_id=south)
        north_on_south_shift = Actor(staff_id=desk_north, branch_id=south)
        manager = Actor(staff_id=manager_user.id)

        wang = enrol_patient(PatientDetails(full_name="王丽", phone="13800000001"), as_north)[0]
        bob = enrol_patient(PatientDetails(full_name="Bob Tan", phone="+6591234567"), as_north)[0]
        carl = enrol_patient(PatientDetails(full_name="Carl Lim", phone="13800000003"), as_south)[0]
        card_code = _card_for(wang.id, as_south)

        codes = {1: wang.personal_code, 2: wang.personal_code, 3: card_code, 4: bob.personal_code,
                 5: bob.personal_code, 6: bob.personal_code, 7: carl.personal_code, 8: carl.personal_code}
        names = {1: "Friend One", 2: FORMULA_NAME, 3: "李四", 4: "Friend Four", 5: "Friend Five", 6: "Friend Six",
                 7: "Friend Seven", 8: "Friend Eight"}
        actors = {1: as_north, 2: as_north, 3: as_south, 4: north_on_south_shift, 5: as_north, 6: as_north,
                  7: as_south, 8: as_south}
        results = {}
        for n in codes:
            with clock_at(REDEEMED_AT.get(n, IN_APRIL)):
                details = PatientDetails(full_name=names[n], phone=f"1390000000{n}")
                results[n] = redemption.redeem_code(codes[n], details, actors[n])
        with pytest.raises(Refused):
            redemption.redeem_code("not a code", PatientDetails(full_name="Nobody"), as_south)
        friend = {n: result.friend.id for n, result in results.items()}
        voucher = {(n, side): getattr(result, f"{side}_voucher").id for n, result in results.items()
                   for side in ("referrer", "friend")}
        codes_of = {key: db.session.get(Voucher, voucher_id).code for key, voucher_id in voucher.items()}

        milestones.record_visit(friend[1], as_north)
        milestones.record_payment(friend[1], 50000, as_north)
        milestones.record_visit(friend[2], as_north)
        milestones.record_visit(friend[3], as_south)
        milestones.record_payment(friend[3], None, as_south)
        milestones.record_visit(friend[5], as_north)
        milestones.record_payment(friend[5], 30000, as_north)
        milestones.record_payment(friend[6], 70000, as_north)  # a payment implies the visit
        vouchers.spend_voucher(codes_of[1, "friend"], as_north)
        vouchers.spend_voucher(codes_of[6, "referrer"], as_north)
        with clock_at(datetime(2026, 5, 2, 5, 0)):
            vouchers.spend_voucher(codes_of[2, "referrer"], as_south)
        milestones.reverse_referral(results[5].referral.id, "Refunded: treatment cancelled", manager)

    referral_ids = {n: result.referral.id for n, result in results.items()}
    with atomic():
        for patient_id in (wang.id, bob.id, carl.id):
            db.session.get(Patient, patient_id).enrolled_at = datetime(2026, 3, 1, 2, 0)
        for n, text in CREATED.items():
            referral = db.session.get(Referral, referral_ids[n])
            created = datetime.fromisoformat(text)
            referral.created_at = created
            referral.friend.enrolled_at = created
            if referral.visited_at:
                referral.visited_at = created + timedelta(days=1)
            if referral.paid_at:
                referral.paid_at = created + timedelta(days=2)
            for v in referral.vouchers:
                v.issued_at, v.expires_at = created, created + timedelta(days=90)
    with atomic():
        def set_voucher(n, side, **values):
            v = db.session.get(Voucher, voucher[n, side])
            for name, value in values.items():
                setattr(v, name, value)

        far = utcnow() + FAR_FUTURE
        for n, side in ((1, "referrer"), (2, "friend"), (3, "referrer"), (4, "referrer"), (5, "referrer"),
                        (7, "friend")):
            set_voucher(n, side, expires_at=far)  # 5's was voided by the reversal: no liability
        set_voucher(1, "friend", spent_at=datetime(2026, 4, 3, 5, 0), expires_at=far)
        set_voucher(6, "referrer", spent_at=datetime(2026, 4, 6, 5, 0), expires_at=datetime(2026, 4, 9))
        set_voucher(2, "referrer", spent_at=datetime(2026, 5, 2, 5, 0))
        set_voucher(4, "friend", expires_at=datetime(2026, 4, 20))
        set_voucher(6, "friend", expires_at=datetime(2026, 4, 9))

    return Programme(north, south, desk_north, desk_south, {"wang": wang.id, "bob": bob.id, "carl": carl.id},
                     referral_ids)


def test_the_period_is_the_clinics_calendar_days():
    scope = april()
    assert (scope.start, scope.end) == (datetime(2026, 3, 31, 16, 0), datetime(2026, 4, 30, 16, 0))
    assert (scope.first_day, scope.last_day) == (date(2026, 4, 1), date(2026, 4, 30))


@pytest.mark.parametrize("branch, expected", [
    (None, dict(registered=5, visited=3, paid=2, paid_with_card=1, paid_amount=50000,
                visited_percent=60.0, paid_percent=40.0, card_percent=50.0, code_percent=50.0)),
    ("north", dict(registered=2, visited=2, paid=1, paid_with_card=0, paid_amount=50000,
                   visited_percent=100.0, paid_percent=50.0, card_percent=0.0, code_percent=100.0)),
    ("south", dict(registered=3, visited=1, paid=1, paid_with_card=1, paid_amount=0,
                   visited_percent=33.3, paid_percent=33.3, card_percent=100.0, code_percent=0.0)),
])
def test_the_funnel_and_card_share(programme, branch, expected):
    funnel = reports.funnel(april(getattr(programme, branch) if branch else None))
    assert {name: getattr(funnel, name) for name in expected} == expected


def test_an_empty_period_has_no_percentages(programme):
    funnel = reports.funnel(reports.Scope.for_days(date(2026, 1, 1), date(2026, 1, 31), SHANGHAI))
    assert funnel.registered == 0
    assert (funnel.visited_percent, funnel.paid_percent, funnel.card_percent) == (None, None, None)


@pytest.mark.parametrize("branch, expected", [
    (None, reports.VoucherFigures(issued=12, spent=2, expired=2, liability={"CNY": 60000}, services_outstanding=2)),
    ("north", reports.VoucherFigures(issued=6, spent=2, expired=1, liability={"CNY": 20000}, services_outstanding=1)),
    ("south", reports.VoucherFigures(issued=6, spent=0, expired=1, liability={"CNY": 40000}, services_outstanding=1)),
])
def test_vouchers_issued_spent_expired_and_the_liability(programme, branch, expected):
    assert reports.voucher_figures(april(getattr(programme, branch) if branch else None)) == expected


def test_expired_means_expired_by_now(programme):
    """A voucher that expires later in the period has not expired yet."""
    scope = april()
    assert reports.voucher_figures(scope, now=datetime(2026, 4, 15)).expired == 1  # 6's friend voucher, not 4's


def test_a_voucher_counts_as_expired_in_the_period_of_its_last_valid_day(programme):
    """Valid until 30 April, a voucher ends at the midnight that starts May: April's figure counts it, May's not."""
    may = reports.Scope.for_days(date(2026, 5, 1), date(2026, 5, 31), SHANGHAI)
    expired_in_may = reports.voucher_figures(may).expired
    with atomic():
        db.session.scalar(select(Voucher).where(Voucher.referral_id == programme.referrals[4],
                                                Voucher.beneficiary == "friend")).expires_at = april().end
    assert reports.voucher_figures(april()).expired == 2  # 6's friend voucher and this one
    assert reports.voucher_figures(april(), now=april().end - timedelta(seconds=1)).expired == 1
    assert reports.voucher_figures(may).expired == expired_in_may


def test_top_referrers_by_friends_then_paid_with_full_names(programme):
    rows = [(r.full_name, r.registered, r.paid) for r in reports.top_referrers(april())]
    assert rows == [("王丽", 3, 2), ("Bob Tan", 1, 0), ("Carl Lim", 1, 0)]
    assert [(r.full_name, r.registered, r.paid) for r in reports.top_referrers(april(programme.north))] == [
        ("王丽", 2, 1)]
    assert [(r.full_name, r.registered, r.paid) for r in reports.top_referrers(april(programme.south))] == [
        ("王丽", 1, 1), ("Bob Tan", 1, 0), ("Carl Lim", 1, 0)]


def _staff_table(scope) -> list[tuple]:
    return [(row.email, row.counts, row.total) for row in reports.staff_attribution(scope)]


def counts(enrolments=0, activations=0, redemptions=0, visits=0, payments=0, spends=0) -> dict:
    return dict(enrolments=enrolments, activations=activations, redemptions=redemptions, visits=visits,
                payments=payments, spends=spends)


def test_the_staff_leaderboard_counts_what_each_person_did_where(programme):
    assert _staff_table(april()) == [
        ("north@example.com", counts(enrolments=2, redemptions=4, visits=3, payments=3, spends=2), 14),
        ("south@example.com", counts(enrolments=1, activations=1, redemptions=2, visits=1, payments=1), 6),
    ]
    assert _staff_table(april(programme.north)) == [
        ("north@example.com", counts(enrolments=2, redemptions=3, visits=3, payments=3, spends=2), 13)]
    assert _staff_table(april(programme.south)) == [
        ("south@example.com", counts(enrolments=1, activations=1, redemptions=2, visits=1, payments=1), 6),
        ("north@example.com", counts(redemptions=1), 1),
    ]


def test_referrals_per_day_in_the_clinics_days(programme):
    series = reports.referrals_over_time(april())
    assert series.unit == "day" and len(series.buckets) == 30
    registered = {b.first_day.day: b.registered for b in series.buckets if b.registered}
    paid = {b.first_day.day: b.paid for b in series.buckets if b.paid}
    assert registered == {1: 1, 2: 1, 10: 1, 15: 1, 30: 1}
    assert paid == {2: 1, 10: 1}


def test_longer_periods_are_charted_by_week_then_by_month(programme):
    weeks = reports.referrals_over_time(reports.Scope.for_days(date(2026, 3, 1), date(2026, 5, 31), SHANGHAI))
    assert weeks.unit == "week" and len(weeks.buckets) == 14
    assert weeks.buckets[0].first_day == date(2026, 3, 1) and weeks.buckets[-1].last_day == date(2026, 5, 31)
    assert sum(b.registered for b in weeks.buckets) == 7  # all but the reversed one
    months = reports.referrals_over_time(reports.Scope.for_days(date(2026, 1, 1), date(2026, 12, 31), SHANGHAI))
    assert months.unit == "month" and [b.registered for b in months.buckets] == [0, 0, 1, 5, 1, 0, 0, 0, 0, 0, 0, 0]
    assert months.buckets[3].label == "2026-04-01 – 2026-04-30"


def stat(page: str, name: str) -> str:
    return re.search(rf'id="stat-{name}">(.*?)</span>', page, re.S).group(1).strip()


def test_the_dashboard_shows_the_figures_and_charts(manager, programme):
    response = manager.get("/admin/dashboard?from=2026-04-01&to=2026-04-30")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert {name: stat(page, name) for name in ("registered", "visited", "paid", "issued", "spent", "expired",
                                                 "liability", "paid-amount")} == {
        "registered": "5", "visited": "3", "paid": "2", "issued": "12", "spent": "2", "expired": "2",
        "liability": "CN¥600.00", "paid-amount": "CN¥500.00"}
    assert "60% of those registered" in page and "40% of those registered" in page
    assert page.count('class="bar-registered"') == 5 and page.count('class="bar-paid"') == 2
    assert "王丽" in page and "north@example.com" in page
    assert "at any time" in page and "Reversed referrals" in page
    assert " style=" not in page and "<script>" not in page.split("</head>")[1]
    north = manager.get(f"/admin/dashboard?from=2026-04-01&to=2026-04-30&branch={programme.north}")
    assert stat(north.get_data(as_text=True), "registered") == "2"
    assert f'<option value="{programme.north}" selected>' in north.get_data(as_text=True)


def test_the_dashboard_defaults_to_this_month_in_the_clinics_zone(manager, programme):
    page = manager.get("/admin/dashboard").get_data(as_text=True)
    today = datetime.now(timezone.utc).astimezone(SHANGHAI).date()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    assert f'value="{first.isoformat()}"' in page and f'value="{last.isoformat()}"' in page


@pytest.mark.parametrize("query, message", [
    ("from=2026-13-01", "is not a date"),
    ("from=yesterday", "is not a date"),
    ("to=2026-02-30", "is not a date"),
    ("from=0001-01-01&to=0001-01-31", "between 1900 and 2999"),
    ("from=9999-12-01&to=9999-12-31", "between 1900 and 2999"),
    ("from=2026-04-30&to=2026-04-01", "before the start date"),
    ("from=1990-01-01&to=2026-01-01", "at most ten years"),
    ("branch=north", "no such branch"),
    ("branch=99999", "no such branch"),
    ("branch=" + "9" * 30, "no such branch"),
    ("branch=%C2%B2", "no such branch"),
])
def test_bad_filters_re_render_with_a_message_and_400(manager, programme, query, message):
    response = manager.get(f"/admin/dashboard?{query}")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page and 'name="from"' in page
    for kind in ("referrals", "vouchers", "patients", "campaigns"):
        export = manager.get(f"/admin/exports/{kind}.csv?{query}")
        assert export.status_code == 400 and message in export.get_data(as_text=True)


def read_csv(response) -> list[dict]:
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


def test_the_referrals_export_opens_in_a_spreadsheet(manager, programme, manager_user):
    response = manager.get("/admin/exports/referrals.csv?from=2026-04-01&to=2026-04-30")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Content-Disposition"] == 'attachment; filename="referrals-2026-04-01-to-2026-04-30.csv"'
    rows = read_csv(response)
    assert [int(row["referral id"]) for row in rows] == [programme.referrals[n] for n in (2, 1, 3, 4, 5, 7)]
    by_number = {n: next(r for r in rows if int(r["referral id"]) == programme.referrals[n]) for n in (1, 2, 3, 5, 7)}
    assert by_number[1]["referrer"] == "王丽" and by_number[3]["friend"] == "李四"
    assert by_number[1]["registered"] == "2026-04-02 10:00" and by_number[7]["registered"] == "2026-04-30 23:59"
    assert (by_number[1]["amount paid"], by_number[1]["currency"]) == ("500.00", "CNY")
    assert (by_number[3]["came with"], by_number[3]["card serial"]) == ("card", "B001-0001")
    assert by_number[1]["friend phone"] == "13900000001" and by_number[1]["branch"] == "North 北院"
    assert by_number[5]["status"] == "reversed" and by_number[5]["reversal reason"] == "Refunded: treatment cancelled"
    assert by_number[2]["friend"] == "'" + FORMULA_NAME
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "export.referrals"))
    assert event.staff_id == manager_user.id and event.details["rows"] == 6
    assert event.details["first_day"] == "2026-04-01"


def test_no_cell_can_run_as_a_formula(manager, programme):
    for kind in ("referrals", "vouchers", "patients", "campaigns"):
        response = manager.get(f"/admin/exports/{kind}.csv?from=2026-01-01&to=2026-12-31")
        for row in csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))):
            assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row
    patients = read_csv(manager.get("/admin/exports/patients.csv?from=2026-01-01&to=2026-12-31"))
    assert next(p for p in patients if p["full name"] == "Bob Tan")["phone"] == "'+6591234567"


def test_the_vouchers_export_never_holds_a_whole_code(manager, programme):
    rows = read_csv(manager.get(f"/admin/exports/vouchers.csv?from=2026-04-01&to=2026-04-30&branch={programme.south}"))
    assert len(rows) == 6
    text = manager.get("/admin/exports/vouchers.csv?from=2026-04-01&to=2026-04-30").get_data(as_text=True)
    for code in db.session.scalars(select(Voucher.code)):
        assert code not in text
    money = [r for r in rows if r["kind"] == "money"]
    assert {(r["amount"], r["currency"]) for r in money} == {("200.00", "CNY")}
    assert {r["status"] for r in rows} == {"active", "expired"}


def test_the_patients_export_has_phones_but_no_progress_tokens(manager, programme):
    rows = read_csv(manager.get(f"/admin/exports/patients.csv?from=2026-04-01&to=2026-04-30&branch={programme.north}"))
    assert [r["full name"] for r in rows] == ["'" + FORMULA_NAME, "Friend One", "Friend Five"]
    assert rows[1]["referred by"] == "王丽" and rows[1]["phone"] == "13900000001"
    everyone = read_csv(manager.get("/admin/exports/patients.csv?from=2026-03-01&to=2026-03-31"))
    assert {r["full name"]: r["friends referred"] for r in everyone} == {
        "王丽": "3", "Bob Tan": "2", "Carl Lim": "2", "Friend Six": "0"}
    text = manager.get("/admin/exports/patients.csv?from=2026-01-01&to=2026-12-31").get_data(as_text=True)
    assert "progress" not in text.lower()
    for token_hash in db.session.scalars(select(Patient.progress_token_hash)):
        assert token_hash not in text


@pytest.mark.parametrize("url", ["/admin/dashboard", "/admin/exports/referrals.csv", "/admin/exports/vouchers.csv",
                                 "/admin/exports/patients.csv", "/admin/exports/campaigns.csv",
                                 "/admin/branches"])
def test_desk_staff_get_403(desk, url):
    assert desk.get(url).status_code == 403
    assert desk.post("/admin/branches", {"name": "Sneaky"}).status_code == 403
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action.like("export.%"))) == 0


def test_an_unknown_export_is_404(manager):
    assert manager.get("/admin/exports/staff.csv").status_code == 404


def test_a_manager_adds_renames_and_staffs_branches(manager, desk_user, manager_user, referrer):
    assert manager.post("/admin/branches", {"name": "  East   Wing ", "address": "2 East Street"}).status_code == 303
    east = db.session.scalar(select(Branch).where(Branch.name == "East Wing"))
    assert east.address == "2 East Street"
    response = manager.post(f"/admin/branches/{east.id}", {"name": "东院 East", "address": ""})
    assert response.status_code == 303
    assert manager.get("/admin/branches").get_data(as_text=True).count("东院 East") >= 2
    response = manager.post("/admin/branches/staff", {f"branch-{desk_user.id}": str(east.id),
                                                      f"branch-{manager_user.id}": ""})
    assert response.status_code == 303
    assert db.session.get(Staff, desk_user.id).branch_id == east.id
    actions = list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.action.in_(
        ["branch.created", "branch.changed", "staff.branch_assigned"])).order_by(AuditEvent.id)))
    assert actions == ["branch.created", "branch.changed", "staff.branch_assigned"]
    assert "Branch changed" in manager.get("/admin/audit").get_data(as_text=True)


def test_what_a_desk_does_records_its_branch(browser, desk_user, referrer, make_staff):
    east = branches.create_branch("East", "", Actor())
    branches.assign_branches({desk_user.id: east.id}, Actor())
    browser.login(desk_user.email)
    response = browser.post("/desk/redeem", {"code": referrer.personal_code, "full_name": "Chen Jie",
                                              "phone": "13933334444"})
    assert response.status_code == 303, response.get_data(as_text=True)
    referral = db.session.scalar(select(Referral))
    assert referral.branch_id == east.id
    assert reports.funnel(reports.Scope(datetime(2000, 1, 1), datetime(2100, 1, 1), east.id)).registered == 1


@pytest.mark.parametrize("form, message", [
    ({"name": ""}, "Enter the branch name"),
    ({"name": "   "}, "Enter the branch name"),
    ({"name": "n" * 81}, "at most 80"),
    ({"name": "North\u202eevil"}, "cannot be printed"),
    ({"name": "Tab\x07bell"}, "cannot be printed"),
    ({"name": "north 北院"}, "already a branch called North 北院"),
    ({"name": "Fine", "address": "a" * 301}, "at most 300"),
    ({"name": "<script>alert(1)</script>", "address": "\u0000"}, "cannot be printed"),
])
def test_bad_branch_input_is_refused_with_422(manager, programme, form, message):
    before = db.session.scalar(select(func.count()).select_from(Branch))
    response = manager.post("/admin/branches", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page and "<script>alert(1)</script>" not in page
    assert db.session.scalar(select(func.count()).select_from(Branch)) == before
    renamed = manager.post(f"/admin/branches/{programme.south}", {"address": "", **form})
    assert renamed.status_code == 422 and message in renamed.get_data(as_text=True)
    assert db.session.get(Branch, programme.south).name == "South"


@pytest.mark.parametrize("value", ["99999", "north", "-1", "1" * 20, "²"])
def test_assigning_an_unknown_branch_is_refused_with_422(manager, programme, value):
    response = manager.post("/admin/branches/staff", {f"branch-{programme.desk_north}": str(programme.south),
                                                      f"branch-{programme.desk_south}": value})
    assert response.status_code == 422
    assert "Pick one of the listed branches" in response.get_data(as_text=True)
    assert db.session.get(Staff, programme.desk_north).branch_id == programme.north  # all or nothing


@pytest.mark.parametrize("extra", [lambda staff: {f"branch-0{staff}": ""}, lambda staff: {"branch-2147483648": ""},
                                   lambda staff: {"branch-x": ""}, lambda staff: {f"branch-{staff}": ["", ""]}])
def test_a_staff_form_not_as_the_page_made_it_is_refused_whole(manager, programme, extra):
    """branch-02 beside branch-2, a repeated field, an id no account can have: which value counted was left to the
    order of the fields, or the field was dropped without a word; now 422 and nothing changes."""
    form = {f"branch-{programme.desk_north}": str(programme.south), **extra(programme.desk_north)}
    response = manager.post("/admin/branches/staff", form)
    assert response.status_code == 422
    assert "not sent as the page made it" in response.get_data(as_text=True)
    assert db.session.get(Staff, programme.desk_north).branch_id == programme.north


def test_a_branch_for_a_staff_member_the_page_does_not_list_is_said_above_the_form(manager, programme):
    """The error names branch-0, which no select on the page is: it must still be said (it was said nowhere)."""
    response = manager.post("/admin/branches/staff", {"branch-0": "-1"})
    assert response.status_code == 422
    assert "Pick one of the listed branches." in response.get_data(as_text=True)
    assert db.session.get(Staff, programme.desk_north).branch_id == programme.north


def test_renaming_an_unknown_branch_is_404(manager):
    assert manager.get("/admin/branches/999").status_code == 404
    assert manager.post("/admin/branches/999", {"name": "x"}).status_code == 404


def test_branches_from_the_command_line(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-branch", "West 西院", "--address", "9 West Road"])
    assert result.exit_code == 0 and "Created branch West 西院" in result.output
    again = runner.invoke(args=["create-branch", "west 西院"])
    assert again.exit_code != 0 and "already a branch" in again.output
    user = runner.invoke(args=["create-user", "nurse@example.com", "--branch", "WEST 西院", "--password", PASSWORD])
    assert user.exit_code == 0 and "at West 西院" in user.output, user.output
    staff = db.session.scalar(select(Staff).where(Staff.email == "nurse@example.com"))
    assert staff.branch.name == "West 西院"
    unknown = runner.invoke(args=["create-user", "x@example.com", "--branch", "Nowhere", "--password", PASSWORD])
    assert unknown.exit_code != 0 and "no branch called Nowhere" in unknown.output
    assert db.session.scalar(select(Staff).where(Staff.email == "x@example.com")) is None
