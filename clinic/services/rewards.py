"""Reward rules: which campaign applies, what each side is owed, when it is paid, caps and quotas.

At redemption each side's reward is written down (a ``Reward`` row) with the campaign's terms of
that moment, so editing a campaign later changes nothing already promised. A reward is paid —
a voucher issued — when the referral reaches its stage: at redemption, at the friend's first
visit, or at their first payment. Caps and quotas are decided by the database: a conditional
UPDATE on one counter row per referrer and year (per campaign and month for quotas), so that of
many simultaneous redemptions exactly as many pass as there are places left.
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from clinic.extensions import db
from clinic.models import (
    Campaign,
    CampaignMonthCount,
    Patient,
    Referral,
    ReferrerYearTotal,
    ReviewRequest,
    Reward,
    RewardKind,
    RewardStatus,
    Stage,
    Voucher,
)
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.clinic_settings import RewardTerms, clinic_local, current_clinic
from clinic.services.errors import Refused
from clinic.services.settings_snapshot import CampaignRow, current_settings
from clinic.services.transaction import (Actor, insert_ignoring_duplicates, insert_row, insert_rows,
                                         upsert_capable_insert)
from clinic.services.vouchers import issued_audit_event, new_voucher, record_issued, unused_bearer_codes, voucher_row

STAGES = tuple(stage.value for stage in Stage)
STAGE_ORDER = {Stage.REDEMPTION.value: 0, Stage.VISIT.value: 1, Stage.PAYMENT.value: 2}


def campaign_in_force(for_cards: bool, now: datetime | None = None) -> CampaignRow | None:
    """The newest running campaign that covers this kind of code, or None (a read-only copy, see settings_snapshot)."""
    return current_settings().campaign_in_force(for_cards, now or utcnow())


def campaign_for_card(printed_campaign_id: int | None, now: datetime | None = None) -> CampaignRow | None:
    """The campaign a scratch card pays: the one its batch was printed with, while that one runs and covers cards.

    The card in the friend's hand prints that campaign's offer, so a newer campaign does not change what it pays.
    Once its campaign has ended, the card pays the campaign in force for cards, as a personal code would (the desk
    and the receipt say so); with none, None. A batch printed before batches named their campaign has no printed
    campaign: it pays the one in force.
    """
    now = now or utcnow()
    settings = current_settings()
    printed = next((campaign for campaign in settings.campaigns if campaign.id == printed_campaign_id), None)
    if printed is not None and printed.covers_cards() and printed.is_running(now):
        return printed
    return settings.campaign_in_force(True, now)


_MONTH_COUNTS = CampaignMonthCount.__table__
_TAKE_QUOTA_PLACE = (update(_MONTH_COUNTS)
                     .where(_MONTH_COUNTS.c.campaign_id == bindparam("counted_campaign"),
                            _MONTH_COUNTS.c.month == bindparam("counted_month"),
                            _MONTH_COUNTS.c.used < bindparam("quota"))
                     .values(used=_MONTH_COUNTS.c.used + 1))


def take_quota_place(campaign: Campaign, now: datetime) -> str | None:
    """Use one of this month's places for referred friends, or refuse when none is left.

    Returns the month whose place was taken (for the referral to keep, see :func:`return_quota_place`); None when
    the campaign has no quota.
    """
    if not campaign.friend_monthly_quota:
        return None
    month = clinic_local(now).strftime("%Y-%m")
    # The counter row exists before the conditional UPDATE locks it.
    insert_ignoring_duplicates(CampaignMonthCount, {"campaign_id": campaign.id, "month": month, "used": 0})
    taken = db.session.execute(_TAKE_QUOTA_PLACE, {"counted_campaign": campaign.id, "counted_month": month,
                                                   "quota": campaign.friend_monthly_quota}).rowcount
    if taken != 1:
        if campaign.quota_label:
            message = _("This month's %(count)s %(places)s are all taken. Please invite the friend to come next "
                        "month.", count=campaign.friend_monthly_quota, places=campaign.quota_label)
        else:
            message = _("This month's %(count)s places for referred friends are all taken. Please invite the "
                        "friend to come next month.", count=campaign.friend_monthly_quota)
        raise Refused("quota_full", message, field="code", status=409)
    return month


def return_quota_place(referral: Referral) -> str | None:
    """A reversed referral gives its place in its month's quota back, unless the friend came (the place was used).

    The quota counts friends welcomed; a referral reversed before the friend's first visit was a mistake, a
    duplicate or a fraud, and its place goes to the next friend. As a spent voucher keeps counting under a cap,
    a friend who came keeps their place. Returns the month given a place back, or None.
    """
    if referral.quota_month is None or referral.visited_at is not None:
        return None
    returned = db.session.execute(
        update(_MONTH_COUNTS).where(_MONTH_COUNTS.c.campaign_id == referral.campaign_id,
                                    _MONTH_COUNTS.c.month == referral.quota_month, _MONTH_COUNTS.c.used > 0)
        .values(used=_MONTH_COUNTS.c.used - 1)).rowcount
    return referral.quota_month if returned else None


def quota_left(campaign: Campaign | None, now: datetime | None = None) -> int | None:
    """Places left this month, for the invite page ("only 3 left"); None when there is no quota."""
    if campaign is None or not campaign.friend_monthly_quota:
        return None
    month = clinic_local(now or utcnow()).strftime("%Y-%m")
    used = db.session.scalar(select(CampaignMonthCount.used).where(
        CampaignMonthCount.campaign_id == campaign.id, CampaignMonthCount.month == month)) or 0
    return max(0, campaign.friend_monthly_quota - used)


_YEAR_TOTALS = ReferrerYearTotal.__table__


def _cap_slot_statement(count_capped: bool, value_capped: bool):
    """The conditional UPDATE of a referrer's yearly totals, with the cap conditions that apply; built once each."""
    statement = update(_YEAR_TOTALS).where(_YEAR_TOTALS.c.referrer_id == bindparam("counted_referrer"),
                                           _YEAR_TOTALS.c.year == bindparam("counted_year"))
    if count_capped:
        statement = statement.where(_YEAR_TOTALS.c.rewarded_count < bindparam("cap_count"))
    if value_capped:
        statement = statement.where(_YEAR_TOTALS.c.rewarded_value + bindparam("value") <= bindparam("cap_value"))
    return statement.values(rewarded_count=_YEAR_TOTALS.c.rewarded_count + 1,
                            rewarded_value=_YEAR_TOTALS.c.rewarded_value + bindparam("value"))


def _count_reward_statement(dialect: str, count_capped: bool, value_capped: bool):
    """The same in one statement: INSERT the referrer's first reward of the year, or count it on their row if the
    caps allow (ON CONFLICT … DO UPDATE … WHERE; a row left alone returns nothing). Only for a reward the caps
    would allow as the year's first: the INSERT itself checks nothing.

    The database still decides: PostgreSQL locks the conflicting row and checks the caps on its latest version.
    """
    condition = []
    if count_capped:
        condition.append(_YEAR_TOTALS.c.rewarded_count < bindparam("cap_count"))
    if value_capped:
        condition.append(_YEAR_TOTALS.c.rewarded_value + bindparam("value") <= bindparam("cap_value"))
    statement = upsert_capable_insert(dialect, _YEAR_TOTALS).values(
        referrer_id=bindparam("counted_referrer"), year=bindparam("counted_year"), rewarded_count=1,
        rewarded_value=bindparam("value"))
    return statement.on_conflict_do_update(
        index_elements=[_YEAR_TOTALS.c.referrer_id, _YEAR_TOTALS.c.year],
        set_={"rewarded_count": _YEAR_TOTALS.c.rewarded_count + 1,
              "rewarded_value": _YEAR_TOTALS.c.rewarded_value + bindparam("value")},
        where=and_(*condition) if condition else None).returning(_YEAR_TOTALS.c.referrer_id)


# (count capped, value capped) -> statement; (dialect, count capped, value capped) -> statement
_TAKE_CAP_SLOT = {(count, value): _cap_slot_statement(count, value) for count in (False, True) for value in (False, True)}
_COUNT_REWARD = {(dialect, count, value): _count_reward_statement(dialect, count, value)
                 for dialect in ("sqlite", "postgresql") for count in (False, True) for value in (False, True)}


def _take_cap_slot(referrer_id: int, value: int, campaign: Campaign, now: datetime, *, force: bool) -> int | None:
    """Count one rewarded referral (and its value) against the referrer's yearly caps, if they allow it.

    Returns the year that counted it (the reward keeps it, see :func:`release_cap_slot`), or None when the caps refuse.
    """
    year = clinic_local(now).year
    count_capped = not force and campaign.cap_referrals_per_year is not None
    value_capped = not force and campaign.cap_value_per_year is not None
    parameters = {"counted_referrer": referrer_id, "counted_year": year, "value": value,
                  "cap_count": campaign.cap_referrals_per_year, "cap_value": campaign.cap_value_per_year}
    connection = db.session.connection()
    first_allowed = ((not count_capped or campaign.cap_referrals_per_year >= 1)
                     and (not value_capped or value <= campaign.cap_value_per_year))
    if first_allowed:
        statement = _COUNT_REWARD[connection.dialect.name, count_capped, value_capped]
        counted = connection.execute(statement, parameters).first() is not None
    else:
        # The row exists before the conditional UPDATE locks it.
        insert_ignoring_duplicates(ReferrerYearTotal, {"referrer_id": referrer_id, "year": year,
                                                      "rewarded_count": 0, "rewarded_value": 0})
        counted = connection.execute(_TAKE_CAP_SLOT[count_capped, value_capped], parameters).rowcount == 1
    return year if counted else None


def release_cap_slot(reward: Reward) -> None:
    """A reversed referral's voided referrer voucher frees its place under the cap, in the year that counted it.

    A reward paid before rewards kept that year: the clinic's year of its voucher's issue, in today's time zone.
    """
    year = reward.counted_year
    if year is None:
        year = clinic_local(reward.voucher.issued_at if reward.voucher else utcnow()).year
    value = capped_value(reward.kind, reward.amount)
    db.session.execute(
        update(ReferrerYearTotal).where(ReferrerYearTotal.referrer_id == reward.patient_id,
                                        ReferrerYearTotal.year == year)
        .values(rewarded_count=ReferrerYearTotal.rewarded_count - 1,
                rewarded_value=ReferrerYearTotal.rewarded_value - value)
        .execution_options(synchronize_session=False))


def promise_rewards(referral: Referral, referrer_terms: RewardTerms, friend_terms: RewardTerms, currency: str,
                    valid_days: int) -> list[Reward]:
    """Write down what each side is owed (inside the redemption's transaction).

    The terms, currency and validity are given rather than read from a campaign: an approved review pays the
    offer recorded when the desk sent it, which the campaign may no longer make.
    """
    return [insert_row(_new_reward(referral, patient_id, beneficiary, terms, currency, valid_days))
            for beneficiary, patient_id, terms in (("referrer", referral.referrer_id, referrer_terms),
                                                   ("friend", referral.friend_id, friend_terms))]


def _new_reward(referral: Referral, patient_id: int, beneficiary: str, terms: RewardTerms, currency: str,
                valid_days: int) -> Reward:
    """What one side of a referral is owed, not yet written: pending until its stage is reached."""
    return Reward(referral_id=referral.id, patient_id=patient_id, beneficiary=beneficiary, kind=terms.kind,
                  amount=terms.amount, label=terms.label, currency=currency, stage=terms.stage,
                  valid_days=valid_days, status=RewardStatus.PENDING.value, voucher_id=None, counted_year=None)


def capped_value(kind: str, amount: int) -> int:
    """What a reward counts against a yearly value cap: a money reward its amount, any other nothing."""
    return amount if kind == RewardKind.MONEY.value else 0


def _review_request(reward: Reward, referral_id: int, actor: Actor) -> ReviewRequest:
    """A manager's decision on a referrer's reward over the yearly cap."""
    return ReviewRequest(kind="over_cap", reward_id=reward.id, referrer_id=reward.patient_id,
                         created_by_id=actor.staff_id, branch_id=actor.branch_id, details={"referral_id": referral_id})


def _held_for_review_event(patient_id: int, referral_id: int) -> tuple[str, dict]:
    """The audit event of a reward held over the cap, as ``audit.record`` and ``audit.record_all`` take it."""
    return "reward.held_for_review", dict(patient_id=patient_id, referral_id=referral_id,
                                          reason_text="yearly cap reached")


def reward_redemption(referral: Referral, referrer: Patient, friend: Patient, referrer_terms: RewardTerms,
                      friend_terms: RewardTerms, campaign: Campaign, actor: Actor,
                      now: datetime) -> tuple[list[Reward], list[tuple[Voucher, Patient]], list[tuple[str, dict]]]:
    """Promise both sides' rewards and pay those due at redemption, inside the redemption's transaction.

    What :func:`promise_rewards` and :func:`pay_due_rewards` do for a new referral, in as few statements
    as a redemption allows: the referrer's cap first, then one INSERT for the new codes, one for the
    vouchers and one for the rewards, written already issued (or held for review). Returns the rewards
    (referrer's first), the vouchers issued with their holders, and the audit events for the caller to
    record with its own (``audit.record_all``).
    """
    currency = current_clinic().currency
    rewards, due, audited = [], [], []
    for beneficiary, patient, terms in (("referrer", referrer, referrer_terms), ("friend", friend, friend_terms)):
        reward = _new_reward(referral, patient.id, beneficiary, terms, currency, campaign.voucher_valid_days)
        rewards.append(reward)
        if STAGE_ORDER[terms.stage] > STAGE_ORDER[Stage.REDEMPTION.value]:
            continue
        if beneficiary == "referrer":
            reward.counted_year = _take_cap_slot(patient.id, capped_value(terms.kind, terms.amount), campaign, now,
                                                 force=False)
            if reward.counted_year is None:
                reward.status = RewardStatus.REVIEW.value
                audited.append(_held_for_review_event(patient.id, referral.id))
                continue
        due.append((reward, patient))
    vouchers = insert_rows([voucher_row(code, patient, RewardTerms(reward.kind, reward.amount, reward.label),
                                        beneficiary=reward.beneficiary, currency=currency,
                                        valid_days=reward.valid_days, referral=referral, now=now)
                            for (reward, patient), code in zip(due, unused_bearer_codes(len(due)))], match_on="code")
    for (reward, _patient), voucher in zip(due, vouchers):
        reward.status, reward.voucher_id = RewardStatus.ISSUED.value, voucher.id
    insert_rows(rewards, match_on="beneficiary")
    issued = []
    for (reward, patient), voucher in zip(due, vouchers):
        # Also keeps the voucher in the session for the caller's answer (the identity map is weak).
        set_committed_value(reward, "voucher", voucher)
        audited.append(issued_audit_event(voucher, patient))
        issued.append((voucher, patient))
    for reward in rewards:
        if reward.status == RewardStatus.REVIEW.value:
            db.session.add(_review_request(reward, referral.id, actor))
    return rewards, issued, audited


def pay_due_rewards(referral: Referral, reached: str, actor: Actor, now: datetime | None = None) -> list[Reward]:
    """Pay every pending reward of this referral whose stage is now reached (inside the caller's transaction)."""
    now = now or utcnow()
    campaign = db.session.get(Campaign, referral.campaign_id)
    due = db.session.scalars(select(Reward).where(Reward.referral_id == referral.id,
                                                  Reward.status == RewardStatus.PENDING.value)
                             .order_by(Reward.id)).all()
    paid, issued = [], []
    for reward in due:
        if STAGE_ORDER[reward.stage] <= STAGE_ORDER[reached]:
            paying = _voucher_for(reward, campaign, referral, actor, now, force=False)
            if paying is not None:
                issued.append((reward, *paying))
            paid.append(reward)
    _issue(issued, actor, force=False)
    return paid


def pay_reward(reward: Reward, campaign: Campaign, referral: Referral, actor: Actor, now: datetime, *,
               force: bool) -> None:
    """Issue the voucher; a referrer's reward over a cap goes to review unless ``force`` (manager approval)."""
    paying = _voucher_for(reward, campaign, referral, actor, now, force=force)
    _issue([(reward, *paying)] if paying is not None else [], actor, force=force)


def _voucher_for(reward: Reward, campaign: Campaign, referral: Referral, actor: Actor, now: datetime, *,
                 force: bool) -> tuple[Voucher, int | None] | None:
    """The reward's voucher, written but not yet audited, and the year whose caps counted it (a referrer's reward);
    None when a referrer's reward over a cap goes to review."""
    counted_year = None
    if reward.beneficiary == "referrer":
        value = capped_value(reward.kind, reward.amount)
        counted_year = _take_cap_slot(reward.patient_id, value, campaign, now, force=force)
        if counted_year is None:
            _set_reward(reward, status=RewardStatus.REVIEW.value)
            db.session.add(_review_request(reward, referral.id, actor))
            action, arguments = _held_for_review_event(reward.patient_id, referral.id)
            audit.record(action, actor, **arguments)
            return None
    voucher = new_voucher(reward.patient, RewardTerms(reward.kind, reward.amount, reward.label),
                          beneficiary=reward.beneficiary, currency=reward.currency, valid_days=reward.valid_days,
                          referral=referral)
    return voucher, counted_year


def _issue(issued: list[tuple[Reward, Voucher, int | None]], actor: Actor, *, force: bool) -> None:
    """Audit and announce each reward's new voucher, and mark the reward paid by it (in the year that counted it)."""
    for reward, voucher, counted_year in issued:
        record_issued(voucher, reward.patient, actor)
        _set_reward(reward, status=RewardStatus.ISSUED.value, voucher_id=voucher.id, overridden=force,
                    counted_year=counted_year)
        # Also keeps the voucher in the session for the caller's answer (the identity map is weak).
        set_committed_value(reward, "voucher", voucher)


_REWARDS = Reward.__table__
# Built once per set of columns changed (there are two: a review, a payment).
_REWARD_UPDATES: dict = {}


def _set_reward(reward: Reward, **values) -> None:
    """Change a reward's row with one UPDATE by id, and its loaded copy to match (nothing left for a flush).

    The redemption's rewards were just written with :func:`insert_row`, the others read by a query:
    either way the object then reads as the row now is.
    """
    statement = _REWARD_UPDATES.get(tuple(values))
    if statement is None:
        statement = _REWARD_UPDATES[tuple(values)] = (
            update(_REWARDS).where(_REWARDS.c.id == bindparam("reward_id"))
            .values({name: bindparam(f"new_{name}") for name in values}))
    db.session.execute(statement, {"reward_id": reward.id, **{f"new_{name}": value for name, value in values.items()}})
    for name, value in values.items():
        set_committed_value(reward, name, value)


def vouchers_of(referral_id: int) -> list[Voucher]:
    return list(db.session.scalars(select(Voucher).where(Voucher.referral_id == referral_id).order_by(Voucher.id)))
