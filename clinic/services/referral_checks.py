"""Referrals to check: patterns across many referrals that look like reward abuse, for a manager's second look.

The desk refuses what one redemption can show to be wrong (self-referral, a friend already a patient, caps); it cannot
see a pattern: fake friends registered to farm the vouchers paid on the spot, a burst of friends in one afternoon, a
receptionist redeeming one referrer's friends again and again. Each rule below flags what deserves a look, never what
is proven: the page says so, and the manager acts on the patient's page (reversing a referral, voiding a voucher).

The rules read the referrals registered in a report :class:`~clinic.services.reports.Scope` (its period and branch),
reversed ones left out, as on the dashboard; the wrong codes read the audit log's refused redemptions in the scope.

- **Burst** (``BURST``): a referrer with at least ``BURST_FRIENDS`` friends registered within ``BURST_WITHIN``.
- **Friends who never came** (``NEVER_CAME``): a referrer with at least ``NEVER_CAME_FRIENDS`` friends registered more
  than ``NEVER_CAME_AFTER`` ago, none of whom has visited, whose referrals issued vouchers (at redemption: a friend
  who never visited reached no later stage) that are not void.
- **One desk, one referrer** (``ONE_DESK``): one staff account redeemed at least ``ONE_DESK_FRIENDS`` friends of the
  same referrer within ``ONE_DESK_WITHIN``, and its redemptions are at least ``ONE_DESK_SHARE`` % of that referrer's
  friends in the period. Normal in a clinic with one receptionist; the page says so.
- **Look-alike phone numbers** (``LOOK_ALIKE``): at least ``LOOK_ALIKE_FRIENDS`` of one referrer's friends whose
  phone numbers (of at least ``LOOK_ALIKE_MIN_DIGITS`` characters) differ only in their last ``LOOK_ALIKE_DIGITS``.
- **Wrong codes at the desk** (``WRONG_CODES``): a staff account with at least ``WRONG_CODES_ATTEMPTS`` redemptions
  refused for an unknown or mistyped code within ``WRONG_CODES_WITHIN`` (someone trying codes at a logged-in desk).

A manager who has looked at a flag and found nothing wrong marks it as checked (:func:`mark_checked`, audited), with
an optional short note. The mark records the newest evidence seen then (``Check.last_id``: the newest referral, or
refused attempt, the row was built from); the page hides a checked row until newer evidence appears, then shows it
again saying who checked it before and when. One mark per flag (rule and subject), moved on by a later mark.

"Within" a span means from the first to the last of them at most that long apart, at any time in the period (not per
calendar day). A flagged referrer's money is the face value of the money vouchers, not void, that the flagged
referrals issued to both sides; service vouchers are counted, having no money value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, literal_column, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Subquery

from clinic.extensions import db
from clinic.models import AuditEvent, CheckMark, Patient, Referral, RewardKind, Staff, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.models.patient import PatientNames
from clinic.models.rows import row_class
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.reports import Scope, registered_in
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic, insert_ignoring_duplicates

BURST = "burst"
NEVER_CAME = "never_came"
ONE_DESK = "one_desk"
LOOK_ALIKE = "look_alike"
WRONG_CODES = "wrong_codes"
RULES = (BURST, NEVER_CAME, ONE_DESK, LOOK_ALIKE, WRONG_CODES)

BURST_FRIENDS = 3
BURST_WITHIN = timedelta(hours=24)
NEVER_CAME_FRIENDS = 3
NEVER_CAME_AFTER = timedelta(days=30)
ONE_DESK_FRIENDS = 5
ONE_DESK_WITHIN = timedelta(days=30)
ONE_DESK_SHARE = 80  # percent
LOOK_ALIKE_FRIENDS = 2
LOOK_ALIKE_DIGITS = 2
LOOK_ALIKE_MIN_DIGITS = 8  # shorter numbers (extensions, short codes) share their beginnings by nature
WRONG_CODES_ATTEMPTS = 20
WRONG_CODES_WITHIN = timedelta(hours=24)
# The refusals of a code that no one holds or whose check symbol fails (clinic/services/redemption.py, codes.py).
WRONG_CODE_REASONS = ("unknown_code", "mistyped_code")

# Whom each rule flags: a referrer, a staff account, or (one desk, one referrer) the pair.
REFERRER_RULES = (BURST, NEVER_CAME, LOOK_ALIKE)
STAFF_RULES = (WRONG_CODES,)
NOTE_LENGTH = 200  # CheckMark.note

# A flagged referrer: what the page shows of them (the phone masked there) and links to.
REFERRER_KEYS = ["id", "full_name", "display_name", "name_on_posters", "phone"]
FlaggedReferrer = row_class(Patient, PatientNames, keys=REFERRER_KEYS, name="FlaggedReferrer")


def subject_key(referrer_id: int | None, staff_id: int | None) -> str:
    """A flag's subject in one word, as CheckMark.subject stores it and the page's row ids use it: "r12" (referrer
    12), "s3" (staff member 3), "r12-s3" (both)."""
    return "-".join(part for part in (f"r{referrer_id}" if referrer_id is not None else "",
                                      f"s{staff_id}" if staff_id is not None else "") if part)


@dataclass(frozen=True)
class Mark:
    """A manager's "checked" on a flag: the evidence they saw (the newest referral or attempt id, and its time)."""

    rule: str
    subject: str
    evidence_id: int
    evidence_at: datetime
    checked_at: datetime
    checked_by: str | None  # the manager's e-mail address
    note: str | None


@dataclass(frozen=True)
class Check:
    """One flagged referrer (or, for wrong codes, staff member), with the evidence the page shows."""

    rule: str
    count: int  # the referrals the rule counted (for WRONG_CODES: the refused attempts)
    first_at: datetime  # the first and last of them, stored time
    last_at: datetime
    referrer: FlaggedReferrer | None = None  # None for WRONG_CODES; its staff_name says "Erased patient" once erased
    staff_id: int | None = None
    staff_email: str | None = None
    share: int | None = None  # ONE_DESK: the staff member's redemptions of the referrer's friends in the period, %
    friends_in_period: int | None = None  # ONE_DESK: all the referrer's friends in the period
    phones: tuple[str, ...] = ()  # LOOK_ALIKE: the friends' numbers (masked wherever shown)
    money: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    service_vouchers: int = 0
    last_id: int = 0  # the newest of them: a referral's id (WRONG_CODES: an audit event's), what a mark records
    mark: Mark | None = None  # the manager's "checked" mark on this flag, if any (see with_marks)

    @property
    def money_total(self) -> int:
        return sum(self.money.values())

    @property
    def subject(self) -> str:
        return subject_key(self.referrer.id if self.referrer else None, self.staff_id)

    @property
    def checked(self) -> bool:
        """Marked as checked, and nothing newer than what the manager saw then."""
        return self.mark is not None and self.last_id <= self.mark.evidence_id

    @property
    def checked_before(self) -> bool:
        """Marked as checked once, but newer evidence has come since: shown again, saying so."""
        return self.mark is not None and self.last_id > self.mark.evidence_id


def _seconds(column):
    """A stored time as seconds, for differences both databases compute alike."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    return func.julianday(column) * 86400


def _in_runs(source: Subquery, keys: list[str], at_least: int, within: timedelta) -> Subquery:
    """The rows of ``source`` (columns ``id``, ``moment`` and ``keys``) in a run of at least ``at_least`` rows with the
    same keys whose first and last are at most ``within`` apart.

    Two window passes instead of pairing every row with every other: a row ends a run when the one ``at_least - 1``
    places before it (same keys, by time) is close enough; a row is in a run when it or one of the next
    ``at_least - 1`` ends one.
    """
    partition = [source.c[key] for key in keys]
    order = [source.c.moment, source.c.id]
    earlier = func.lag(source.c.moment, literal_column(str(at_least - 1))).over(partition_by=partition,
                                                                                order_by=order)
    span = _seconds(source.c.moment) - _seconds(earlier)
    ends = select(source, case((span <= within.total_seconds(), 1), else_=0).label("ends_run")).subquery()
    in_run = func.max(ends.c.ends_run).over(partition_by=[ends.c[key] for key in keys],
                                            order_by=[ends.c.moment, ends.c.id], rows=(0, at_least - 1))
    marked = select(ends, in_run.label("in_run")).subquery()
    return select(*(marked.c[name] for name in ("id", "moment", *keys))).where(marked.c.in_run == 1).subquery()


def _referrals(scope: Scope, *conditions, staff: bool = False) -> Subquery:
    columns = [Referral.id, Referral.created_at.label("moment"), Referral.referrer_id]
    if staff:
        columns.append(Referral.staff_id)
    return select(*columns).where(*registered_in(scope), *conditions).subquery()


def _checks(rule: str, members: Subquery, extra: dict | None = None, staff: bool = False) -> list[Check]:
    """Rows of ``members`` (flagged referrals: ``id``, ``moment``, ``referrer_id``, and ``staff_id`` when ``staff``)
    as checks, one per referrer (and staff member): counted, named, with the vouchers they issued.

    ``extra``: further fields per key (referrer id, or (referrer id, staff id)).
    """
    keys = [members.c.referrer_id, *([members.c.staff_id] if staff else [])]
    referrer = [getattr(Patient, key) for key in REFERRER_KEYS]
    query = (select(*keys, func.count(members.c.id), func.min(members.c.moment), func.max(members.c.moment),
                    func.max(members.c.id), *referrer)
             .join(Patient, Patient.id == members.c.referrer_id).group_by(*keys, *referrer))
    if staff:
        query = query.add_columns(Staff.email).join(Staff, Staff.id == members.c.staff_id).group_by(Staff.email)
    money = Voucher.kind == RewardKind.MONEY.value
    vouchers = db.session.execute(
        select(*keys, Voucher.currency, func.coalesce(func.sum(case((money, Voucher.amount))), 0),
               func.count(case((Voucher.kind == RewardKind.SERVICE.value, Voucher.id))))
        .join(Voucher, Voucher.referral_id == members.c.id).where(Voucher.status != VoucherStatus.VOID.value)
        .group_by(*keys, Voucher.currency)).all()
    paid: dict[tuple, dict[str, int]] = {}
    services: dict[tuple, int] = {}
    for *key, currency, amount, service_count in vouchers:
        if amount:
            paid.setdefault(tuple(key), {})[currency] = int(amount)
        services[tuple(key)] = services.get(tuple(key), 0) + int(service_count)
    checks = []
    for row in db.session.execute(query):
        key = tuple(row[:len(keys)])
        count, first_at, last_at, last_id, *rest = row[len(keys):]
        checks.append(Check(
            rule, int(count), first_at, last_at, last_id=last_id, referrer=FlaggedReferrer(*rest[:len(REFERRER_KEYS)]),
            staff_id=key[1] if staff else None, staff_email=rest[len(REFERRER_KEYS)] if staff else None,
            money=paid.get(key, {}), service_vouchers=services.get(key, 0),
            **(extra or {}).get(key[0] if not staff else key, {})))
    return sorted(checks, key=lambda check: (-check.money_total, -check.count, check.referrer.id))


def bursts(scope: Scope) -> list[Check]:
    return _checks(BURST, _in_runs(_referrals(scope), ["referrer_id"], BURST_FRIENDS, BURST_WITHIN))


def friends_who_never_came(scope: Scope, now: datetime | None = None) -> list[Check]:
    paid_out = select(Voucher.referral_id).where(Voucher.status != VoucherStatus.VOID.value)
    old = select(Referral.id, Referral.created_at.label("moment"), Referral.referrer_id, Referral.visited_at,
                 Referral.id.in_(paid_out).label("paid_out")).where(
        *registered_in(scope), Referral.created_at < (now or utcnow()) - NEVER_CAME_AFTER).subquery()
    farms = (select(old.c.referrer_id).group_by(old.c.referrer_id)
             .having(func.count(old.c.id) >= NEVER_CAME_FRIENDS, func.count(old.c.visited_at) == 0,
                     func.count(case((old.c.paid_out, 1))) > 0).subquery())
    return _checks(NEVER_CAME, select(old).join(farms, farms.c.referrer_id == old.c.referrer_id).subquery())


def one_desk(scope: Scope) -> list[Check]:
    redeemed = _referrals(scope, Referral.staff_id.is_not(None), staff=True)
    all_friends = _referrals(scope)
    friends = (select(all_friends.c.referrer_id, func.count(all_friends.c.id).label("friends"))
               .group_by(all_friends.c.referrer_id).subquery())
    by_staff = (select(redeemed.c.referrer_id, redeemed.c.staff_id, func.count(redeemed.c.id).label("redeemed"))
                .group_by(redeemed.c.referrer_id, redeemed.c.staff_id).subquery())
    # Fewer redemptions than a run needs can hold no run: left out before the runs are looked for.
    shares = (select(by_staff, friends.c.friends).join(friends, friends.c.referrer_id == by_staff.c.referrer_id)
              .where(by_staff.c.redeemed >= ONE_DESK_FRIENDS,
                     100 * by_staff.c.redeemed >= ONE_DESK_SHARE * friends.c.friends).subquery())
    runs = _in_runs(redeemed, ["referrer_id", "staff_id"], ONE_DESK_FRIENDS, ONE_DESK_WITHIN)
    members = select(runs).join(shares, and_(shares.c.referrer_id == runs.c.referrer_id,
                                             shares.c.staff_id == runs.c.staff_id)).subquery()
    extra = {(referrer_id, staff_id): {"share": 100 * redeemed_count // total, "friends_in_period": total}
             for referrer_id, staff_id, redeemed_count, total in db.session.execute(select(shares))}
    return _checks(ONE_DESK, members, extra, staff=True)


def look_alike_phones(scope: Scope) -> list[Check]:
    friend = aliased(Patient)
    length = func.length(friend.phone)
    phones = (select(Referral.id, Referral.created_at.label("moment"), Referral.referrer_id, friend.phone,
                     func.substr(friend.phone, 1, length - LOOK_ALIKE_DIGITS).label("stem"), length.label("length"))
              .join(friend, friend.id == Referral.friend_id)
              .where(*registered_in(scope), friend.phone.is_not(None), length >= LOOK_ALIKE_MIN_DIGITS).subquery())
    groups = (select(phones.c.referrer_id, phones.c.stem, phones.c.length)
              .group_by(phones.c.referrer_id, phones.c.stem, phones.c.length)
              .having(func.count(phones.c.id) >= LOOK_ALIKE_FRIENDS).subquery())
    members = (select(phones).join(groups, and_(groups.c.referrer_id == phones.c.referrer_id,
                                                groups.c.stem == phones.c.stem, groups.c.length == phones.c.length))
               .subquery())
    numbers: dict[int, list[str]] = {}
    for referrer_id, phone in db.session.execute(select(members.c.referrer_id, members.c.phone)
                                                 .order_by(members.c.referrer_id, members.c.phone)):
        numbers.setdefault(referrer_id, []).append(phone)
    return _checks(LOOK_ALIKE, members, {referrer_id: {"phones": tuple(listed)}
                                         for referrer_id, listed in numbers.items()})


def wrong_codes(scope: Scope) -> list[Check]:
    conditions = [AuditEvent.action == "redemption", AuditEvent.outcome == "refused",
                  AuditEvent.reason.in_(WRONG_CODE_REASONS), AuditEvent.staff_id.is_not(None),
                  AuditEvent.at >= scope.start, AuditEvent.at < scope.end]
    if scope.branch_id is not None:
        conditions.append(AuditEvent.branch_id == scope.branch_id)
    attempts = select(AuditEvent.id, AuditEvent.at.label("moment"), AuditEvent.staff_id).where(*conditions).subquery()
    runs = _in_runs(attempts, ["staff_id"], WRONG_CODES_ATTEMPTS, WRONG_CODES_WITHIN)
    rows = db.session.execute(
        select(runs.c.staff_id, Staff.email, func.count(runs.c.id), func.min(runs.c.moment), func.max(runs.c.moment),
               func.max(runs.c.id))
        .join(Staff, Staff.id == runs.c.staff_id).group_by(runs.c.staff_id, Staff.email)).all()
    return sorted((Check(WRONG_CODES, int(count), first_at, last_at, staff_id=staff_id, staff_email=email,
                         last_id=last_id)
                   for staff_id, email, count, first_at, last_at, last_id in rows),
                  key=lambda check: (-check.count, check.staff_email))


def referral_checks(scope: Scope, now: datetime | None = None) -> list[Check]:
    """Every flagged row in the scope, rule by rule in the order of ``RULES``."""
    return [*bursts(scope), *friends_who_never_came(scope, now), *one_desk(scope), *look_alike_phones(scope),
            *wrong_codes(scope)]


_MARKS = (select(CheckMark.rule, CheckMark.subject, CheckMark.evidence_id, CheckMark.evidence_at, CheckMark.checked_at,
                 Staff.email, CheckMark.note).outerjoin(Staff, Staff.id == CheckMark.checked_by_id))


def with_marks(checks: list[Check]) -> list[Check]:
    """The checks, each with the manager's mark on its flag when there is one."""
    if not checks:
        return []
    marks = {(row.rule, row.subject): Mark(*row) for row in db.session.execute(
        _MARKS.where(CheckMark.subject.in_({check.subject for check in checks})))}
    return [replace(check, mark=marks.get((check.rule, check.subject))) for check in checks]


def check_note(raw: str | None) -> str:
    """The mark's optional note: one line of printable text, at most NOTE_LENGTH characters (422 otherwise)."""
    try:
        return clean_text(raw, max_length=NOTE_LENGTH, label=_l("Note"), required=False)
    except ValueError as problem:
        raise Refused("validation_error", str(problem), field="note", status=422) from None


def check_subject(rule: str | None, referrer_id: int | None, staff_id: int | None) -> None:
    """A known rule with the subject it flags (a referrer, a staff member, or both for one desk); 400 otherwise."""
    if rule not in RULES:
        raise Refused("unknown_rule", _("There is no such rule: reload the page."), status=400)
    wants_referrer, wants_staff = rule not in STAFF_RULES, rule not in REFERRER_RULES
    if (referrer_id is not None) != wants_referrer or (staff_id is not None) != wants_staff:
        raise Refused("unknown_subject", _("This row was not sent as the page made it: reload the page."),
                      status=400)


def _evidence_at(rule: str, referrer_id: int | None, staff_id: int | None, evidence_id: int) -> datetime | None:
    """When the evidence the page showed happened, if it is evidence of this flag: a referral of this referrer (and
    for one desk, redeemed by this staff member), or this staff member's refused attempt with a wrong code.

    So a mark can only record evidence that exists, and a made-up id cannot hide a flag's future evidence.
    """
    if rule == WRONG_CODES:
        return db.session.scalar(select(AuditEvent.at).where(
            AuditEvent.id == evidence_id, AuditEvent.action == "redemption", AuditEvent.outcome == "refused",
            AuditEvent.reason.in_(WRONG_CODE_REASONS), AuditEvent.staff_id == staff_id))
    conditions = [Referral.id == evidence_id, Referral.referrer_id == referrer_id]
    if rule == ONE_DESK:
        conditions.append(Referral.staff_id == staff_id)
    return db.session.scalar(select(Referral.created_at).where(*conditions))


def mark_checked(rule: str | None, referrer_id: int | None, staff_id: int | None, evidence_id: int | None,
                 raw_note: str | None, actor: Actor, now: datetime | None = None) -> Mark:
    """The manager looked at a flag and found nothing wrong, having seen its evidence up to ``evidence_id``.

    Written once per flag and moved on only by newer evidence: a double click (or two managers at once) records one
    mark and one audit event; the second press changes nothing and is no error. Refused: an unknown rule or a
    subject the rule does not flag (400), evidence that is not this flag's (404), a bad note (422). The note is
    not copied into the append-only audit log (a manager may write a name in it).
    """
    note = check_note(raw_note)
    check_subject(rule, referrer_id, staff_id)
    if evidence_id is None:
        raise Refused("unknown_subject", _("This row was not sent as the page made it: reload the page."),
                      status=400)
    subject = subject_key(referrer_id, staff_id)
    now = now or utcnow()
    with atomic():
        evidence_at = _evidence_at(rule, referrer_id, staff_id, evidence_id)
        if evidence_at is None:
            raise Refused("not_found", _("There is no such row to check: reload the page."), status=404)
        values = {"evidence_id": evidence_id, "evidence_at": evidence_at, "checked_at": now,
                  "checked_by_id": actor.staff_id, "note": note or None}
        marked = insert_ignoring_duplicates(CheckMark, {"rule": rule, "subject": subject, "referrer_id": referrer_id,
                                                        "staff_id": staff_id, **values})
        if not marked:
            marked = db.session.execute(
                update(CheckMark).where(CheckMark.rule == rule, CheckMark.subject == subject,
                                        CheckMark.evidence_id < evidence_id)
                .values(**values).execution_options(synchronize_session=False)).rowcount == 1
        if marked:
            audit.record("check.marked", actor, patient_id=referrer_id, rule=rule, flagged_staff_id=staff_id,
                         evidence_id=evidence_id, with_note=bool(note) or None)
        mark = Mark(*db.session.execute(_MARKS.where(CheckMark.rule == rule, CheckMark.subject == subject)).one())
    return mark


def forget_patient(patient_id: int) -> int:
    """For the erasure (in its transaction): marks on the patient as a referrer keep their rule, evidence, who and
    when (the flag stays checked; its referrals stay linked to the anonymised row), without the note, which a
    manager may have written their name in. Returns how many."""
    return db.session.execute(
        update(CheckMark).where(CheckMark.referrer_id == patient_id, CheckMark.note.is_not(None)).values(note=None)
        .execution_options(synchronize_session=False)).rowcount
