"""Every money-moving action honours an idempotency key: the same key replays the first answer,
the same key with different details is refused, and twins sent at once act once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Reward, ReviewRequest, RewardStatus
from clinic.services import milestones, redemption
from clinic.services import vouchers as voucher_service
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import counts, friend
from tests.test_redemption import run_at_once
from tests.test_rules import set_campaign

KEY = "form-key-0123456789abcdef"


def audited(action: str) -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == action, AuditEvent.outcome == "ok"))


@pytest.fixture
def paid_at_visit(app):
    """The referrer's reward is paid at the friend's first visit, the friend's at the first payment."""
    set_campaign(referrer_reward_stage="visit", friend_reward_stage="payment")


@pytest.fixture
def redeemed(referrer, actor):
    return redemption.redeem_code(referrer.personal_code, friend(), actor)


def test_a_resent_void_answers_as_the_first_time_and_voids_once(redeemed, manager_user):
    manager = Actor(staff_id=manager_user.id)
    voucher_id = redeemed.friend_voucher.id
    first = voucher_service.void_voucher(voucher_id, "Entered twice", manager, idempotency_key=KEY)
    again = voucher_service.void_voucher(voucher_id, "Entered twice", manager, idempotency_key=KEY)
    assert first.id == again.id and again.status == "void"
    assert audited("voucher.voided") == 1
    with pytest.raises(Refused) as refused:  # a new form for the same voucher: it is already void
        voucher_service.void_voucher(voucher_id, "Entered twice", manager, idempotency_key="another-key-0123456789")
    assert refused.value.reason == "voided"


def test_the_same_key_with_other_details_is_refused_and_changes_nothing(redeemed, manager_user):
    manager = Actor(staff_id=manager_user.id)
    voucher_service.void_voucher(redeemed.friend_voucher.id, "Entered twice", manager, idempotency_key=KEY)
    before = counts()
    with pytest.raises(Refused) as refused:
        voucher_service.void_voucher(redeemed.referrer_voucher.id, "Entered twice", manager, idempotency_key=KEY)
    assert refused.value.reason == "key_reused" and refused.value.status == 409
    assert counts() == before


def test_a_resent_visit_replays_what_the_visit_paid(paid_at_visit, redeemed, actor):
    friend_id = redeemed.friend.id
    first = milestones.record_visit(friend_id, actor, idempotency_key=KEY)
    again = milestones.record_visit(friend_id, actor, idempotency_key=KEY)
    assert first.recorded and again.recorded
    assert [r.id for r in first.paid] == [r.id for r in again.paid] != []
    assert audited("referral.visited") == 1
    plain_repeat = milestones.record_visit(friend_id, actor)  # no key: the honest "already recorded"
    assert not plain_repeat.recorded


def test_a_resent_payment_replays_the_visit_rewards_it_also_paid(paid_at_visit, redeemed, actor):
    friend_id = redeemed.friend.id
    first = milestones.record_payment(friend_id, 30000, actor, idempotency_key=KEY)
    again = milestones.record_payment(friend_id, 30000, actor, idempotency_key=KEY)
    assert sorted(r.beneficiary for r in first.paid) == ["friend", "referrer"]
    assert [r.id for r in first.paid] == [r.id for r in again.paid]
    with pytest.raises(Refused) as refused:
        milestones.record_payment(friend_id, 99900, actor, idempotency_key=KEY)
    assert refused.value.reason == "key_reused"
    assert audited("referral.paid") == 1


def test_ten_twins_of_one_visit_form_at_once_pay_once_and_answer_the_same(app, paid_at_visit, redeemed, actor):
    friend_id = redeemed.friend.id
    outcomes = run_at_once(app, 10, lambda _: tuple(
        r.id for r in milestones.record_visit(friend_id, actor, idempotency_key=KEY).paid))
    assert {outcome[0] for outcome in outcomes} == {"ok"}, outcomes
    assert len({outcome[1] for outcome in outcomes}) == 1
    assert audited("referral.visited") == 1
    assert db.session.scalar(select(func.count()).select_from(Reward)
                             .where(Reward.status == RewardStatus.ISSUED.value, Reward.stage == "visit")) == 1


def test_a_resent_reversal_replays_its_report(redeemed, manager_user):
    manager = Actor(staff_id=manager_user.id)
    first = milestones.reverse_referral(redeemed.referral.id, "Refunded", manager, idempotency_key=KEY)
    again = milestones.reverse_referral(redeemed.referral.id, "Refunded", manager, idempotency_key=KEY)
    assert [v.id for v in first.voided] == [v.id for v in again.voided] and len(first.voided) == 2
    assert audited("referral.reversed") == 1


def test_a_resent_review_decision_replays_it(app, referrer, actor, manager_user):
    set_campaign(cap_referrals_per_year=1)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    redemption.redeem_code(referrer.personal_code, friend("Second Friend", "13955556666"), actor)
    review_id = db.session.scalar(select(ReviewRequest.id))
    manager = Actor(staff_id=manager_user.id)
    first = milestones.decide_review(review_id, True, "Loyal patient", manager, idempotency_key=KEY)
    again = milestones.decide_review(review_id, True, "Loyal patient", manager, idempotency_key=KEY)
    assert first.id == again.id and again.status == "approved"
    assert audited("review.approved") == 1
    with pytest.raises(Refused) as refused:
        milestones.decide_review(review_id, False, "Loyal patient", manager, idempotency_key=KEY)
    assert refused.value.reason == "key_reused"


def test_the_void_form_sent_twice_shows_success_both_times(manager, redeemed):
    url = f"/admin/vouchers/{redeemed.friend_voucher.id}/void"
    form = {"reason": "Entered twice", "idempotency_key": KEY}
    assert manager.post(url, form).status_code == 303
    assert manager.post(url, form).status_code == 303
    assert audited("voucher.voided") == 1


def test_every_money_form_carries_a_key(manager, redeemed):
    patient_page = manager.get(f"/patients/{redeemed.friend.id}").get_data(as_text=True)
    assert patient_page.count('name="idempotency_key"') == 3  # visit, payment, reversal
    void_page = manager.get(f"/admin/vouchers/{redeemed.friend_voucher.id}/void").get_data(as_text=True)
    assert 'name="idempotency_key"' in void_page
    desk_page = manager.get("/desk/").get_data(as_text=True)
    assert 'name="idempotency_key"' in desk_page  # the recent row's "Mark visit"
