"""Loyalty tiers and honours: VIP tiers by paid referrals, referrer of the period, the public leaderboard.

A tier (for example "VIP: 5 paid friends in 12 months") is earned by *paid* referrals — friends who
came and paid — that are still active (a reversed referral earns nothing). Each tier counts over its
own rolling window of calendar months ending now. Honours rank referrers by the friends who paid
within a period; the public leaderboard shows only patients who agreed, with masked names and counts.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.i18n import format_day
from clinic.models import AuditEvent, Patient, Referral, ReferralStatus, Tier
from clinic.models._time import utcnow
from clinic.models.rows import TierRow
from clinic.services import audit
from clinic.services.clinic_settings import (
    brand_colour,
    clinic_local,
    clinic_today,
    current_clinic,
    refuse_implausible_day,
    start_of_clinic_day,
)
from clinic.services.errors import Refused
from clinic.services.settings_snapshot import current_settings
from clinic.services.patients import FieldErrors, check_fields, patient_to_change
from clinic.services.pdf import render_pdf
from clinic.services.posters import Brand
from clinic.services.privacy import mask_name
from clinic.services.text import clean_text, has_hidden_characters
from clinic.services.transaction import Actor, atomic

NAME_MAX = 40
THRESHOLD_MIN, THRESHOLD_MAX = 1, 1000
WINDOW_MIN, WINDOW_MAX = 1, 60
PRIVILEGES_MAX = 1000
DEFAULT_WINDOW_MONTHS = 12
LEADERBOARD_SIZE = 20


@dataclass(frozen=True)
class TierRules:
    """A tier as a manager defines it, validated."""

    name: str
    min_paid_referrals: int
    window_months: int = DEFAULT_WINDOW_MONTHS
    privileges: str = ""

    @classmethod
    def from_form(cls, *, name, min_paid_referrals, window_months=DEFAULT_WINDOW_MONTHS,
                  privileges="") -> "TierRules":
        """Validate every field (numbers may come as form text); raise :class:`FieldErrors` listing each problem."""
        checks = {
            "name": lambda: clean_text(name, max_length=NAME_MAX, label=_("Tier name"), required=True),
            "min_paid_referrals": lambda: _whole_number(
                min_paid_referrals, THRESHOLD_MIN, THRESHOLD_MAX,
                _("Enter a whole number of paid friends from %(low)s to %(high)s.", low=THRESHOLD_MIN,
                  high=THRESHOLD_MAX)),
            "window_months": lambda: _whole_number(
                window_months, WINDOW_MIN, WINDOW_MAX,
                _("Enter a whole number of months from %(low)s to %(high)s.", low=WINDOW_MIN, high=WINDOW_MAX)),
            "privileges": lambda: _multiline_text(privileges, PRIVILEGES_MAX, _("Privileges")),
        }
        return cls(**check_fields(checks))


def _whole_number(raw, low: int, high: int, refusal: str) -> int:
    text = str(raw if raw is not None else "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not low <= int(text) <= high:
        raise ValueError(refusal)
    return int(text)


def _multiline_text(raw: str | None, max_length: int, label: str) -> str:
    """Like :func:`clean_text`, but keeping line breaks: privileges are often a list, one per line."""
    lines = [" ".join(line.split()) for line in (raw or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    text = "\n".join(lines).strip("\n")
    if has_hidden_characters(text.replace("\n", " ")):
        raise ValueError(_("%(label)s contains characters that cannot be printed.", label=label))
    if len(text) > max_length:
        raise ValueError(_("%(label)s can be at most %(count)s characters.", label=label, count=max_length))
    return text


_TIERS = select(Tier).order_by(Tier.min_paid_referrals, Tier.id)  # built once: every progress page asks


def list_tiers() -> list[Tier]:
    """Every tier, lowest threshold first."""
    return list(db.session.scalars(_TIERS))


def get_tier(tier_id: int) -> Tier:
    tier = db.session.get(Tier, tier_id)
    if tier is None:
        raise Refused("not_found", _("No such tier."), status=404)
    return tier


def _refuse_clashes(rules: TierRules, tier_id: int | None) -> None:
    """Names are unique (ignoring case) and so are thresholds, so that "the highest tier reached" is one tier."""
    others = [tier for tier in db.session.scalars(select(Tier)) if tier.id != tier_id]
    errors = {}
    if any(tier.name.casefold() == rules.name.casefold() for tier in others):
        errors["name"] = _("There is already a tier called “%(name)s”.", name=rules.name)
    if any(tier.min_paid_referrals == rules.min_paid_referrals for tier in others):
        errors["min_paid_referrals"] = _("Another tier already starts at %(count)s paid friends.",
                                         count=rules.min_paid_referrals)
    if errors:
        raise FieldErrors(errors)


def _save(write) -> Tier:
    """Run ``write`` in one transaction; a twin saved by another manager a moment ago still gets a message."""
    try:
        with atomic():
            return write()
    except IntegrityError:
        raise FieldErrors({"name": _("There is already a tier with this name.")}) from None


def _checked(rules: TierRules) -> TierRules:
    """The rules validated again, however they were built: the service never trusts its caller's checks."""
    return TierRules.from_form(**asdict(rules))


def create_tier(rules: TierRules, actor: Actor) -> Tier:
    rules = _checked(rules)

    def write() -> Tier:
        _refuse_clashes(rules, None)
        tier = Tier(name=rules.name, min_paid_referrals=rules.min_paid_referrals,
                    window_months=rules.window_months, privileges=rules.privileges)
        db.session.add(tier)
        db.session.flush()
        audit.record("tier.created", actor, tier_id=tier.id, name=tier.name, min_paid_referrals=tier.min_paid_referrals,
                     window_months=tier.window_months)
        return tier

    return _save(write)


def update_tier(tier_id: int, rules: TierRules, actor: Actor) -> Tier:
    """Change a tier; the audit event lists what changed, old and new."""
    rules = _checked(rules)

    def write() -> Tier:
        tier = get_tier(tier_id)
        _refuse_clashes(rules, tier.id)
        changes = {}
        for field in ("name", "min_paid_referrals", "window_months", "privileges"):
            new = getattr(rules, field)
            if getattr(tier, field) != new:
                changes[field] = [getattr(tier, field), new]
                setattr(tier, field, new)
        if changes:
            audit.record("tier.changed", actor, tier_id=tier.id, changes=changes)
        return tier

    return _save(write)


def delete_tier(tier_id: int, actor: Actor) -> None:
    with atomic():
        tier = get_tier(tier_id)
        audit.record("tier.deleted", actor, tier_id=tier.id, name=tier.name, min_paid_referrals=tier.min_paid_referrals)
        db.session.delete(tier)


def months_before(moment: datetime, months: int) -> datetime:
    """The same wall-clock time ``months`` calendar months earlier.

    The day is kept when the earlier month has it, else clamped to that month's last day:
    31 March minus one month is 28 (or 29) February, 15 May minus 12 months is 15 May a year before.
    """
    index = moment.year * 12 + (moment.month - 1) - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def window_start(now: datetime, window_months: int) -> datetime:
    """Where a window of the last ``window_months`` calendar months ending at ``now`` begins (naive UTC).

    Counted on the clinic's calendar: the clinic-local wall time of ``now`` moved back by whole
    months (see :func:`months_before`), then converted back to stored time (naive UTC).
    """
    local = months_before(clinic_local(now), window_months)
    return local.astimezone(timezone.utc).replace(tzinfo=None)


def paid_referrals(patient_id: int, now: datetime | None, window_months: int) -> int:
    """How many friends this patient referred who paid in the last ``window_months`` months, up to ``now``.

    Only active referrals count (a reversed one earned nothing). The window is
    [:func:`window_start`, ``now``]: a payment exactly at its start counts, one a second earlier does not.
    """
    now = now or utcnow()
    return db.session.scalar(
        select(func.count()).select_from(Referral)
        .where(Referral.referrer_id == patient_id, Referral.status == ReferralStatus.ACTIVE.value,
               Referral.paid_at >= window_start(now, window_months), Referral.paid_at <= now)) or 0


def paid_counts(patient_id: int, now: datetime | None = None) -> dict[int, int]:
    """The patient's paid referrals for each tier window in use, ``{window_months: count}``."""
    now = now or utcnow()
    windows = set(db.session.scalars(select(Tier.window_months).distinct()))
    return {months: paid_referrals(patient_id, now, months) for months in sorted(windows)}


@dataclass(frozen=True)
class TierStatus:
    """Where a referrer stands: their tier (or None), the next one and how many more paid friends it takes.

    ``paid`` counts over the window of the tier the patient is working towards (the next tier, or the
    current one at the top), so that ``paid + more_to_next`` is the next tier's threshold.
    """

    current: TierRow | None
    next: TierRow | None
    paid: int
    more_to_next: int | None

    @property
    def next_message(self) -> str | None:
        """"2 more friends to VIP", or None at the top (or when there are no tiers)."""
        if self.next is None:
            return None
        friends = "friend" if self.more_to_next == 1 else "friends"
        return f"{self.more_to_next} more {friends} to {self.next.name}"


def paid_among(referrals: Iterable[Referral], patient_id: int, now: datetime, window_months: int) -> int:
    """:func:`paid_referrals` counted over referrals already loaded, with the same rules and window."""
    if not referrals:  # a patient with no friends yet (most pages): no window to work out in the clinic's zone
        return 0
    start = window_start(now, window_months)
    return sum(1 for referral in referrals
               if referral.referrer_id == patient_id and referral.status == ReferralStatus.ACTIVE.value
               and referral.paid_at is not None and start <= referral.paid_at <= now)


def tier_status(patient_id: int, now: datetime | None = None,
                referrals: Sequence[Referral] | None = None) -> TierStatus:
    """The highest tier whose threshold the patient meets in that tier's window, and the next one up.

    ``referrals``: every referral the patient made, when the caller has loaded them already (the
    progress page); the paid ones are then counted from them instead of asking the database again.
    """
    now = now or utcnow()
    tiers = current_settings().tiers

    def count_paid(months: int) -> int:
        if referrals is None:
            return paid_referrals(patient_id, now, months)
        return paid_among(referrals, patient_id, now, months)

    counts = {months: count_paid(months) for months in {t.window_months for t in tiers}}
    reached = [tier for tier in tiers if counts[tier.window_months] >= tier.min_paid_referrals]
    current = reached[-1] if reached else None
    above = [tier for tier in tiers if current is None or tier.min_paid_referrals > current.min_paid_referrals]
    upcoming = above[0] if above else None
    shown = upcoming or current
    paid = counts[shown.window_months] if shown else count_paid(DEFAULT_WINDOW_MONTHS)
    more = upcoming.min_paid_referrals - paid if upcoming else None
    return TierStatus(current=current, next=upcoming, paid=paid, more_to_next=more)


def tiers_reached_by(referrer_id: int, before_paid: int | Mapping[int, int],
                     after_paid: int | Mapping[int, int] | None = None, now: datetime | None = None) -> list[Tier]:
    """The tiers a referrer has just crossed into, lowest first: for a ``tier.reached`` audit event.

    ``before_paid`` and ``after_paid`` are the referrer's paid referrals before and after a change:
    either one number for every tier, or :func:`paid_counts` (per tier window) — exact when tiers use
    different windows. Without ``after_paid`` it is counted now, inside the caller's transaction::

        before = tiers.paid_counts(referrer_id, now)
        ...  # record the payment and flush
        for tier in tiers.tiers_reached_by(referrer_id, before, now=now): ...
    """

    def count(counts: int | Mapping[int, int], tier: Tier) -> int:
        return counts if isinstance(counts, int) else counts.get(tier.window_months, 0)

    if after_paid is None:
        after_paid = paid_counts(referrer_id, now)
    return [tier for tier in list_tiers()
            if count(before_paid, tier) < tier.min_paid_referrals <= count(after_paid, tier)]


def newly_reached(referrer_id: int, reached: Iterable[Tier], now: datetime) -> list[Tier]:
    """Of the tiers a referrer has just crossed into, those not already reached within each tier's window.

    A tier is reached once per window: a referrer who lost it (a paid friend's referral reversed) and regains it with
    the next paid friend was told already, and hears it again only once a whole window has passed since. What was
    reached is the audit log's ``tier.reached`` events (by tier id; by name for events recorded before they had it).
    """
    reached = list(reached)
    if not reached:
        return []
    since = window_start(now, max(tier.window_months for tier in reached))
    earlier = db.session.execute(select(AuditEvent.at, AuditEvent.details).where(
        AuditEvent.action == "tier.reached", AuditEvent.patient_id == referrer_id, AuditEvent.at >= since)).all()

    def already(tier: Tier) -> bool:
        start = window_start(now, tier.window_months)
        return any(at >= start and (details.get("tier_id") == tier.id if "tier_id" in details
                                    else details.get("tier") == tier.name) for at, details in earlier)

    return [tier for tier in reached if not already(tier)]


@dataclass(frozen=True)
class Period:
    """A span of whole clinic days, ``first`` to ``last`` inclusive, with its label; days from 1900 to 2999."""

    first: date
    last: date

    def __post_init__(self):
        refuse_implausible_day(self.first)
        refuse_implausible_day(self.last)

    @classmethod
    def year(cls, year: int) -> "Period":
        return cls(date(year, 1, 1), date(year, 12, 31))

    @property
    def is_calendar_year(self) -> bool:
        return (self.first.month, self.first.day, self.last.month, self.last.day) == (1, 1, 12, 31) \
            and self.first.year == self.last.year

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) in stored time."""
        return start_of_clinic_day(self.first), start_of_clinic_day(self.last + timedelta(days=1))

    @property
    def label(self) -> str:
        return str(self.first.year) if self.is_calendar_year else f"{format_day(self.first)} – {format_day(self.last)}"


def this_year() -> Period:
    return Period.year(clinic_today().year)


@dataclass(frozen=True)
class RankedReferrer:
    rank: int
    patient: Patient
    paid: int  # friends who paid in the period
    registered: int  # friends registered in the period
    reached_at: datetime  # when the last of those friends paid: of two equals, the first to get there ranks higher


def top_referrers(start: datetime, end: datetime, branch_id: int | None = None, limit: int | None = 10, *,
                  opted_in_only: bool = False) -> list[RankedReferrer]:
    """Referrers ranked by friends who paid in [start, end) (naive UTC), best first.

    Ties go to more friends registered in the period, then to whoever reached their count first,
    then to the longer-standing patient. Only active referrals count; a branch filter keeps the
    referrals registered at that branch. Referrers without a paid friend in the period are not ranked.
    """
    branch = [Referral.branch_id == branch_id] if branch_id is not None else []
    paid = (select(Referral.referrer_id, func.count().label("paid"), func.max(Referral.paid_at).label("reached_at"))
            .where(Referral.status == ReferralStatus.ACTIVE.value, Referral.paid_at >= start, Referral.paid_at < end,
                   *branch)
            .group_by(Referral.referrer_id).subquery())
    registered = (select(Referral.referrer_id, func.count().label("registered"))
                  .where(Referral.status == ReferralStatus.ACTIVE.value, Referral.created_at >= start,
                         Referral.created_at < end, *branch)
                  .group_by(Referral.referrer_id).subquery())
    registered_count = func.coalesce(registered.c.registered, 0)
    query = (select(Patient, paid.c.paid, registered_count, paid.c.reached_at)
             .join(paid, paid.c.referrer_id == Patient.id)
             .outerjoin(registered, registered.c.referrer_id == Patient.id)
             .order_by(paid.c.paid.desc(), registered_count.desc(), paid.c.reached_at, Patient.id)
             .limit(limit))
    if opted_in_only:
        query = query.where(Patient.leaderboard_opt_in.is_(True))
    return [RankedReferrer(rank=rank, patient=patient, paid=paid_count, registered=registered_count,
                           reached_at=reached_at)
            for rank, (patient, paid_count, registered_count, reached_at) in enumerate(db.session.execute(query), 1)]


def referrer_of_period(start: datetime, end: datetime, branch_id: int | None = None) -> RankedReferrer | None:
    """The winner of the period (see :func:`top_referrers` for the order), or None when nobody's friend paid."""
    ranking = top_referrers(start, end, branch_id, limit=1)
    return ranking[0] if ranking else None


@dataclass(frozen=True)
class LeaderboardEntry:
    """One public line: a rank, a masked name and a count. No code, phone or id."""

    rank: int
    name: str
    paid: int


def public_leaderboard(period: Period | None = None, limit: int = LEADERBOARD_SIZE) -> list[LeaderboardEntry]:
    """The top referrers who agreed to appear, for the public page: masked names and counts only."""
    start, end = (period or this_year()).bounds
    return [LeaderboardEntry(rank=entry.rank, name=mask_name(entry.patient.public_name), paid=entry.paid)
            for entry in top_referrers(start, end, limit=limit, opted_in_only=True)]


def set_leaderboard_consent(patient_id: int, consent: bool, actor: Actor) -> Patient:
    """Record whether the patient agreed to appear, with a masked name, on the public leaderboard."""
    with atomic():
        patient = patient_to_change(patient_id)
        record_leaderboard_consent(patient, consent, actor)
    return patient


def record_leaderboard_consent(patient: Patient, consent: bool, actor: Actor) -> None:
    """The leaderboard consent, changed and audited in the current transaction only if it differs.

    Apart from :func:`set_leaderboard_consent` so that the patient's own choices (clinic/services/consents.py)
    save it in one transaction with their other consents.
    """
    if patient.leaderboard_opt_in != consent:
        patient.leaderboard_opt_in = consent
        audit.record("patient.leaderboard_consent", actor, patient_id=patient.id, consent=consent)


def certificate_pdf(patient: Patient, title: str, period_label: str, friends: int, *, title_zh: str = "") -> bytes:
    """An A4 landscape certificate handed to the patient: the clinic, their name, the honour and their friends.

    It carries the display name, or the full name when there is none: the patient receives it themself.
    """
    return render_pdf("pdf/certificate.html", clinic=current_clinic(), brand=Brand.from_colour(brand_colour()),
                      name=patient.public_name, title=title, title_zh=title_zh, period_label=period_label,
                      friends=friends, issued_on=clinic_today())


def honour_titles(period: Period, rank: int) -> tuple[str, str]:
    """The honour in English and in the clinic's Chinese words: 年度最佳推荐人 for the winner of a year."""
    year = period.first.year if period.is_calendar_year else None
    if rank == 1:
        return (f"Referrer of the year {year}", f"{year}年度最佳推荐人") if year else ("Referrer of the period",
                                                                               "最佳推荐人")
    return (f"Top referrer {year}", f"{year}年度优秀推荐人") if year else ("Top referrer", "优秀推荐人")


def honour_certificate(patient_id: int, period: Period, branch_id: int | None = None,
                       branch_name: str | None = None) -> bytes:
    """The certificate for a patient ranked in the period (at a branch, or overall); refused for anyone else."""
    start, end = period.bounds
    ranked = next((entry for entry in top_referrers(start, end, branch_id, limit=None)
                   if entry.patient.id == patient_id), None)
    if ranked is None:
        raise Refused("not_ranked", _("No friend of this patient paid in the period: there is nothing to certify."),
                      status=404)
    title, title_zh = honour_titles(period, ranked.rank)
    label = f"{period.label} · {branch_name}" if branch_name else period.label
    return certificate_pdf(ranked.patient, title, label, ranked.paid, title_zh=title_zh)
