"""Tiers and honours: thresholds and windows, rankings, the public leaderboard, certificates, and their pages."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Branch, Campaign, Patient, Referral, Reward, Tier
from clinic.models._time import utcnow
from clinic.services import clinic_settings, milestones, redemption, tiers
from clinic.services.patients import FieldErrors
from clinic.services.transaction import Actor, atomic
from tests.conftest import friend
from tests.printcheck import pdf_text

numbers = count(10_000)
MANAGER = Actor()


def refer(referrer: Patient, actor: Actor, how_many: int = 1, name: str = "Friend") -> list[int]:
    """``how_many`` friends redeem the referrer's personal code; returns the referral ids."""
    ids = []
    for _ in range(how_many):
        number = next(numbers)
        result = redemption.redeem_code(referrer.personal_code,
                                        friend(full_name=f"{name} {number}", phone=f"1390{number:07d}"), actor)
        ids.append(result.referral.id)
    return ids


def set_referrals(ids: list[int], **values) -> None:
    with atomic():
        for referral_id in ids:
            referral = db.session.get(Referral, referral_id)
            for key, value in values.items():
                setattr(referral, key, value)


def pay(ids: list[int], at: datetime | None = None) -> None:
    set_referrals(ids, paid_at=at or utcnow())


def add_tier(name: str, threshold: int, window: int = 12, privileges: str = "") -> Tier:
    return tiers.create_tier(tiers.TierRules(name, threshold, window, privileges), MANAGER)


def tier_rows() -> list[tuple]:
    rows = [(t.name, t.min_paid_referrals, t.window_months, t.privileges) for t in db.session.scalars(
        select(Tier).order_by(Tier.id))]
    db.session.rollback()
    return rows


def audit_count(action: str) -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


@pytest.mark.parametrize(("paid", "current", "message"), [
    (3, "Silver", "1 more friend to VIP"),  # one below VIP
    (4, "VIP", None),  # exactly at
    (5, "VIP", None),  # one above
    (1, None, "1 more friend to Silver"),  # one below the first tier
    (0, None, "2 more friends to Silver"),
])
def test_the_tier_is_the_highest_threshold_met(referrer, actor, paid, current, message):
    add_tier("VIP", 4)
    add_tier("Silver", 2)
    ids = refer(referrer, actor, 5)
    pay(ids[:paid])
    status = tiers.tier_status(referrer.id)
    assert (status.current.name if status.current else None) == current
    assert status.next_message == message
    assert status.paid == paid
    if message:
        assert status.paid + status.more_to_next == status.next.min_paid_referrals


def test_without_tiers_there_is_no_tier_and_no_message(referrer, actor):
    pay(refer(referrer, actor, 2))
    status = tiers.tier_status(referrer.id)
    assert (status.current, status.next, status.more_to_next, status.next_message) == (None, None, None, None)
    assert status.paid == 2


def test_only_active_paid_referrals_in_the_window_count(referrer, actor):
    now = utcnow()
    registered, recent, old, reversed_, boundary, just_outside = refer(referrer, actor, 6)
    pay([recent], now - timedelta(days=330))  # 11 months ago
    pay([old], now - timedelta(days=400))  # 13 months ago
    pay([reversed_], now - timedelta(days=1))
    set_referrals([reversed_], status="reversed")
    start = tiers.window_start(now, 12)
    pay([boundary], start)
    pay([just_outside], start - timedelta(seconds=1))
    assert tiers.paid_referrals(referrer.id, now, 12) == 2  # recent and boundary
    assert tiers.paid_referrals(referrer.id, now, 24) == 4
    assert tiers.paid_referrals(referrer.id, now - timedelta(days=331), 12) == 3  # recent paid after that moment
    assert registered


@pytest.mark.parametrize(("moment", "months", "expected"), [
    (datetime(2026, 5, 15, 9, 30), 12, datetime(2025, 5, 15, 9, 30)),
    (datetime(2026, 3, 31, 23, 0), 1, datetime(2026, 2, 28, 23, 0)),
    (datetime(2024, 3, 31), 1, datetime(2024, 2, 29)),
    (datetime(2026, 1, 10), 13, datetime(2024, 12, 10)),
    (datetime(2026, 8, 31), 60, datetime(2021, 8, 31)),
])
def test_months_before_keeps_the_day_or_clamps_it(moment, months, expected):
    assert tiers.months_before(moment, months) == expected


def test_the_window_runs_on_the_clinic_calendar(app):
    # 2026-03-01 01:00 in Shanghai is 2026-02-28 17:00 UTC; twelve calendar months earlier is 2025-03-01 01:00 local.
    assert tiers.window_start(datetime(2026, 2, 28, 17, 0), 12) == datetime(2025, 2, 28, 17, 0)


def test_each_tier_counts_over_its_own_window(referrer, actor):
    add_tier("Sprinter", 2, window=1)
    add_tier("VIP", 3, window=12)
    ids = refer(referrer, actor, 3)
    now = utcnow()
    pay(ids[:2], now - timedelta(days=90))
    pay(ids[2:], now - timedelta(days=1))
    status = tiers.tier_status(referrer.id, now)
    assert status.current.name == "VIP"  # 3 in 12 months, although only 1 in the last month
    assert status.next is None


def test_tiers_reached_by_names_the_thresholds_just_crossed(referrer, actor):
    add_tier("Silver", 2)
    add_tier("VIP", 5)
    assert [t.name for t in tiers.tiers_reached_by(referrer.id, 4, 5)] == ["VIP"]
    assert [t.name for t in tiers.tiers_reached_by(referrer.id, 1, 5)] == ["Silver", "VIP"]
    assert tiers.tiers_reached_by(referrer.id, 5, 6) == []
    ids = refer(referrer, actor, 2)
    pay(ids[:1])
    before = tiers.paid_counts(referrer.id)
    pay(ids[1:])
    assert [t.name for t in tiers.tiers_reached_by(referrer.id, before)] == ["Silver"]


def test_a_payment_at_the_desk_audits_the_tier_reached(referrer, actor):
    add_tier("VIP", 2)
    first, second = refer(referrer, actor, 2)
    friends = [db.session.get(Referral, i).friend_id for i in (first, second)]
    milestones.record_payment(friends[0], None, actor)
    assert audit_count("tier.reached") == 0
    milestones.record_payment(friends[1], 50000, actor)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "tier.reached"))
    assert event.patient_id == referrer.id and event.details["tier"] == "VIP"


def test_two_payments_at_the_same_moment_announce_the_tier_once(app, referrer, actor, monkeypatch):
    """Each payment counts the referrer's paid friends as its transaction sees them: two at once, each seeing only
    itself, would both miss the threshold they cross together. The first payment waits (up to 2 s) before
    counting for the second to count too; the second may only count once the first has committed."""
    add_tier("VIP", 2)
    friends = [db.session.get(Referral, i).friend_id for i in refer(referrer, actor, 2)]
    db.session.rollback()
    real_reached, first_counting, second_counting = tiers.tiers_reached_by, threading.Event(), threading.Event()

    def tiers_reached_by(*args, **kwargs):
        if not first_counting.is_set():
            first_counting.set()
            second_counting.wait(2)
        else:
            second_counting.set()
        return real_reached(*args, **kwargs)

    monkeypatch.setattr(tiers, "tiers_reached_by", tiers_reached_by)
    errors = []

    def pay_friend(friend_id: int):
        with app.app_context():
            try:
                milestones.record_payment(friend_id, None, actor)
            except Exception as problem:  # noqa: BLE001 - reported below
                errors.append(problem)
            finally:
                db.session.remove()

    first = threading.Thread(target=pay_friend, args=(friends[0],))
    first.start()
    assert first_counting.wait(30)
    second = threading.Thread(target=pay_friend, args=(friends[1],))
    second.start()
    first.join(60)
    second.join(60)
    assert not errors
    assert audit_count("tier.reached") == 1


def test_tier_changes_are_validated_and_audited(app):
    tier = add_tier("VIP", 5, privileges="Priority booking\n\n  Free   parking ")
    assert tier.privileges == "Priority booking\n\nFree parking"
    tiers.update_tier(tier.id, tiers.TierRules("VIP", 6, 12, tier.privileges), MANAGER)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "tier.changed"))
    assert event.details["changes"] == {"min_paid_referrals": [5, 6]}
    tiers.delete_tier(tier.id, MANAGER)
    assert tier_rows() == []
    assert audit_count("tier.created") == audit_count("tier.deleted") == 1


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"name": ""}, "name", "Enter the tier name"),
    ({"name": "n" * 41}, "name", "at most 40"),
    ({"name": "VIP\u202e"}, "name", "cannot be printed"),
    ({"name": "vip"}, "name", "already a tier"),
    ({"min_paid_referrals": "0"}, "min_paid_referrals", "from 1 to 1000"),
    ({"min_paid_referrals": "1001"}, "min_paid_referrals", "from 1 to 1000"),
    ({"min_paid_referrals": "2.5"}, "min_paid_referrals", "whole number"),
    ({"min_paid_referrals": "5"}, "min_paid_referrals", "already starts at 5"),
    ({"window_months": "0"}, "window_months", "from 1 to 60"),
    ({"window_months": "61"}, "window_months", "from 1 to 60"),
    ({"window_months": "NaN"}, "window_months", "whole number"),
    ({"privileges": "p" * 1001}, "privileges", "at most 1000"),
])
def test_bad_tier_rules_are_refused_by_the_service(app, fields, field, message):
    add_tier("VIP", 5)
    values = {"name": "Gold", "min_paid_referrals": "3", "window_months": "12", "privileges": "", **fields}
    with pytest.raises(FieldErrors) as refused:
        tiers.create_tier(tiers.TierRules.from_form(**values), MANAGER)
    assert message in refused.value.errors[field]
    assert tier_rows() == [("VIP", 5, 12, "")]


def test_referrers_are_ranked_by_paid_then_registered_then_who_got_there_first(make_patient, actor):
    now = utcnow()
    ann, bob, cai, dan, eve = (make_patient(full_name=name)[0] for name in ("Ann", "Bob", "Cai", "Dan", "Eve"))
    pay(refer(ann, actor, 3), now - timedelta(days=3))
    pay(refer(bob, actor, 3)[:2], now - timedelta(days=1))  # as many paid as Cai and Dan, one more registered
    pay(refer(cai, actor, 2), now - timedelta(days=1))
    pay(refer(dan, actor, 2), now - timedelta(days=2))  # equal to Cai, but got there a day earlier
    pay(refer(eve, actor, 4), now - timedelta(days=60))  # paid before the period
    start, end = now - timedelta(days=30), now + timedelta(days=1)
    ranking = tiers.top_referrers(start, end)
    assert [(r.rank, r.patient.full_name, r.paid, r.registered) for r in ranking] == [
        (1, "Ann", 3, 3), (2, "Bob", 2, 3), (3, "Dan", 2, 2), (4, "Cai", 2, 2)]
    assert [r.patient.full_name for r in tiers.top_referrers(start, end, limit=2)] == ["Ann", "Bob"]
    assert tiers.referrer_of_period(start, end).patient.full_name == "Ann"
    assert tiers.referrer_of_period(now - timedelta(days=500), now - timedelta(days=400)) is None
    set_referrals(db.session.scalars(select(Referral.id).where(Referral.referrer_id == ann.id)).all()[:2],
                  status="reversed")
    assert tiers.referrer_of_period(start, end).patient.full_name == "Bob"


def test_a_branch_ranking_counts_only_that_branch_s_referrals(make_patient, actor):
    with atomic():
        north, south = Branch(name="North"), Branch(name="South")
        db.session.add_all([north, south])
    a, b = make_patient(full_name="Ann")[0], make_patient(full_name="Bob")[0]
    a_ids, b_ids = refer(a, actor, 3), refer(b, actor, 2)
    pay(a_ids + b_ids)
    set_referrals(a_ids[:1] + b_ids, branch_id=north.id)
    set_referrals(a_ids[1:], branch_id=south.id)
    start, end = utcnow() - timedelta(days=1), utcnow() + timedelta(days=1)
    assert [(r.patient.full_name, r.paid) for r in tiers.top_referrers(start, end)] == [("Ann", 3), ("Bob", 2)]
    assert [(r.patient.full_name, r.paid) for r in tiers.top_referrers(start, end, north.id)] == [
        ("Bob", 2), ("Ann", 1)]
    assert tiers.referrer_of_period(start, end, south.id).patient.full_name == "Ann"


def opt_in(patient: Patient) -> None:
    tiers.set_leaderboard_consent(patient.id, True, MANAGER)


def test_the_public_leaderboard_shows_only_those_who_agreed_masked(browser, make_patient, actor):
    wang = make_patient(full_name="王小明", phone="13800001111")[0]
    lee = make_patient(full_name="Lee Mei Ling", display_name="Mei Ling Lee")[0]
    hidden = make_patient(full_name="Hidden Person")[0]
    pay(refer(wang, actor, 2))
    pay(refer(lee, actor, 1))
    pay(refer(hidden, actor, 3))
    opt_in(wang)
    opt_in(lee)
    response = browser.get("/leaderboard")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert "Set-Cookie" not in response.headers
    page = response.get_data(as_text=True)
    assert page.index("王**") < page.index("Mei L. L.")
    for secret in ("王小明", "Lee Mei Ling", "Mei Ling Lee", "Hidden", "13800001111", wang.personal_code,
                   "<script"):
        assert secret not in page
    assert [e.rank for e in tiers.public_leaderboard()] == [1, 2]


def test_leaderboard_consent_from_the_patient_page_is_audited(desk, referrer):
    page = desk.get(f"/patients/{referrer.id}").get_data(as_text=True)
    assert "leaderboard-consent" in page and "Wang L." in page
    assert desk.post(f"/patients/{referrer.id}/leaderboard-consent", {"leaderboard_opt_in": "yes"}).status_code == 303
    assert db.session.get(Patient, referrer.id).leaderboard_opt_in is True
    assert desk.post(f"/patients/{referrer.id}/leaderboard-consent", {"leaderboard_opt_in": "maybe"}).status_code == 400
    assert desk.post(f"/patients/{referrer.id}/leaderboard-consent", {"leaderboard_opt_in": "no"}).status_code == 303
    db.session.rollback()
    assert db.session.get(Patient, referrer.id).leaderboard_opt_in is False
    assert audit_count("patient.leaderboard_consent") == 2
    assert desk.post("/patients/999999/leaderboard-consent", {"leaderboard_opt_in": "yes"}).status_code == 404


def test_the_certificate_prints_the_clinic_the_patient_and_the_honour(manager, make_patient, actor, tmp_path):
    clinic_settings.update_clinic({"name": "港湾口腔诊所"}, MANAGER)
    winner = make_patient(full_name="王小明")[0]
    runner_up = make_patient(full_name="Chen Jie", display_name="Jie")[0]
    pay(refer(winner, actor, 3))
    pay(refer(runner_up, actor, 1))
    year = tiers.this_year().first.year
    response = manager.get(f"/admin/honours/certificate.pdf?patient_id={winner.id}&year={year}")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    (tmp_path / "winner.pdf").write_bytes(response.data)
    text = " ".join(pdf_text(tmp_path / "winner.pdf").split())
    for expected in ("港湾口腔诊所", "王小明", f"Referrer of the year {year}", f"{year}年度最佳推荐人", "3 friends"):
        assert expected in text
    response = manager.get(f"/admin/honours/certificate.pdf?patient_id={runner_up.id}&year={year}")
    (tmp_path / "runner_up.pdf").write_bytes(response.data)
    text = " ".join(pdf_text(tmp_path / "runner_up.pdf").split())
    assert "Jie" in text and "Chen Jie" not in text and f"Top referrer {year}" in text and "1 friend " in text
    nobody = make_patient(full_name="No Friends")[0]
    assert manager.get(f"/admin/honours/certificate.pdf?patient_id={nobody.id}&year={year}").status_code == 404


def test_the_honours_page_shows_the_ranking_and_the_winner(manager, make_patient, actor):
    with atomic():
        db.session.add(Branch(name="East <b>"))
    a, b = make_patient(full_name="Ann <i>Lee</i>")[0], make_patient(full_name="Bob")[0]
    pay(refer(a, actor, 2))
    pay(refer(b, actor, 1))
    year = tiers.this_year().first.year
    page = manager.get(f"/admin/honours?year={year}").get_data(as_text=True)
    assert f"Referrer of the year {year}" in page
    assert page.index("Ann &lt;i&gt;Lee&lt;/i&gt;") < page.index("Bob")
    assert f"/admin/honours/certificate.pdf?patient_id={a.id}&amp;year={year}" in page
    assert "East &lt;b&gt;" in page and "<i>Lee" not in page
    page = manager.get(f"/admin/honours?year={year - 1}").get_data(as_text=True)
    assert "No referred friend paid in this period" in page


@pytest.mark.parametrize("query", ["year=abc", "year=1999", "from=2026-02-01", "from=2026-03-01&to=2026-02-01",
                                   "branch=999", "branch=x"])
def test_a_bad_honours_query_is_a_400_with_the_reason(manager, query):
    response = manager.get(f"/admin/honours?{query}")
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)


def test_manager_pages_are_403_for_desk_staff(desk, app):
    tier = add_tier("VIP", 5)
    for url in ("/admin/tiers", f"/admin/tiers/{tier.id}", "/admin/honours",
                "/admin/honours/certificate.pdf?patient_id=1&year=2026"):
        assert desk.get(url).status_code == 403, url
    for url in ("/admin/tiers", f"/admin/tiers/{tier.id}", f"/admin/tiers/{tier.id}/delete"):
        assert desk.post(url, {"name": "Hack", "min_paid_referrals": "1", "window_months": "1"}).status_code == 403
    assert tier_rows() == [("VIP", 5, 12, "")]


def test_a_manager_adds_edits_and_deletes_tiers(manager):
    response = manager.post("/admin/tiers", {"name": "VIP", "min_paid_referrals": "5", "window_months": "12",
                                             "privileges": "Priority booking\r\nFree parking"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/tiers")
    assert tier_rows() == [("VIP", 5, 12, "Priority booking\nFree parking")]
    tier_id = db.session.scalar(select(Tier.id))
    page = manager.get("/admin/tiers").get_data(as_text=True)
    assert "VIP" in page and "5 or more" in page
    form = manager.get(f"/admin/tiers/{tier_id}").get_data(as_text=True)
    assert 'value="VIP"' in form and "Delete tier VIP" in form
    assert manager.post(f"/admin/tiers/{tier_id}", {"name": "VIP 会员", "min_paid_referrals": "6",
                                                     "window_months": "24", "privileges": ""}).status_code == 303
    assert tier_rows() == [("VIP 会员", 6, 24, "")]
    assert manager.post(f"/admin/tiers/{tier_id}/delete").status_code == 303
    assert tier_rows() == []
    assert manager.get(f"/admin/tiers/{tier_id}").status_code == 404
    assert manager.post(f"/admin/tiers/{tier_id}/delete").status_code == 404
    assert [audit_count(a) for a in ("tier.created", "tier.changed", "tier.deleted")] == [1, 1, 1]


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": ""}, "Enter the tier name"),
    ({"name": "<script>alert(1)</script>" * 3}, "at most 40"),
    ({"min_paid_referrals": "-1"}, "from 1 to 1000"),
    ({"min_paid_referrals": "1e309"}, "whole number"),
    ({"window_months": "100"}, "from 1 to 60"),
    ({"privileges": "x" * 1001}, "at most 1000"),
    ({"name": "Gold"}, "already a tier"),
])
def test_bad_tier_input_re_renders_with_422_and_changes_nothing(manager, changes, message):
    add_tier("Gold", 9)
    tier = add_tier("VIP", 5)
    before, events = tier_rows(), audit_count("tier.changed")
    values = {"name": "Silver", "min_paid_referrals": "3", "window_months": "12", "privileges": "", **changes}
    for url in ("/admin/tiers", f"/admin/tiers/{tier.id}"):
        response = manager.post(url, values)
        assert response.status_code == 422, url
        page = response.get_data(as_text=True)
        assert message in page and "<script>alert(1)" not in page
        assert 'aria-invalid="true"' in page
    assert tier_rows() == before
    assert audit_count("tier.changed") == events


def test_the_progress_page_shows_the_tier_and_the_funnel(browser, make_patient, actor):
    add_tier("Silver", 1, privileges="Free parking")
    add_tier("VIP", 3)
    with atomic():
        campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)))
        campaign.referrer_reward_stage = "payment"
    referrer, token = make_patient(full_name="Wang Li")
    paid, visited, waiting, held = refer(referrer, actor, 4, name="Zhao")
    friend_of = {rid: db.session.get(Referral, rid).friend_id for rid in (paid, visited, waiting, held)}
    milestones.record_payment(friend_of[paid], None, actor)
    milestones.record_visit(friend_of[visited], actor)
    with atomic():
        db.session.scalar(select(Reward).where(Reward.referral_id == held, Reward.beneficiary == "referrer")).status = "review"
        db.session.scalar(select(Reward).where(Reward.referral_id == waiting,
                                               Reward.beneficiary == "referrer")).stage = "visit"
    response = browser.get(f"/p/{token}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'id="tier"' in page and "Silver" in page and "Free parking" in page
    assert "2 more friends to VIP" in page
    funnel = page[page.index('id="funnel"'):page.index("</div></div>", page.index('id="funnel"'))]
    assert [int(n) for n in re.findall(r"<strong>(\d+)</strong>", funnel)][:3] == [4, 2, 1]
    friends = page[page.index('class="friend-list"'):]
    assert "Zhao 1." in friends and not re.search(r"Zhao \d{2}", page)  # masked: "Zhao 10042" shows as "Zhao 1."
    assert friends.count("✓</span> paid") == 1 and friends.count("✓</span> visited") == 2
    for state in ("You: CN¥200.00 off · issued", "pending at payment", "pending at visit", "awaiting approval"):
        assert state in friends, state
    assert "Referral code" not in friends
