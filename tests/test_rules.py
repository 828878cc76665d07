"""Reward rules at the service level: stages, caps, quotas, reversal, campaign choice and the review queue."""

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import (
    Campaign,
    Patient,
    Referral,
    ReferrerYearTotal,
    ReviewRequest,
    Reward,
    Voucher,
)
from clinic.models._time import utcnow
from clinic.services import clinic_settings, milestones, redemption, rewards, vouchers
from clinic.services.errors import Refused
from clinic.services.money import MAX_AMOUNT_MINOR
from clinic.services.transaction import Actor, atomic
from tests.conftest import friend
from tests.test_redemption import run_at_once

numbers = iter(range(10_000, 99_999))


def new_friend(name: str = "Friend"):
    number = next(numbers)
    return friend(full_name=f"{name} {number}", phone=f"1390{number:07d}")


def set_campaign(**changes) -> Campaign:
    with atomic():
        campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)))
        for key, value in changes.items():
            setattr(campaign, key, value)
    return campaign


def redeem(referrer, actor, name="Friend"):
    return redemption.redeem_code(referrer.personal_code, new_friend(name), actor)


def reward_status(result, side: str) -> str:
    return db.session.scalar(select(Reward.status).where(Reward.referral_id == result.referral.id,
                                                         Reward.beneficiary == side))


def referrer_vouchers(referrer) -> int:
    return db.session.scalar(select(func.count()).select_from(Voucher).where(
        Voucher.patient_id == referrer.id, Voucher.beneficiary == "referrer"))


def test_rewards_due_at_redemption_are_paid_at_once(referrer, actor):
    result = redeem(referrer, actor)
    assert {reward_status(result, side) for side in ("referrer", "friend")} == {"issued"}
    assert len(result.vouchers) == 2


def test_a_reward_due_at_the_first_visit_waits_for_it(referrer, actor):
    set_campaign(friend_reward_stage="visit")
    result = redeem(referrer, actor)
    assert (reward_status(result, "referrer"), reward_status(result, "friend")) == ("issued", "pending")
    assert result.friend_voucher is None
    visit = milestones.record_visit(result.friend.id, actor)
    assert visit.recorded and [r.beneficiary for r in visit.paid] == ["friend"]
    assert reward_status(result, "friend") == "issued"
    again = milestones.record_visit(result.friend.id, actor)
    assert not again.recorded and again.paid == []
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 2


def test_a_payment_pays_visit_and_payment_rewards_and_counts_as_a_visit(referrer, actor):
    set_campaign(referrer_reward_stage="payment", friend_reward_stage="visit")
    result = redeem(referrer, actor)
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 0
    paid = milestones.record_payment(result.friend.id, 123400, actor)
    assert sorted(r.beneficiary for r in paid.paid) == ["friend", "referrer"]
    referral = db.session.get(Referral, result.referral.id)
    assert referral.visited_at is not None and referral.paid_amount == 123400
    assert milestones.record_payment(result.friend.id, None, actor).recorded is False


def test_milestones_refuse_patients_who_were_not_referred(referrer, actor):
    with pytest.raises(Refused) as refused:
        milestones.record_visit(referrer.id, actor)
    assert refused.value.reason == "not_referred"
    with pytest.raises(Refused) as refused:
        milestones.record_payment(999_999, None, actor)
    assert refused.value.status == 404


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_the_yearly_referral_cap_holds_exactly_at_the_cap_and_one_over(referrer, actor, cap):
    set_campaign(cap_referrals_per_year=cap)
    results = [redeem(referrer, actor) for _ in range(cap + 1)]
    assert [reward_status(r, "referrer") for r in results] == ["issued"] * cap + ["review"]
    assert all(reward_status(r, "friend") == "issued" for r in results), "the cap is the referrer's, not the friend's"
    assert referrer_vouchers(referrer) == cap
    review = db.session.scalar(select(ReviewRequest))
    assert (review.kind, review.referrer_id, review.status) == ("over_cap", referrer.id, "pending")


def test_the_yearly_value_cap_counts_money_rewards(referrer, actor):
    set_campaign(cap_value_per_year=50_000)  # each referrer reward is CN¥200.00 = 20,000
    results = [redeem(referrer, actor) for _ in range(3)]
    assert [reward_status(r, "referrer") for r in results] == ["issued", "issued", "review"]
    total = db.session.scalar(select(ReferrerYearTotal))
    assert (total.rewarded_count, total.rewarded_value) == (2, 40_000)


@pytest.mark.parametrize("stage", ["redemption", "visit"])
def test_a_referrers_yearly_total_adds_up_past_a_32_bit_integer(referrer, actor, manager_user, stage):
    """Each reward fills at most its 32-bit column, but the year's sum goes on: on PostgreSQL an INTEGER total made
    the redemption that passed 2,147,483,647 minor units a 500 ("integer out of range"), and every later one too."""
    set_campaign(referrer_reward_amount=MAX_AMOUNT_MINOR, referrer_reward_stage=stage)
    results = [redeem(referrer, actor) for _ in range(3)]
    if stage == "visit":
        for result in results:
            milestones.record_visit(result.friend.id, actor)
    assert [reward_status(r, "referrer") for r in results] == ["issued"] * 3
    total = db.session.scalar(select(ReferrerYearTotal))
    assert (total.rewarded_count, total.rewarded_value) == (3, 3 * MAX_AMOUNT_MINOR)

    set_campaign(cap_value_per_year=MAX_AMOUNT_MINOR)  # the cap's check adds past 32 bits too
    over = redeem(referrer, actor)
    if stage == "visit":
        milestones.record_visit(over.friend.id, actor)
    assert reward_status(over, "referrer") == "review"
    review = db.session.scalar(select(ReviewRequest).where(ReviewRequest.kind == "over_cap"))
    milestones.decide_review(review.id, True, "Approved by the owner", Actor(staff_id=manager_user.id))
    milestones.reverse_referral(results[0].referral.id, "Refunded", Actor(staff_id=manager_user.id))
    db.session.expire_all()
    total = db.session.scalar(select(ReferrerYearTotal))
    assert (total.rewarded_count, total.rewarded_value) == (3, 3 * MAX_AMOUNT_MINOR)


def add_campaign(**terms) -> Campaign:
    """A campaign newer than the default one, so in force for the codes it covers."""
    with atomic():
        campaign = Campaign(**{"name": "Newer", "covers": "both", "referrer_reward_kind": "money",
                               "referrer_reward_amount": 1000, "friend_reward_kind": "money", "friend_reward_amount": 500,
                               "voucher_valid_days": 30, **terms})
        db.session.add(campaign)
    return campaign


def test_each_reward_is_checked_against_the_caps_of_the_campaign_its_referral_was_made_under(referrer, actor):
    """One rule for every stage: the referral's campaign, as it reads when the reward is paid, not today's campaign.

    At redemption the two are the same campaign; a reward paid later at a milestone keeps its referral's caps, even
    once a newer campaign with other caps runs, or when its own has ended. Every campaign's rewards count in the
    referrer's one yearly total.
    """
    set_campaign(referrer_reward_stage="payment", cap_referrals_per_year=1)
    capped = redeem(referrer, actor)
    newer = add_campaign(name="No cap", cap_referrals_per_year=None)
    assert reward_status(redeem(referrer, actor), "referrer") == "issued"  # today's campaign: no cap
    milestones.record_payment(capped.friend.id, None, actor)
    assert reward_status(capped, "referrer") == "review"  # its own campaign's cap of 1 is reached

    with atomic():
        db.session.get(Campaign, newer.id).ends_at = utcnow()
    set_campaign(cap_referrals_per_year=None)
    uncapped = redeem(referrer, actor)
    add_campaign(name="Capped", cap_referrals_per_year=1)
    assert reward_status(redeem(referrer, actor), "referrer") == "review"  # today's cap of 1 is reached
    set_campaign(ends_at=utcnow())  # the referral's campaign has ended; it still sets the rules of its rewards
    milestones.record_payment(uncapped.friend.id, None, actor)
    assert reward_status(uncapped, "referrer") == "issued"
    assert db.session.scalar(select(ReferrerYearTotal.rewarded_count)) == 2


def test_a_manager_may_approve_or_reject_a_reward_over_the_cap(referrer, actor, manager_user):
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor)
    second, third = redeem(referrer, actor), redeem(referrer, actor)
    as_manager = Actor(staff_id=manager_user.id)
    first_review, second_review = db.session.scalars(select(ReviewRequest).order_by(ReviewRequest.id)).all()
    milestones.decide_review(first_review.id, True, "Loyal patient, approved by the owner", as_manager)
    milestones.decide_review(second_review.id, False, "Over the limit", as_manager)
    assert reward_status(second, "referrer") == "issued"
    assert db.session.scalar(select(Reward.overridden).where(Reward.referral_id == second.referral.id,
                                                             Reward.beneficiary == "referrer"))
    assert reward_status(third, "referrer") == "rejected"
    with pytest.raises(Refused) as refused:
        milestones.decide_review(first_review.id, False, "changed my mind", as_manager)
    assert refused.value.reason == "already_decided"
    with pytest.raises(Refused):
        milestones.decide_review(second_review.id, True, "", as_manager)


def test_twenty_desks_at_once_against_the_last_slot_under_the_cap_reward_exactly_one(app, referrer, actor):
    set_campaign(cap_referrals_per_year=3)
    redeem(referrer, actor)
    redeem(referrer, actor)  # one slot left
    code = referrer.personal_code
    outcomes = run_at_once(app, 20, lambda index: redemption.redeem_code(
        code, friend(full_name=f"Rush {index}", phone=f"1370000{index:04d}"), actor).referral.id)
    assert [o for o in outcomes if o[0] != "ok"] == []
    assert referrer_vouchers(referrer) == 3
    statuses = db.session.scalars(select(Reward.status).where(Reward.beneficiary == "referrer")).all()
    assert statuses.count("issued") == 3 and statuses.count("review") == 19
    assert db.session.scalar(select(ReferrerYearTotal.rewarded_count)) == 3


def test_the_monthly_quota_refuses_the_next_friend_and_resets_next_month(referrer, actor, monkeypatch):
    set_campaign(friend_monthly_quota=2, quota_label="expert appointments")
    campaign = db.session.scalar(select(Campaign))
    assert rewards.quota_left(campaign) == 2
    redeem(referrer, actor)
    redeem(referrer, actor)
    assert rewards.quota_left(db.session.scalar(select(Campaign))) == 0
    with pytest.raises(Refused) as refused:
        redeem(referrer, actor)
    assert refused.value.reason == "quota_full" and "expert appointments" in refused.value.message
    next_month = utcnow() + timedelta(days=32)
    monkeypatch.setattr(redemption, "utcnow", lambda: next_month)
    assert redeem(referrer, actor).referral is not None


def test_the_quota_month_follows_the_clinic_time_zone(app):
    clinic_settings.update_clinic({"timezone": "Asia/Shanghai"}, Actor())
    from datetime import datetime

    # 16:30 UTC on 31 January is already 1 February in Shanghai.
    assert rewards.clinic_local(datetime(2026, 1, 31, 16, 30)).strftime("%Y-%m") == "2026-02"
    assert rewards.clinic_local(datetime(2026, 1, 31, 15, 30)).strftime("%Y-%m") == "2026-01"


def test_reversal_voids_unspent_vouchers_lists_spent_ones_and_frees_the_cap(referrer, actor, manager_user):
    set_campaign(cap_referrals_per_year=1, friend_reward_stage="payment")
    first = redeem(referrer, actor)
    vouchers.spend_voucher(first.referrer_voucher.code, actor)
    second = redeem(referrer, actor)  # over the cap: in review
    as_manager = Actor(staff_id=manager_user.id)
    report = milestones.reverse_referral(first.referral.id, "Refunded", as_manager)
    assert [v.id for v in report.already_spent] == [first.referrer_voucher.id]
    assert report.voided == [] and [r.beneficiary for r in report.cancelled] == ["friend"]
    with pytest.raises(Refused) as refused:
        milestones.reverse_referral(first.referral.id, "again", as_manager)
    assert refused.value.reason == "already_reversed"
    with pytest.raises(Refused) as refused:
        milestones.record_payment(first.friend.id, None, actor)
    assert refused.value.reason == "reversed"

    report = milestones.reverse_referral(second.referral.id, "Cancelled visit", as_manager)
    assert report.voided == [] and {r.beneficiary for r in report.cancelled} == {"referrer", "friend"}
    assert db.session.scalar(select(ReviewRequest.status)) == "rejected"


def test_a_first_visit_racing_a_reversal_is_refused_and_the_quota_place_stays_returned(app, referrer, actor,
                                                                                      manager_user, monkeypatch):
    """The visit passed its reversed-referral check before the reversal committed; its own UPDATE comes after.
    It must not record a visit on the reversed referral: the reversal gave the friend's quota place back
    because they had not come, and the referral no longer pays anything."""
    set_campaign(friend_monthly_quota=5)
    result = redeem(referrer, actor)
    referral_id, friend_id = result.referral.id, result.friend.id
    db.session.rollback()
    real_return, reversing, visit_checked = milestones.return_quota_place, threading.Event(), threading.Event()

    def return_quota_place(referral):
        reversing.set()
        visit_checked.wait(2)  # the visit checks the referral (still active to it) meanwhile, then waits for the row
        return real_return(referral)

    monkeypatch.setattr(milestones, "return_quota_place", return_quota_place)
    real_referral_of_friend = milestones._referral_of_friend

    def referral_of_friend(patient_id):
        found = real_referral_of_friend(patient_id)
        visit_checked.set()
        return found

    monkeypatch.setattr(milestones, "_referral_of_friend", referral_of_friend)
    outcomes = []

    def in_app(action):
        with app.app_context():
            try:
                outcomes.append(action())
            except Refused as refusal:
                outcomes.append(refusal.reason)
            finally:
                db.session.remove()

    reversal = threading.Thread(target=in_app, args=(lambda: milestones.reverse_referral(
        referral_id, "Entered twice", Actor(staff_id=manager_user.id)),))
    reversal.start()
    assert reversing.wait(30)
    visit = threading.Thread(target=in_app, args=(lambda: milestones.record_visit(friend_id, actor),))
    visit.start()
    reversal.join(60)
    visit.join(60)
    assert "reversed" in outcomes
    db.session.rollback()
    referral = db.session.get(Referral, referral_id, populate_existing=True)
    assert referral.status == "reversed" and referral.visited_at is None
    assert rewards.quota_left(db.session.get(Campaign, referral.campaign_id)) == 5


def test_reversing_frees_the_referrers_slot_when_its_voucher_is_voided(referrer, actor, manager_user):
    set_campaign(cap_referrals_per_year=1)
    first = redeem(referrer, actor)
    report = milestones.reverse_referral(first.referral.id, "Duplicate registration", Actor(staff_id=manager_user.id))
    assert sorted(v.beneficiary for v in report.voided) == ["friend", "referrer"]
    assert all(db.session.get(Voucher, v.id).status == "void" for v in report.voided)
    assert reward_status(redeem(referrer, actor), "referrer") == "issued"


def test_reversing_frees_the_slot_of_a_referrer_voucher_voided_by_hand_before(referrer, actor, manager_user):
    """A voucher voided as lost keeps its referral counted; reversing that referral then frees the slot."""
    set_campaign(cap_referrals_per_year=2)
    as_manager = Actor(staff_id=manager_user.id)
    first, second = redeem(referrer, actor), redeem(referrer, actor)
    vouchers.void_voucher(second.referrer_voucher.id, "Patient lost it", as_manager)
    total = select(ReferrerYearTotal.rewarded_count).where(ReferrerYearTotal.referrer_id == referrer.id)
    assert db.session.scalar(total) == 2
    milestones.reverse_referral(second.referral.id, "Refunded", as_manager)
    assert db.session.scalar(total) == 1
    assert reward_status(redeem(referrer, actor), "referrer") == "issued"  # the freed slot, not review
    assert reward_status(redeem(referrer, actor), "referrer") == "review"  # and the cap still holds
    milestones.reverse_referral(first.referral.id, "Refunded", as_manager)  # its voucher active: voided and freed
    assert db.session.scalar(total) == 1


def clinic_clock(monkeypatch, moment) -> None:
    """Every service that stamps a redemption, a milestone, a reversal or a voucher reads ``moment`` as now."""
    for module in (redemption, rewards, milestones, vouchers):
        monkeypatch.setattr(module, "utcnow", lambda: moment)


def year_totals(referrer) -> dict[int, int]:
    totals = dict(db.session.execute(select(ReferrerYearTotal.year, ReferrerYearTotal.rewarded_count)
                                     .where(ReferrerYearTotal.referrer_id == referrer.id)).all())
    db.session.rollback()
    return totals


def test_a_reversal_frees_the_cap_slot_of_the_year_that_counted_it_whatever_the_time_zone_became(
        referrer, actor, manager, monkeypatch):
    """Near New Year, a time-zone change moves the clinic's year under a paid reward: its reversal still frees the
    year that counted it, not the year its voucher's time falls in now."""
    set_campaign(cap_referrals_per_year=1)
    clinic_clock(monkeypatch, datetime(2026, 12, 31, 17, 0))  # 1 January 2027, 01:00 in Shanghai
    new_year = redeem(referrer, actor)
    assert year_totals(referrer) == {2027: 1}
    settings = {"name": "Test Clinic", "currency": "CNY", "timezone": "America/Los_Angeles", "phone": "",
                "address": "", "brand_colour": "#0f766e", "public_base_url": ""}
    assert manager.post("/admin/settings", settings).status_code == 303  # 31 December 2026, 09:00 there
    last_day = redeem(referrer, actor)
    assert reward_status(last_day, "referrer") == "issued" and year_totals(referrer) == {2026: 1, 2027: 1}

    milestones.reverse_referral(new_year.referral.id, "Registered by mistake", actor)
    assert year_totals(referrer) == {2026: 1, 2027: 0}
    assert reward_status(redeem(referrer, actor), "referrer") == "review"  # 2026 still has its one
    clinic_clock(monkeypatch, datetime(2027, 1, 2, 17, 0))
    assert reward_status(redeem(referrer, actor), "referrer") == "issued"  # 2027's slot was freed


def test_a_refused_void_is_in_the_audit_log(referrer, actor, manager_user):
    from clinic.models import AuditEvent

    result = redeem(referrer, actor)
    vouchers.spend_voucher(result.referrer_voucher.code, actor)
    with pytest.raises(Refused) as refused:
        vouchers.void_voucher(result.referrer_voucher.id, "Patient lost it", Actor(staff_id=manager_user.id))
    assert refused.value.reason == "already_spent"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "voucher.void"))
    assert (event.outcome, event.reason, event.voucher_id, event.staff_id) == (
        "refused", "already_spent", result.referrer_voucher.id, manager_user.id)


def test_campaign_edits_never_change_promised_or_issued_rewards(referrer, actor):
    set_campaign(friend_reward_stage="visit")
    result = redeem(referrer, actor)
    set_campaign(referrer_reward_amount=1, friend_reward_label="Something else", friend_reward_stage="redemption")
    milestones.record_visit(result.friend.id, actor)
    friend_voucher = db.session.scalar(select(Voucher).where(Voucher.beneficiary == "friend"))
    assert friend_voucher.label == "1 bed-day waived"
    assert db.session.scalar(select(Voucher.amount).where(Voucher.beneficiary == "referrer")) == 20000


def test_the_newest_running_campaign_covering_the_code_applies(referrer, actor):
    now = utcnow()
    with atomic():
        db.session.add(Campaign(name="Cards only", covers="cards", referrer_reward_kind="money",
                                referrer_reward_amount=1, friend_reward_kind="money", friend_reward_amount=1,
                                voucher_valid_days=30))
        db.session.add(Campaign(name="Spring (scheduled)", covers="both", starts_at=now + timedelta(days=10),
                                referrer_reward_kind="money", referrer_reward_amount=2, friend_reward_kind="money",
                                friend_reward_amount=2, voucher_valid_days=30))
    assert rewards.campaign_in_force(for_cards=False).name == "Bring a friend"
    assert rewards.campaign_in_force(for_cards=True).name == "Cards only"
    result = redeem(referrer, actor)
    assert db.session.get(Referral, result.referral.id).campaign.name == "Bring a friend"
    assert rewards.campaign_in_force(for_cards=False, now=now + timedelta(days=11)).name == "Spring (scheduled)"


def test_no_running_campaign_means_no_redemption(referrer, actor):
    set_campaign(starts_at=utcnow() + timedelta(days=1))
    with pytest.raises(Refused) as refused:
        redeem(referrer, actor)
    assert refused.value.reason == "campaign_ended"


def test_an_existing_patient_can_be_sent_for_review_and_approved(referrer, actor, make_patient, manager_user):
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, friend(full_name="Already Here", phone="13955556666"), actor)
    assert refused.value.reason == "existing_patient"
    request = milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)
    milestones.decide_review(request.id, True, "First visit in years, owner agrees", Actor(staff_id=manager_user.id))
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == existing.id))
    assert referral.referrer_id == referrer.id
    assert db.session.scalar(select(func.count()).select_from(Voucher).where(Voucher.referral_id == referral.id)) == 2
    assert db.session.get(Patient, existing.id).referred_by_id == referrer.id
    with pytest.raises(Refused) as refused:
        milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)
    assert refused.value.reason == "already_referred"


def test_a_payment_that_lifts_the_referrer_into_a_tier_is_audited(referrer, actor):
    from clinic.models import AuditEvent, Tier

    with atomic():
        db.session.add(Tier(name="VIP", min_paid_referrals=2, window_months=12, privileges="Priority booking"))
    first, second = redeem(referrer, actor), redeem(referrer, actor)
    milestones.record_payment(first.friend.id, None, actor)
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "tier.reached")) == 0
    milestones.record_payment(second.friend.id, None, actor)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "tier.reached"))
    assert (event.patient_id, event.details["tier"]) == (referrer.id, "VIP")


@pytest.mark.app_settings(WEBHOOK_SEND_AFTER_COMMIT=False)
def test_a_tier_lost_by_a_reversal_and_regained_is_reached_once_per_window(referrer, actor, manager, monkeypatch):
    """VIP regained with the next paid friend after a reversal is no news: no second event, webhook or message."""
    from clinic.models import AuditEvent, OutboxEvent, Tier, WebhookEndpoint

    with atomic():
        db.session.add(Tier(name="VIP", min_paid_referrals=2, window_months=6))
        db.session.add(WebhookEndpoint(url="https://his.example/hooks", events=["tier.reached"], secret="s" * 64))
    friends = [redeem(referrer, actor) for _ in range(4)]

    def announced() -> int:
        count = db.session.scalar(select(func.count()).select_from(OutboxEvent)
                                  .where(OutboxEvent.event_type == "tier.reached"))
        assert count == db.session.scalar(select(func.count()).select_from(AuditEvent)
                                          .where(AuditEvent.action == "tier.reached"))
        db.session.rollback()
        return count

    milestones.record_payment(friends[0].friend.id, None, actor)
    milestones.record_payment(friends[1].friend.id, None, actor)
    assert announced() == 1
    assert manager.post(f"/referrals/{friends[1].referral.id}/reverse", {"reason": "Refunded"}).status_code == 303
    milestones.record_payment(friends[2].friend.id, None, actor)
    assert announced() == 1  # reached again within its 6 months: already said
    assert manager.post(f"/referrals/{friends[2].referral.id}/reverse", {"reason": "Refunded"}).status_code == 303
    clinic_clock(monkeypatch, utcnow() + timedelta(days=200))  # a whole window later, it is news again
    milestones.record_payment(friends[3].friend.id, None, actor)
    assert announced() == 1
    late = redeem(referrer, actor)
    milestones.record_payment(late.friend.id, None, actor)
    assert announced() == 2


def test_sending_the_same_existing_patient_twice_makes_one_request(referrer, actor, make_patient):
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    first = milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)
    second = milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)
    assert first.id == second.id
    assert db.session.scalar(select(func.count()).select_from(ReviewRequest)) == 1


def sent_for_review(referrer, actor, make_patient) -> ReviewRequest:
    """An existing patient sent for approval while the desk offers ¥50 to the friend and ¥200 to the referrer."""
    set_campaign(friend_reward_kind="money", friend_reward_amount=5000, friend_reward_label="")
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    return milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)


def rewards_of(referral_id: int) -> dict[str, tuple]:
    return {reward.beneficiary: (reward.kind, reward.amount, reward.label, reward.stage, reward.valid_days,
                                 reward.status, reward.voucher.amount if reward.voucher else None)
            for reward in db.session.scalars(select(Reward).where(Reward.referral_id == referral_id))}


OFFERED = {"referrer": ("money", 20000, "", "redemption", 90, "issued", 20000),
           "friend": ("money", 5000, "", "redemption", 90, "issued", 5000)}


@pytest.mark.parametrize("meanwhile", ["edited", "ended", "replaced"])
def test_an_approved_review_pays_what_the_desk_offered_whatever_the_campaign_became(
        referrer, actor, make_patient, manager_user, meanwhile):
    request = sent_for_review(referrer, actor, make_patient)
    offered_under = request.campaign_id
    if meanwhile == "edited":
        set_campaign(referrer_reward_amount=50000, friend_reward_amount=10000, friend_reward_stage="visit",
                     voucher_valid_days=30)
    elif meanwhile == "ended":
        set_campaign(ends_at=utcnow() - timedelta(minutes=1))
        assert rewards.campaign_in_force(for_cards=False) is None
    else:
        with atomic():
            db.session.add(Campaign(name="Summer", referrer_reward_kind="money", referrer_reward_amount=50000,
                                    friend_reward_kind="money", friend_reward_amount=10000, voucher_valid_days=30))
        assert rewards.campaign_in_force(for_cards=False).name == "Summer"
    milestones.decide_review(request.id, True, "Owner agrees", Actor(staff_id=manager_user.id))
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == request.patient_id))
    assert referral.campaign_id == offered_under
    assert rewards_of(referral.id) == OFFERED


def test_a_review_sent_before_offers_were_recorded_is_priced_by_the_campaign_in_force(
        referrer, actor, make_patient, manager_user):
    """A request from before the migration has no offer written down: the campaign in force at approval pays,
    and with none running the approval is refused and the request keeps waiting."""
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    with atomic():
        request = ReviewRequest(kind="existing_patient", code=referrer.personal_code, patient_id=existing.id,
                                referrer_id=referrer.id, details={"card": None})
        db.session.add(request)
    assert not milestones.review_offer(request).recorded
    set_campaign(ends_at=utcnow() - timedelta(minutes=1))
    with pytest.raises(Refused) as refused:
        milestones.decide_review(request.id, True, "Owner agrees", Actor(staff_id=manager_user.id))
    assert refused.value.reason == "campaign_ended"
    assert db.session.get(ReviewRequest, request.id, populate_existing=True).status == "pending"
    assert db.session.scalar(select(func.count()).select_from(Referral)) == 0
    set_campaign(ends_at=None, referrer_reward_amount=50000)
    milestones.decide_review(request.id, True, "Owner agrees", Actor(staff_id=manager_user.id))
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == existing.id))
    assert rewards_of(referral.id)["referrer"] == ("money", 50000, "", "redemption", 90, "issued", 50000)


def test_an_approved_review_checks_the_referrers_yearly_cap_at_approval(referrer, actor, make_patient, manager_user):
    """The offer is kept, the cap is not bypassed: the referrer's reward goes over the cap to review as any other."""
    request = sent_for_review(referrer, actor, make_patient)
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor)
    milestones.decide_review(request.id, True, "Owner agrees", Actor(staff_id=manager_user.id))
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == request.patient_id))
    assert rewards_of(referral.id) == {**OFFERED, "referrer": ("money", 20000, "", "redemption", 90, "review", None)}
    assert db.session.scalar(select(func.count()).select_from(ReviewRequest).where(
        ReviewRequest.kind == "over_cap", ReviewRequest.status == "pending")) == 1
