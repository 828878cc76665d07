"""The manager's dashboard: what the referral programme brought, cost and owes, for a period and branch.

Every function is a read-only query over a :class:`Scope`: a period [start, end) in stored time
(naive UTC) and optionally one branch. The web layer turns the clinic's calendar days into that
period, so a day here is the clinic's day, not UTC's.

Referrals count by when they were registered (``Referral.created_at``) and where
(``Referral.branch_id``); reversed referrals are left out of every referral figure. The funnel
follows the referrals registered in the period: how many of *them* have visited and paid, at any
time since. Vouchers count by their own dates and belong to the branch of the referral that
earned them. Staff attribution counts audit events, where the branch is the one the staff member
worked at when they acted. The campaign comparison splits the funnel's referrals by the campaign each was
registered under, with the vouchers issued for them (whenever issued, voided ones left out).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.sql import Select

from clinic.extensions import db
from clinic.i18n import format_day
from clinic.models import (AuditEvent, Campaign, Patient, Referral, ReferralStatus, RewardKind, Staff, Voucher,
                           VoucherStatus)
from clinic.models._time import utcnow
from clinic.services.clinic_settings import (RewardTerms, card_friend_reward, card_referrer_reward, friend_reward,
                                             referrer_reward)
from clinic.services.feedback import NpsFigures, nps_figures
from clinic.services.invite_opens import OpenFigures, open_figures, opens_by_patient

TOP_REFERRERS = 10
DAILY_UP_TO_DAYS = 31
WEEKLY_UP_TO_DAYS = 26 * 7  # longer periods are charted by month

# Staff attribution: the column on the leaderboard, and the audit actions it counts.
STAFF_ACTIONS = {
    "enrolments": ("patient.enrolled",),
    "activations": ("card.activated",),
    "redemptions": ("redemption",),
    "visits": ("referral.visited",),
    "payments": ("referral.paid",),
    "spends": ("voucher.spent",),
}


@dataclass(frozen=True)
class Scope:
    """What a report covers: [start, end) in naive UTC, one branch or all, and the clinic's zone for days."""

    start: datetime
    end: datetime
    branch_id: int | None = None
    zone: tzinfo = timezone.utc

    @classmethod
    def for_days(cls, first: date, last: date, zone: tzinfo, branch_id: int | None = None) -> "Scope":
        """The clinic days ``first`` to ``last`` inclusive."""
        return cls(_utc_midnight(first, zone), _utc_midnight(last + timedelta(days=1), zone), branch_id, zone)

    @property
    def first_day(self) -> date:
        return self.local(self.start).date()

    @property
    def last_day(self) -> date:
        return self.local(self.end).date() - timedelta(days=1)

    def local(self, moment: datetime) -> datetime:
        return moment.replace(tzinfo=timezone.utc).astimezone(self.zone)


def _utc_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(timezone.utc).replace(tzinfo=None)


def percent(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` in %, one decimal; None when there is nothing to divide."""
    return round(100 * part / whole, 1) if whole else None


def registered_in(scope: Scope) -> list:
    """Conditions for the referrals registered in the scope (reversed ones left out)."""
    conditions = [Referral.created_at >= scope.start, Referral.created_at < scope.end,
                  Referral.status != ReferralStatus.REVERSED.value]
    if scope.branch_id is not None:
        conditions.append(Referral.branch_id == scope.branch_id)
    return conditions


class _FunnelShares:
    """The funnel's percentages, for any figures with ``registered``, ``visited`` and ``paid``."""

    registered: int
    visited: int
    paid: int

    @property
    def visited_percent(self) -> float | None:
        return percent(self.visited, self.registered)

    @property
    def paid_percent(self) -> float | None:
        return percent(self.paid, self.registered)


@dataclass(frozen=True)
class Funnel(_FunnelShares):
    registered: int
    visited: int  # of those registered in the period, how many have visited (at any time)
    paid: int
    paid_with_card: int  # of the paid ones, how many came with a scratch card rather than a personal code
    paid_amount: int  # what those friends paid, where the desk recorded it, minor units

    @property
    def paid_with_code(self) -> int:
        return self.paid - self.paid_with_card

    @property
    def card_percent(self) -> float | None:
        return percent(self.paid_with_card, self.paid)

    @property
    def code_percent(self) -> float | None:
        return percent(self.paid_with_code, self.paid)


def funnel(scope: Scope) -> Funnel:
    paid = Referral.paid_at.is_not(None)
    row = db.session.execute(select(
        func.count(Referral.id),
        func.count(Referral.visited_at),
        func.count(Referral.paid_at),
        func.count(case((and_(paid, Referral.card_id.is_not(None)), Referral.id))),
        func.coalesce(func.sum(case((paid, Referral.paid_amount))), 0),
    ).where(*registered_in(scope))).one()
    return Funnel(*(int(value) for value in row))


@dataclass(frozen=True)
class VoucherFigures:
    issued: int
    spent: int
    expired: int  # still active, its last valid day in the period and past
    liability: dict[str, int]  # currency -> unspent, unexpired money vouchers now, minor units
    services_outstanding: int  # unspent, unexpired service vouchers now (they have no money value)


def _vouchers_in(scope: Scope, query: Select) -> Select:
    if scope.branch_id is None:
        return query
    return query.join(Referral, Voucher.referral_id == Referral.id).where(Referral.branch_id == scope.branch_id)


def _count_vouchers(scope: Scope, *conditions) -> int:
    return db.session.scalar(_vouchers_in(scope, select(func.count(Voucher.id)).where(*conditions)))


def voucher_figures(scope: Scope, now: datetime | None = None) -> VoucherFigures:
    now = now or utcnow()
    active = Voucher.status == VoucherStatus.ACTIVE.value
    unexpired = and_(active, Voucher.expires_at > now)
    liability = db.session.execute(_vouchers_in(scope, select(Voucher.currency, func.sum(Voucher.amount))
                                                .where(unexpired, Voucher.kind == RewardKind.MONEY.value)
                                                .group_by(Voucher.currency).order_by(Voucher.currency))).all()
    return VoucherFigures(
        issued=_count_vouchers(scope, Voucher.issued_at >= scope.start, Voucher.issued_at < scope.end),
        spent=_count_vouchers(scope, Voucher.status == VoucherStatus.SPENT.value,
                              Voucher.spent_at >= scope.start, Voucher.spent_at < scope.end),
        # By the last day a voucher was valid: one valid until the period's last day ends at its exclusive end.
        expired=_count_vouchers(scope, active, Voucher.expires_at > scope.start, Voucher.expires_at <= scope.end,
                                Voucher.expires_at <= now),
        liability={currency: int(total) for currency, total in liability if total},
        services_outstanding=_count_vouchers(scope, unexpired, Voucher.kind == RewardKind.SERVICE.value),
    )


@dataclass(frozen=True)
class ReferrerRow:
    patient_id: int
    full_name: str
    registered: int
    paid: int
    opens: int  # their invite page's opens in the period (clinic/services/invite_opens.py)


def top_referrers(scope: Scope, limit: int = TOP_REFERRERS) -> list[ReferrerRow]:
    """Referrers by friends registered in the period, then by how many of those paid; full names, for staff. With
    how often their invite page was opened in the period: many opens and few friends is a poster that reaches
    people and an offer, or a desk, that loses them."""
    registered = func.count(Referral.id)
    paid = func.count(Referral.paid_at)
    rows = db.session.execute(
        select(Patient.id, Patient.full_name, registered, paid)
        .join(Referral, Referral.referrer_id == Patient.id).where(*registered_in(scope))
        .group_by(Patient.id, Patient.full_name)
        .order_by(registered.desc(), paid.desc(), Patient.full_name, Patient.id).limit(limit)).all()
    opens = opens_by_patient([row[0] for row in rows], scope.first_day, scope.last_day)
    return [ReferrerRow(*row, opens=opens.get(row[0], 0)) for row in rows]


@dataclass
class StaffRow:
    staff_id: int
    email: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def staff_attribution(scope: Scope) -> list[StaffRow]:
    """Per staff member, what they did in the period, from the audit log; the busiest first."""
    column_of = {action: column for column, actions in STAFF_ACTIONS.items() for action in actions}
    query = (select(AuditEvent.staff_id, Staff.email, AuditEvent.action, func.count(AuditEvent.id))
             .join(Staff, Staff.id == AuditEvent.staff_id)
             .where(AuditEvent.at >= scope.start, AuditEvent.at < scope.end, AuditEvent.outcome == "ok",
                    AuditEvent.action.in_(column_of))
             .group_by(AuditEvent.staff_id, Staff.email, AuditEvent.action))
    if scope.branch_id is not None:
        query = query.where(AuditEvent.branch_id == scope.branch_id)
    rows: dict[int, StaffRow] = {}
    for staff_id, email, action, number in db.session.execute(query):
        row = rows.setdefault(staff_id, StaffRow(staff_id, email, dict.fromkeys(STAFF_ACTIONS, 0)))
        row.counts[column_of[action]] += number
    return sorted(rows.values(), key=lambda row: (-row.total, row.email))


@dataclass(frozen=True)
class Bucket:
    first_day: date
    last_day: date
    registered: int
    paid: int  # of those registered in this bucket, how many have paid

    @property
    def label(self) -> str:
        if self.first_day == self.last_day:
            return format_day(self.first_day)
        return f"{format_day(self.first_day)} – {format_day(self.last_day)}"


@dataclass(frozen=True)
class Series:
    unit: str  # day | week | month
    buckets: list[Bucket]

    @property
    def peak(self) -> int:
        return max((bucket.registered for bucket in self.buckets), default=0)


def _bucket_starts(first: date, last: date) -> tuple[str, list[date]]:
    days = (last - first).days + 1
    if days <= DAILY_UP_TO_DAYS:
        return "day", [first + timedelta(days=n) for n in range(days)]
    if days <= WEEKLY_UP_TO_DAYS:
        return "week", [first + timedelta(days=n) for n in range(0, days, 7)]
    starts, month = [first], date(first.year, first.month, 1)
    while True:
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        if month > last:
            return "month", starts
        starts.append(month)


def referrals_over_time(scope: Scope) -> Series:
    """Referrals registered per clinic day (periods up to 31 days), per week (from the first day), else per month."""
    first, last = scope.first_day, scope.last_day
    unit, starts = _bucket_starts(first, last)
    ends = [start - timedelta(days=1) for start in starts[1:]] + [last]
    registered: Counter[int] = Counter()
    paid: Counter[int] = Counter()
    for created_at, paid_at in db.session.execute(select(Referral.created_at, Referral.paid_at)
                                                  .where(*registered_in(scope))):
        index = bisect_right(starts, scope.local(created_at).date()) - 1
        registered[index] += 1
        paid[index] += paid_at is not None
    return Series(unit, [Bucket(start, end, registered[n], paid[n])
                         for n, (start, end) in enumerate(zip(starts, ends))])


@dataclass(frozen=True)
class CampaignFigures(_FunnelShares):
    """One campaign's row of the comparison: its offer, its part of the funnel, and what its rewards cost."""

    campaign_id: int
    name: str
    # The offer as the campaign words it now: for a friend with a personal code (None when it covers only cards),
    # and for one with a scratch card when that differs or is all it covers (else None).
    referrer_reward: RewardTerms | None
    friend_reward: RewardTerms | None
    card_referrer_reward: RewardTerms | None
    card_friend_reward: RewardTerms | None
    registered: int
    visited: int
    paid: int
    paid_amount: int  # the paying friends' first payments, where the desk recorded them, minor units
    reward_money: int  # face value of the money vouchers issued for these referrals, both sides, minor units
    service_vouchers: int  # service vouchers issued for them: counted, they have no money value

    @property
    def reward_money_per_paid(self) -> int | None:
        """Reward money per paying friend, whole minor units rounded half up; None when nobody paid."""
        if not self.paid:
            return None
        return (2 * self.reward_money + self.paid) // (2 * self.paid)


def _offer(campaign: Campaign) -> tuple[RewardTerms | None, ...]:
    """Referrer's and friend's terms for personal codes, then for scratch cards where a card gets something else."""
    personal = (referrer_reward(campaign), friend_reward(campaign))
    card = (card_referrer_reward(campaign), card_friend_reward(campaign))
    if not campaign.covers_personal_codes():
        personal = (None, None)
    if not campaign.covers_cards() or card == personal:
        card = (None, None)
    return *personal, *card


def campaign_comparison(scope: Scope) -> list[CampaignFigures]:
    """Per campaign with referrals registered in the scope (the funnel's), newest campaign first: what it offered,
    how many of its friends visited and paid, what they paid, and the vouchers issued for those referrals.

    One query: the referrals and their vouchers are each grouped by campaign, then joined to the campaigns. Vouchers
    count whenever they were issued (a reward at the first payment comes after the period, as the payment does);
    voided ones are left out, they cost nothing. The offer is the campaign's terms now: a referral keeps the terms
    of its redemption, so after an edit the vouchers may differ from the offer shown.
    """
    paid = Referral.paid_at.is_not(None)
    referrals = (select(Referral.campaign_id.label("campaign_id"), func.count(Referral.id).label("registered"),
                        func.count(Referral.visited_at).label("visited"), func.count(Referral.paid_at).label("paid"),
                        func.coalesce(func.sum(case((paid, Referral.paid_amount))), 0).label("paid_amount"))
                 .where(*registered_in(scope)).group_by(Referral.campaign_id).subquery())
    money = Voucher.kind == RewardKind.MONEY.value
    vouchers = (select(Referral.campaign_id.label("campaign_id"),
                       func.coalesce(func.sum(case((money, Voucher.amount))), 0).label("reward_money"),
                       func.count(case((Voucher.kind == RewardKind.SERVICE.value, Voucher.id)))
                       .label("service_vouchers"))
                .join(Referral, Voucher.referral_id == Referral.id)
                .where(*registered_in(scope), Voucher.status != VoucherStatus.VOID.value)
                .group_by(Referral.campaign_id).subquery())
    rows = db.session.execute(
        select(Campaign, referrals.c.registered, referrals.c.visited, referrals.c.paid, referrals.c.paid_amount,
               func.coalesce(vouchers.c.reward_money, 0), func.coalesce(vouchers.c.service_vouchers, 0))
        .join(referrals, referrals.c.campaign_id == Campaign.id)
        .outerjoin(vouchers, vouchers.c.campaign_id == Campaign.id)
        .order_by(Campaign.id.desc())).all()
    return [CampaignFigures(campaign.id, campaign.name, *_offer(campaign), *(int(figure) for figure in figures))
            for campaign, *figures in rows]


@dataclass(frozen=True)
class Dashboard:
    scope: Scope
    funnel: Funnel
    vouchers: VoucherFigures
    top_referrers: list[ReferrerRow]
    staff: list[StaffRow]
    series: Series
    campaigns: list[CampaignFigures]
    nps: NpsFigures  # "How was your visit?" answers given in the period (clinic/services/feedback.py)
    opens: OpenFigures  # the invite pages opened in the period (clinic/services/invite_opens.py)


def dashboard(scope: Scope, now: datetime | None = None) -> Dashboard:
    return Dashboard(scope=scope, funnel=funnel(scope), vouchers=voucher_figures(scope, now),
                     top_referrers=top_referrers(scope), staff=staff_attribution(scope),
                     series=referrals_over_time(scope), campaigns=campaign_comparison(scope), nps=nps_figures(scope),
                     opens=open_figures(scope.first_day, scope.last_day, scope.branch_id))
