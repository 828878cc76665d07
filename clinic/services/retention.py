"""The retention rule: erase the personal data of patients who have shown no activity for the clinic's period.

PDPA (Singapore, Malaysia), PIPL (China) and GDPR say personal data is kept no longer than needed. A clinic sets
"erase after N months without activity" on its settings page (``Clinic.retention_months``; NULL: off); the daily
``flask erase-inactive-patients`` and the manager's button erase the patients due, each through
:func:`clinic.services.erasure.erase_patient` in a transaction of its own, so one failure undoes no other erasure.

A patient's activity is the latest of these moments, each something the patient did or that happened with them:
enrolment; any referral where they are the referrer or the friend — its redemption, the friend's first visit, the
first payment; a voucher issued to them, or spent by them; a gift-pack card activated for them (a discharge); a new
private progress link (the patient asked for one); and a change of their privacy choices — messages, name on
posters, leaderboard — whoever recorded it (the audit log's ``patient.*_consent`` events, and the moment the
messaging consent in force was given); an answer to "How was your visit?" on their progress page, and their asking
the manager to call them (clinic/services/feedback.py).

Left out, on purpose: a referral's reversal, a voucher's voiding or expiry, corrections of the patient's details and
data exports, the manager's call after a feedback (staff acting on the record, not the patient coming back: a
clean-up would otherwise keep everyone);
views of the progress page (not recorded anywhere: it is read without writing); messages sent to them (the clinic
speaking, not the patient), their code sent by message among them (``Patient.last_invited_at``).

Never due, whatever the dates: a patient holding a voucher they could still spend (active, not expired), which
erasing would leave valid but unnameable; and a patient named by a review waiting for a manager (an existing-patient
check, or a reward over a cap): the manager decides first.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, func, literal_column, select, union_all
from sqlalchemy.exc import SQLAlchemyError

from clinic.extensions import db
from clinic.models import (AuditEvent, Card, Patient, Referral, ReviewRequest, Reward, VisitFeedback, Voucher,
                           VoucherStatus)
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.clinic_settings import current_clinic
from clinic.services.erasure import RETENTION_REASON, erase_patient
from clinic.services.errors import Refused
from clinic.services.privacy import mask_name
from clinic.services.transaction import Actor, atomic

PRIVACY_CHOICE_EVENTS = ("patient.notification_consent", "patient.poster_consent", "patient.leaderboard_consent")


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (31 March less one month: 28 or 29 February)."""
    month_index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(month_index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _activity_moments():
    """(patient_id, moment) for every activity of the module's list, as one UNION ALL."""
    referral_moments = [
        select(side.label("patient_id"), moment.label("at")).where(moment.is_not(None))
        for side in (Referral.referrer_id, Referral.friend_id)
        for moment in (Referral.created_at, Referral.visited_at, Referral.paid_at)
    ]
    return union_all(
        select(Patient.id.label("patient_id"), Patient.enrolled_at.label("at")),
        select(Patient.id, Patient.progress_link_issued_at),
        select(Patient.id, Patient.notification_consent_at).where(Patient.notification_consent_at.is_not(None)),
        *referral_moments,
        select(Voucher.patient_id, Voucher.issued_at),
        select(Voucher.patient_id, Voucher.spent_at).where(Voucher.spent_at.is_not(None)),
        select(Card.patient_id, Card.activated_at).where(Card.patient_id.is_not(None), Card.activated_at.is_not(None)),
        select(AuditEvent.patient_id, AuditEvent.at).where(AuditEvent.action.in_(PRIVACY_CHOICE_EVENTS),
                                                           AuditEvent.patient_id.is_not(None)),
        select(VisitFeedback.patient_id, VisitFeedback.created_at).where(VisitFeedback.patient_id.is_not(None)),
        select(VisitFeedback.patient_id, VisitFeedback.callback_requested_at).where(
            VisitFeedback.patient_id.is_not(None), VisitFeedback.callback_requested_at.is_not(None)),
    ).subquery("activity")


def _under_review():
    """Ids of patients a waiting review names: the existing patient, the referrer, the one a reward would pay."""
    pending = ReviewRequest.status == "pending"
    return union_all(
        select(ReviewRequest.patient_id).where(pending, ReviewRequest.patient_id.is_not(None)),
        select(ReviewRequest.referrer_id).where(pending, ReviewRequest.referrer_id.is_not(None)),
        select(Reward.patient_id).join(ReviewRequest, ReviewRequest.reward_id == Reward.id).where(pending),
    )


def due_query(months: int, now: datetime, patient_id: int | None = None):
    """SELECT patient id, last activity of the patients due: one statement, whatever the number of patients
    (``patient_id``: only whether that one is due)."""
    activity = _activity_moments()
    last = func.max(activity.c.at).label("last_activity")
    spendable = exists().where(Voucher.patient_id == activity.c.patient_id,
                               Voucher.status == VoucherStatus.ACTIVE.value, Voucher.expires_at > now)
    query = (select(activity.c.patient_id, last)
             .join(Patient, Patient.id == activity.c.patient_id)
             .where(Patient.erased_at.is_(None), ~spendable, activity.c.patient_id.not_in(_under_review()))
             .group_by(activity.c.patient_id)
             .having(func.max(activity.c.at) < months_before(now, months))
             .order_by(literal_column("last_activity"), activity.c.patient_id))
    return query if patient_id is None else query.where(activity.c.patient_id == patient_id)


def is_due(patient_id: int, months: int, now: datetime) -> bool:
    """Whether this patient is still due (the erasure asks again under its lock: see erase_inactive_patients)."""
    return db.session.execute(due_query(months, now, patient_id)).first() is not None


@dataclass(frozen=True)
class DuePatient:
    """One patient due, as the manager's list shows them: masked, with the day of their last activity."""

    id: int
    masked_name: str
    last_activity: datetime


def retention_months() -> int | None:
    return current_clinic().retention_months


def due_patient_ids(now: datetime | None = None, limit: int | None = None) -> list[int]:
    """The ids of the patients due under the clinic's rule, oldest activity first; none when the rule is off."""
    months = retention_months()
    if not months:
        return []
    return [row.patient_id for row in db.session.execute(due_query(months, now or utcnow()).limit(limit))]


def due_count(now: datetime | None = None) -> int:
    """How many patients are due under the clinic's rule; 0 when it is off."""
    months = retention_months()
    if not months:
        return 0
    return db.session.scalar(select(func.count()).select_from(due_query(months, now or utcnow()).order_by(None)
                                                              .subquery()))


def due_patients(limit: int, now: datetime | None = None) -> tuple[int, list[DuePatient]]:
    """How many are due, and the first ``limit`` of them with masked names (two queries)."""
    months = retention_months()
    if not months:
        return 0, []
    now = now or utcnow()
    count = due_count(now)
    due = due_query(months, now).subquery()
    rows = db.session.execute(select(due.c.patient_id, due.c.last_activity, Patient.full_name)
                              .join(Patient, Patient.id == due.c.patient_id)
                              .order_by(due.c.last_activity, due.c.patient_id).limit(limit))
    return count, [DuePatient(row.patient_id, mask_name(row.full_name), row.last_activity) for row in rows]


@dataclass
class RetentionReport:
    months: int | None
    erased: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # erased meanwhile, gone, or active again since the list
    failed: dict[int, str] = field(default_factory=dict)  # patient id -> what went wrong

    def describe(self) -> str:
        if not self.months:
            return "The retention rule is off: nothing to erase."
        text = f"Erased the personal data of {len(self.erased)} patients inactive for {self.months} months"
        text += f": {', '.join(map(str, self.erased))}." if self.erased else "."
        if self.skipped:
            text += f" Skipped (erased meanwhile, or active again): {', '.join(map(str, self.skipped))}."
        if self.failed:
            text += " Failed: " + "; ".join(f"{pid} ({problem})" for pid, problem in self.failed.items()) + "."
        return text


def erase_inactive_patients(actor: Actor, now: datetime | None = None, limit: int | None = None) -> RetentionReport:
    """Erase each patient due (the ``limit`` oldest, when given), one transaction each, and audit the run as a whole.

    ``actor`` says who pressed (a manager) or nobody (the command); either way the audit log names the retention rule
    (``Actor.rule``). A patient erased meanwhile (another run, a manager) or active again since the list was read is
    skipped; one whose erasure fails is reported and left for the next run, after the others. Running it twice erases nothing the second time.
    """
    actor = Actor(staff_id=actor.staff_id, ip=actor.ip, branch_id=actor.branch_id, rule=audit.RETENTION_RULE)
    report = RetentionReport(months=retention_months())
    now = now or utcnow()
    for patient_id in due_patient_ids(now, limit):
        try:
            # Asked again inside the erasure's transaction, with the patient's row locked: a patient who redeemed,
            # got a voucher or was sent for review since the list was made is skipped, not erased.
            erase_patient(patient_id, RETENTION_REASON, actor,
                          only_if=lambda patient_id=patient_id: is_due(patient_id, report.months, now))
        except Refused:
            report.skipped.append(patient_id)
        except SQLAlchemyError as problem:
            db.session.rollback()
            report.failed[patient_id] = type(problem).__name__
        else:
            report.erased.append(patient_id)
    if report.erased or report.failed:
        with atomic():
            audit.record("retention.run", actor, retention_months=report.months, erased=len(report.erased),
                         failed=len(report.failed) or None)
    return report

