"""A referred friend's milestones (visited, paid), reversing a referral, and the manager's review queue.

Each milestone is recorded once (a conditional UPDATE on the empty column) and pays, in the
same transaction, every reward whose stage it reaches. A payment implies a visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask_babel import gettext as _
from sqlalchemy import select, update

from clinic.extensions import db
from clinic.models import (
    Patient,
    Referral,
    ReferralStatus,
    ReviewRequest,
    Reward,
    RewardStatus,
    Stage,
    Voucher,
    VoucherStatus,
)
from clinic.models._time import utcnow
from clinic.services import audit, events, idempotency, tiers
from clinic.services.clinic_settings import RewardTerms, current_clinic
from clinic.services.errors import Refused
from clinic.services.money import check_amount
from clinic.services.patients import patient_to_change
from clinic.services.redemption import ReferralOffer, convert_call_back, referral_offer, use_card
from clinic.services.rewards import (pay_due_rewards, pay_reward, promise_rewards, release_cap_slot, return_quota_place,
                                     take_quota_place)
from clinic.services.text import clean_reason
from clinic.services.transaction import Actor, atomic

def _reversed() -> Refused:
    return Refused("reversed", _("This referral was reversed: milestones no longer pay rewards."), status=409)


def _referral_of_friend(patient_id: int) -> Referral:
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == patient_id)
                                 .execution_options(populate_existing=True))
    if referral is None:
        if db.session.get(Patient, patient_id) is None:
            raise Refused("not_found", _("No such patient."), status=404)
        raise Refused("not_referred", _("This patient was not referred by anyone: there is no reward to pay."),
                      status=409)
    if referral.status == ReferralStatus.REVERSED.value:
        raise _reversed()
    return referral


# A milestone's UPDATE also asks that the referral is still active: a reversal committed after the referral was read
# (at the same moment) makes it a no-op, as a reversal before would have refused it.
_STILL_ACTIVE = Referral.status == ReferralStatus.ACTIVE.value


def _not_recorded(referral: Referral) -> "MilestoneResult":
    """The milestone was recorded already (nothing changed), or the referral was reversed meanwhile (refused)."""
    db.session.refresh(referral)
    if referral.status == ReferralStatus.REVERSED.value:
        raise _reversed()
    return MilestoneResult(referral, recorded=False)


@dataclass
class MilestoneResult:
    referral: Referral
    recorded: bool  # False when the milestone had already been recorded (nothing changed)
    paid: list[Reward] = field(default_factory=list)


def _replayed_milestone(milestone: str):
    """The first answer again, for a resent form: the referral and the rewards its milestone paid.

    A visit pays the visit-stage rewards; a payment pays the payment-stage ones, and the visit-stage
    ones too when it was also the first visit (both were then stamped with the same time).
    """

    def replay(referral_id: int) -> MilestoneResult:
        referral = db.session.get(Referral, referral_id, populate_existing=True)
        stages = [Stage.VISIT.value] if milestone == "visit" else [Stage.PAYMENT.value]
        if milestone == "payment" and referral.visited_at == referral.paid_at:
            stages.append(Stage.VISIT.value)
        paid = db.session.scalars(select(Reward).where(Reward.referral_id == referral_id, Reward.stage.in_(stages),
                                                       Reward.status.in_([RewardStatus.ISSUED.value,
                                                                          RewardStatus.REVIEW.value]))
                                  .order_by(Reward.id)).all()
        return MilestoneResult(referral, recorded=True, paid=list(paid))

    return replay


def record_visit(patient_id: int, actor: Actor, *, idempotency_key: str | None = None) -> MilestoneResult:
    """The referred friend came for their first visit: pay the rewards due at a visit."""

    def visit() -> MilestoneResult:
        referral = _referral_of_friend(patient_id)
        now = utcnow()
        recorded = db.session.execute(
            update(Referral).where(Referral.id == referral.id, Referral.visited_at.is_(None), _STILL_ACTIVE)
            .values(visited_at=now, visited_by_id=actor.staff_id)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not recorded:
            return _not_recorded(referral)
        db.session.refresh(referral)
        events.milestone_reached(referral, "visited")
        paid = pay_due_rewards(referral, Stage.VISIT.value, actor, now)
        audit.record("referral.visited", actor, patient_id=patient_id, referral_id=referral.id,
                     rewards_paid=len([r for r in paid if r.status == RewardStatus.ISSUED.value]))
        return MilestoneResult(referral, recorded=True, paid=paid)

    result, _replayed = idempotency.run_once("visit", idempotency_key, (patient_id,), visit,
                                             lambda done: done.referral.id, _replayed_milestone("visit"))
    return result


def record_payment(patient_id: int, amount: int | None, actor: Actor, *,
                   idempotency_key: str | None = None) -> MilestoneResult:
    """The friend made their first payment (amount optional): pay what is due at a visit and a payment."""
    if amount is not None:
        if not isinstance(amount, int):
            raise Refused("validation_error", _("The amount cannot be negative."), field="amount")
        try:
            check_amount(amount, current_clinic().currency)
        except ValueError as problem:
            raise Refused("validation_error", str(problem), field="amount") from None

    def payment() -> MilestoneResult:
        referral = _referral_of_friend(patient_id)
        now = utcnow()
        _one_payment_per_referrer_at_a_time(referral.referrer_id)
        paid_before = tiers.paid_counts(referral.referrer_id, now)
        recorded = db.session.execute(
            update(Referral).where(Referral.id == referral.id, Referral.paid_at.is_(None), _STILL_ACTIVE)
            .values(paid_at=now, paid_by_id=actor.staff_id, paid_amount=amount)
            .execution_options(synchronize_session=False)).rowcount == 1
        if not recorded:
            return _not_recorded(referral)
        visited_now = db.session.execute(
            update(Referral).where(Referral.id == referral.id, Referral.visited_at.is_(None))
            .values(visited_at=now, visited_by_id=actor.staff_id).execution_options(synchronize_session=False)
        ).rowcount == 1
        db.session.refresh(referral)
        if visited_now:
            events.milestone_reached(referral, "visited")
        events.milestone_reached(referral, "paid")
        paid = pay_due_rewards(referral, Stage.PAYMENT.value, actor, now)
        audit.record("referral.paid", actor, patient_id=patient_id, referral_id=referral.id, amount=amount,
                     currency=current_clinic().currency if amount is not None else None,
                     rewards_paid=len([r for r in paid if r.status == RewardStatus.ISSUED.value]))
        reached = tiers.tiers_reached_by(referral.referrer_id, paid_before, now=now)
        for tier in tiers.newly_reached(referral.referrer_id, reached, now):
            audit.record("tier.reached", actor, patient_id=referral.referrer_id, referral_id=referral.id,
                         tier=tier.name, tier_id=tier.id)
            events.tier_reached(referral.referrer_id, tier, referral, now)
        return MilestoneResult(referral, recorded=True, paid=paid)

    result, _replayed = idempotency.run_once(
        "payment", idempotency_key, (patient_id, amount), payment, lambda done: done.referral.id,
        _replayed_milestone("payment"))
    return result


def _one_payment_per_referrer_at_a_time(referrer_id: int) -> None:
    """Two friends of one referrer paying at the same moment are counted one after the other (PostgreSQL).

    A payment counts the referrer's paid friends to announce a tier it crosses. Each of two concurrent payments
    would count itself without the other, uncommitted, and neither would announce the tier they reach together.
    So the referrer's row is locked first (FOR NO KEY UPDATE: new referrals and vouchers may still refer to it), and
    the second payment counts after the first has committed. SQLite already runs one writer at a time.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(Patient.id).where(Patient.id == referrer_id).with_for_update(key_share=True))


@dataclass
class ReversalReport:
    referral: Referral
    voided: list[Voucher]
    already_spent: list[Voucher]
    cancelled: list[Reward]


def reverse_referral(referral_id: int, reason: str | None, actor: Actor, *,
                     idempotency_key: str | None = None) -> ReversalReport:
    """Cancel a referral (cancelled visit, refund): unspent vouchers from it are voided, spent ones listed."""
    reason = clean_reason(reason)

    def reverse() -> ReversalReport:
        now = utcnow()
        changed = db.session.execute(
            update(Referral).where(Referral.id == referral_id, Referral.status == ReferralStatus.ACTIVE.value)
            .values(status=ReferralStatus.REVERSED.value, reversed_at=now, reversed_by_id=actor.staff_id,
                    reversal_reason=reason).execution_options(synchronize_session=False)).rowcount
        referral = db.session.get(Referral, referral_id, populate_existing=True)
        if referral is None:
            raise Refused("not_found", _("No such referral."), status=404)
        if changed != 1:
            raise Refused("already_reversed", _("This referral was already reversed."), status=409)
        voided, spent, cancelled = [], [], []
        for reward in db.session.scalars(select(Reward).where(Reward.referral_id == referral_id)):
            if reward.status in (RewardStatus.PENDING.value, RewardStatus.REVIEW.value):
                reward.status = RewardStatus.CANCELLED.value
                cancelled.append(reward)
                continue
            if reward.status != RewardStatus.ISSUED.value:
                continue
            voucher = reward.voucher
            void = db.session.execute(
                update(Voucher).where(Voucher.id == voucher.id, Voucher.status == VoucherStatus.ACTIVE.value)
                .values(status=VoucherStatus.VOID.value, voided_at=now, voided_by_id=actor.staff_id,
                        void_reason=f"Referral reversed: {reason}"[:200])
                .execution_options(synchronize_session=False)).rowcount
            db.session.refresh(voucher)
            if void:
                voided.append(voucher)
                audit.record("voucher.voided", actor, patient_id=voucher.patient_id, voucher_id=voucher.id,
                             referral_id=referral_id, reason_text=f"Referral reversed: {reason}")
                if reward.beneficiary == "referrer":
                    release_cap_slot(reward)
            elif voucher.status == VoucherStatus.SPENT.value:
                spent.append(voucher)  # money taken: it keeps counting under the cap
            elif voucher.status == VoucherStatus.VOID.value and reward.beneficiary == "referrer":
                release_cap_slot(reward)  # voided by hand earlier (lost): the referral no longer counts either
        place_returned = return_quota_place(referral)
        db.session.execute(
            update(ReviewRequest).where(ReviewRequest.reward_id.in_([r.id for r in cancelled] or [-1]),
                                        ReviewRequest.status == "pending")
            .values(status="rejected", decided_at=now, decided_by_id=actor.staff_id,
                    decision_reason="Referral reversed").execution_options(synchronize_session=False))
        audit.record("referral.reversed", actor, patient_id=referral.friend_id, referral_id=referral_id,
                     reason_text=reason, voided=len(voided), already_spent=len(spent), cancelled=len(cancelled),
                     quota_place_returned=place_returned)
        return ReversalReport(referral, voided, spent, cancelled)

    report, _replayed = idempotency.run_once("reverse", idempotency_key, (referral_id, reason), reverse,
                                             lambda done: done.referral.id, reversal_report)
    return report


def reversal_report(referral_id: int) -> ReversalReport | None:
    """What a past reversal did, read back: vouchers it voided, vouchers already spent, rewards cancelled.

    The reversal voided its vouchers at the very moment it stamped on the referral, so that
    moment tells them apart from vouchers voided earlier by hand. None unless the referral was reversed.
    """
    referral = db.session.get(Referral, referral_id)
    if referral is None or referral.status != ReferralStatus.REVERSED.value:
        return None
    vouchers = db.session.scalars(select(Voucher).where(Voucher.referral_id == referral_id).order_by(Voucher.id)).all()
    return ReversalReport(
        referral=referral,
        voided=[v for v in vouchers if v.status == VoucherStatus.VOID.value and v.voided_at == referral.reversed_at],
        already_spent=[v for v in vouchers if v.status == VoucherStatus.SPENT.value],
        cancelled=list(db.session.scalars(select(Reward).where(Reward.referral_id == referral_id,
                                                               Reward.status == RewardStatus.CANCELLED.value)
                                          .order_by(Reward.id))),
    )


def pending_reviews() -> list[ReviewRequest]:
    return list(db.session.scalars(select(ReviewRequest).where(ReviewRequest.status == "pending")
                                   .order_by(ReviewRequest.id)))


def send_existing_patient_for_review(raw_code: str | None, existing_patient_id: int, actor: Actor) -> ReviewRequest:
    """The desk thinks the friend is already a patient but the friend disagrees: a manager decides."""
    offer = referral_offer(raw_code)
    with atomic():
        existing = patient_to_change(existing_patient_id)
        if db.session.scalar(select(Referral.id).where(Referral.friend_id == existing.id)) is not None:
            raise Refused("already_referred", _("This patient was already referred: a friend is welcomed once."),
                          status=409)
        if existing.id == offer.referrer.id:
            raise Refused("self_referral", _("A patient cannot redeem their own code."), status=422)
        pending = db.session.scalar(select(ReviewRequest).where(
            ReviewRequest.kind == "existing_patient", ReviewRequest.patient_id == existing.id,
            ReviewRequest.referrer_id == offer.referrer.id, ReviewRequest.status == "pending"))
        if pending is not None:
            return pending  # sent twice (a double click): one request is enough
        referrer_terms, friend_terms = offer.referrer_reward, offer.friend_reward
        request = ReviewRequest(kind="existing_patient", code=offer.code.code, patient_id=existing.id,
                                referrer_id=offer.referrer.id, created_by_id=actor.staff_id, branch_id=actor.branch_id,
                                details={"card": offer.card.serial if offer.card else None},
                                campaign_id=offer.campaign.id, currency=current_clinic().currency,
                                voucher_valid_days=offer.campaign.voucher_valid_days,
                                referrer_reward_kind=referrer_terms.kind, referrer_reward_amount=referrer_terms.amount,
                                referrer_reward_label=referrer_terms.label, referrer_reward_stage=referrer_terms.stage,
                                friend_reward_kind=friend_terms.kind, friend_reward_amount=friend_terms.amount,
                                friend_reward_label=friend_terms.label, friend_reward_stage=friend_terms.stage)
        db.session.add(request)
        db.session.flush()
        audit.record("review.requested", actor, patient_id=existing.id, referrer_id=offer.referrer.id,
                     kind="existing_patient", campaign_id=offer.campaign.id)
    return request


def decide_review(review_id: int, approve: bool, reason: str | None, actor: Actor, *,
                  idempotency_key: str | None = None) -> ReviewRequest:
    """Approve (pay the reward despite the cap, or link the existing patient as the friend) or reject."""
    reason = clean_reason(reason)

    def decide() -> ReviewRequest:
        now = utcnow()
        claimed = db.session.execute(
            update(ReviewRequest).where(ReviewRequest.id == review_id, ReviewRequest.status == "pending")
            .values(status="approved" if approve else "rejected", decided_at=now, decided_by_id=actor.staff_id,
                    decision_reason=reason).execution_options(synchronize_session=False)).rowcount
        review = db.session.get(ReviewRequest, review_id, populate_existing=True)
        if review is None:
            raise Refused("not_found", _("No such request."), status=404)
        if claimed != 1:
            raise Refused("already_decided", _("This request was already approved.") if review.status == "approved"
                          else _("This request was already rejected."), status=409)
        if review.kind == "over_cap":
            reward = review.reward
            if approve:
                if reward.status != RewardStatus.REVIEW.value:
                    raise Refused("not_pending", _("This reward is no longer waiting for approval."), status=409)
                pay_reward(reward, reward.referral.campaign, reward.referral, actor, now, force=True)
            elif reward.status == RewardStatus.REVIEW.value:
                reward.status = RewardStatus.REJECTED.value
                reward.decided_at, reward.decided_by_id, reward.decision_reason = now, actor.staff_id, reason
        elif approve:
            _link_existing_patient(review, actor, now)
        audit.record("review.approved" if approve else "review.rejected", actor, patient_id=review.patient_id
                     or (review.reward.patient_id if review.reward else None), kind=review.kind, reason_text=reason)
        return review

    review, _replayed = idempotency.run_once("decide", idempotency_key, (review_id, approve, reason), decide,
                                             lambda decided: decided.id,
                                             lambda found: db.session.get(ReviewRequest, found))
    return review


@dataclass(frozen=True)
class ReviewOffer:
    """What approving an existing patient's review pays each side, in which currency, valid for how long.

    ``recorded``: the offer the desk made, written down when it sent the request. A request sent before
    offers were written down has none: it is priced by the campaign in force, as such requests always were
    (see :func:`review_offer`).
    """

    referrer_reward: RewardTerms
    friend_reward: RewardTerms
    currency: str
    valid_days: int
    recorded: bool

    @property
    def friend_gets(self) -> str:
        return self.friend_reward.describe_with_stage(self.currency)

    @property
    def referrer_gets(self) -> str:
        return self.referrer_reward.describe_with_stage(self.currency)


def review_offer(review: ReviewRequest, offer: ReferralOffer | None = None) -> ReviewOffer:
    """What approving this existing patient's review would pay, for the approval and for the manager's page.

    A request without a recorded offer (sent before offers were recorded) is priced by the campaign in force
    now, or refused when none covers its code, as it always was: what the desk showed then is known nowhere (the
    campaign may have been edited since), so any other terms would be a guess presented as a promise; the manager's
    page shows which terms apply and the manager may reject and have the desk send it again.
    ``offer``: the code's offer when the caller has already read it (the approval does).
    """
    if review.campaign_id is not None:
        return ReviewOffer(
            RewardTerms(review.referrer_reward_kind, review.referrer_reward_amount, review.referrer_reward_label,
                        review.referrer_reward_stage),
            RewardTerms(review.friend_reward_kind, review.friend_reward_amount, review.friend_reward_label,
                        review.friend_reward_stage),
            review.currency, review.voucher_valid_days, recorded=True)
    offer = offer or referral_offer(review.code)
    return ReviewOffer(offer.referrer_reward, offer.friend_reward, current_clinic().currency,
                       offer.campaign.voucher_valid_days, recorded=False)


def review_offers(reviews: list[ReviewRequest]) -> tuple[dict[int, ReviewOffer], dict[int, Refused]]:
    """For the review queue: what approving each existing patient's request pays, by request id, and why approving
    would be refused instead (only a request without a recorded offer can be: its campaign is the one in force)."""
    offers, refusals = {}, {}
    for review in reviews:
        if review.kind != "existing_patient":
            continue
        try:
            offers[review.id] = review_offer(review)
        except Refused as refusal:
            refusals[review.id] = refusal
    return offers, refusals


def _link_existing_patient(review: ReviewRequest, actor: Actor, now) -> Referral:
    """Approved: the existing patient becomes the referrer's friend, with the rewards the desk offered.

    The referral is made under the campaign of the recorded offer and promises exactly its terms, whether that
    campaign was edited, ended or replaced while the request waited: as for a redemption, editing a campaign never
    changes what was already promised. The code is checked again (a card may have been voided meanwhile), and the
    month's quota and the referrer's yearly caps are checked now, as at any redemption or milestone: the friend is
    welcomed and the rewards paid now, and a reward over a cap goes to review as any other. A call-back request the
    friend left through this referrer's code (their phone) is converted, as a redemption converts it.
    """
    offer = referral_offer(review.code, campaign_id=review.campaign_id)
    terms = review_offer(review, offer)
    if offer.card is not None:
        use_card(offer.card.id)
    if db.session.scalar(select(Referral.id).where(Referral.friend_id == review.patient_id)) is not None:
        raise Refused("already_referred", _("This patient was referred in the meantime."), status=409)
    quota_month = take_quota_place(offer.campaign, now)
    referral = Referral(referrer_id=offer.referrer.id, friend_id=review.patient_id, campaign_id=offer.campaign.id,
                        code_used=offer.code.code, staff_id=review.created_by_id, branch_id=review.branch_id,
                        card_id=offer.card.id if offer.card else None, quota_month=quota_month)
    db.session.add(referral)
    db.session.flush()
    friend = db.session.get(Patient, review.patient_id)
    if friend.referred_by_id is None:
        friend.referred_by_id = offer.referrer.id
    # As a redemption does: the friend's call-back request through this referrer's code, by their phone, is answered.
    call_back = convert_call_back(offer.referrer.id, friend.phone, referral.id, now, actor) is not None
    audit.record("redemption", actor, patient_id=review.patient_id, referral_id=referral.id, code=offer.code.code,
                 referrer_id=offer.referrer.id, campaign_id=offer.campaign.id, approved_review=review.id,
                 call_back=call_back or None)
    events.referral_redeemed(referral)
    promise_rewards(referral, terms.referrer_reward, terms.friend_reward, terms.currency, terms.valid_days)
    pay_due_rewards(referral, Stage.REDEMPTION.value, actor, now)
    return referral
