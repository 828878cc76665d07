""""How was your visit?": the Net Promoter question on the patient's progress page, and the manager's follow-up.

The portal turns happy patients into new patients; asking everyone to refer works less well than asking the happy
ones when they are happy, and an unhappy patient asked to refer is the clinic's worst advertisement. So the progress
page asks "How likely are you to recommend <clinic> to a friend?" (0-10): promoters (9-10) are pointed to the share
block with the friend's offer, passives (7-8) thanked, detractors (0-6) offered a call from the manager, who sees the
wishes on "Patients to call" and records each call (audited).

One answer per patient per ``DAYS_BETWEEN_ANSWERS``: decided by the database, not by a read in Python. The patient's
row is locked FOR UPDATE (PostgreSQL; SQLite's write transaction is already exclusive) and the row is written by a
conditional INSERT … SELECT … WHERE NOT EXISTS (an answer in the window): two submits at the same moment write one.

What is not here, on purpose: free text (a comment box invites diagnoses and treatments, which the portal must never
hold: DESIGN.md); an audit event for the answer or the wish to be called (the patient's own act, changing no money
and no setting; the audit log is append-only and would tie an erased patient's opinion to their id for ever). The
manager's call is a staff action and is audited (``feedback.called``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import DateTime, Integer, and_, bindparam, case, exists, func, insert, select, update

from clinic.extensions import db
from clinic.models import Patient, Staff, VisitFeedback
from clinic.i18n import format_day
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.clinic_settings import clinic_day_of
from clinic.services.errors import Refused
from clinic.services.patients import hash_token
from clinic.services.transaction import Actor, atomic

DAYS_BETWEEN_ANSWERS = 90
SCORES = range(0, 11)
PROMOTER_FROM = 9  # 9-10
PASSIVE_FROM = 7  # 7-8; 0-6 are detractors
CALLS_PER_PAGE = 100  # rows on one page of "Patients to call"; the pager reaches the rest


def band(score: int) -> str:
    """``promoter`` (9-10), ``passive`` (7-8) or ``detractor`` (0-6): the Net Promoter Score's groups."""
    if score >= PROMOTER_FROM:
        return "promoter"
    if score >= PASSIVE_FROM:
        return "passive"
    return "detractor"


def window_start(now: datetime) -> datetime:
    """Answers given after this moment stop the patient answering again."""
    return now - timedelta(days=DAYS_BETWEEN_ANSWERS)


def parse_score(values: list[str]) -> int:
    """The score a form sent: exactly one whole number 0-10, else refused (422) in the patient's words."""
    if not values or not values[0].strip():
        raise Refused("validation_error", _("Choose a number from 0 to 10."), field="score", status=422)
    text = values[0].strip()
    if len(values) > 1 or len(text) > 2 or not text.isascii() or not text.isdigit() or int(text) not in SCORES:
        raise Refused("validation_error", _("Choose one number from 0 to 10."), field="score", status=422)
    return int(text)


@dataclass(frozen=True)
class GivenAnswer:
    """The patient's answer in the current window, as their progress page shows it."""

    id: int
    score: int
    created_at: datetime
    callback_requested_at: datetime | None

    @property
    def band(self) -> str:
        return band(self.score)

    @property
    def next_answer_from(self) -> datetime:
        return self.created_at + timedelta(days=DAYS_BETWEEN_ANSWERS)


# Built once (see progress.py): the latest answer in the window, for the progress page's card.
_LATEST_ANSWER = (select(VisitFeedback.id, VisitFeedback.score, VisitFeedback.created_at,
                         VisitFeedback.callback_requested_at)
                  .where(VisitFeedback.patient_id == bindparam("patient_id"),
                         VisitFeedback.created_at > bindparam("since", type_=DateTime()))
                  .order_by(VisitFeedback.created_at.desc(), VisitFeedback.id.desc()).limit(1))


def answered_recently(patient_id):
    """An EXISTS for a statement that reads the patient (the progress page's first query): any answer in the window.

    ``feedback_since`` is bound when the statement runs (``window_start(now)``).
    """
    return exists().where(VisitFeedback.patient_id == patient_id,
                          VisitFeedback.created_at > bindparam("feedback_since", type_=DateTime()))


def latest_answer(connection, patient_id: int, now: datetime) -> GivenAnswer | None:
    row = connection.execute(_LATEST_ANSWER, {"patient_id": patient_id, "since": window_start(now)}).first()
    return GivenAnswer(*row) if row else None


def _patient_holding(token: str) -> Patient:
    """The patient whose progress link this is, locked FOR UPDATE in the current transaction; else 404.

    FOR UPDATE, not FOR SHARE: two submits of the same patient must come one after the other, so that the second
    one's NOT EXISTS sees the first one's row. An erased patient's link no longer exists (erasure.py replaces its
    hash), so they are refused here as any unknown link is.
    """
    if not token or len(token) > 128:
        raise _unknown_link()
    token_hash = hash_token(token)
    patient = db.session.scalar(select(Patient).where(Patient.progress_token_hash == token_hash)
                                .with_for_update().execution_options(populate_existing=True))
    if patient is None or patient.erased_at is not None:
        raise _unknown_link()
    return patient


def _unknown_link() -> Refused:
    return Refused("unknown_link", _("This link is not valid"), status=404)


def record_answer(token: str, score: int, now: datetime | None = None) -> GivenAnswer:
    """Save the patient's score; refused with 409 (nothing written) when they answered in the last 90 days."""
    if score not in SCORES:
        raise Refused("validation_error", _("Choose one number from 0 to 10."), field="score", status=422)
    now = now or utcnow()
    with atomic():
        patient = _patient_holding(token)
        earlier = select(VisitFeedback.id).where(VisitFeedback.patient_id == patient.id,
                                                 VisitFeedback.created_at > window_start(now))
        values = select(bindparam("p", patient.id, type_=Integer()), bindparam("b", patient.branch_id, type_=Integer()),
                        bindparam("s", score, type_=Integer()), bindparam("at", now, type_=DateTime())
                        ).where(~exists(earlier))
        written = db.session.execute(
            insert(VisitFeedback).from_select(["patient_id", "branch_id", "score", "created_at"], values)
            .returning(VisitFeedback.id)).first()
        if written is None:
            given = latest_answer(db.session.connection(), patient.id, now)
            raise Refused("already_answered", _(
                "You already answered on %(day)s: thank you. You can answer again from %(next)s.",
                day=_day(given.created_at), next=_day(given.next_answer_from)), status=409)
    return GivenAnswer(written[0], score, now, None)


def _day(moment: datetime) -> str:
    """The clinic's calendar day of a stored time, in the reader's language (as the page shows dates)."""
    return format_day(clinic_day_of(moment))


def request_callback(token: str, now: datetime | None = None) -> GivenAnswer:
    """Record that a detractor wants the manager to call them; a second press changes nothing and is no error.

    Refused (409) when the clinic has no phone number for them (the page tells them to call the clinic instead), and
    when their answer in the window was not a detractor's (the page offers the call only to them).
    """
    now = now or utcnow()
    with atomic():
        patient = _patient_holding(token)
        if not patient.phone:
            raise Refused("no_phone", _("The clinic has no phone number for you: please call the clinic."),
                          status=409)
        latest = latest_answer(db.session.connection(), patient.id, now)
        if latest is None or latest.band != "detractor":
            raise Refused("not_offered", _("A call from the manager is offered after a score from 0 to 6."),
                          status=409)
        if latest.callback_requested_at is None:
            db.session.execute(update(VisitFeedback).where(VisitFeedback.id == latest.id,
                                                           VisitFeedback.callback_requested_at.is_(None))
                               .values(callback_requested_at=now).execution_options(synchronize_session=False))
    return GivenAnswer(latest.id, latest.score, latest.created_at, latest.callback_requested_at or now)


@dataclass(frozen=True)
class CallRow:
    """A detractor who asked for a call, as the manager's list shows them."""

    id: int
    patient_id: int
    full_name: str
    phone: str | None
    score: int
    answered_at: datetime
    requested_at: datetime
    called_at: datetime | None
    called_by: str | None


_CALLS = (select(VisitFeedback.id, Patient.id, Patient.full_name, Patient.phone, VisitFeedback.score,
                 VisitFeedback.created_at, VisitFeedback.callback_requested_at, VisitFeedback.followed_up_at,
                 Staff.email)
          .join(Patient, Patient.id == VisitFeedback.patient_id)
          .outerjoin(Staff, Staff.id == VisitFeedback.followed_up_by_id)
          .where(VisitFeedback.callback_requested_at.is_not(None), Patient.erased_at.is_(None)))


@dataclass(frozen=True)
class CallPage:
    """One page of the call list, with what the pager needs: which page of how many, and the whole list's size."""

    rows: list[CallRow]
    number: int
    pages: int
    total: int


def patients_to_call(page: int = 1, per_page: int | None = None) -> CallPage:
    """Detractors who asked for a call, those not yet called first, then newest first (by when they asked).

    Paged by number, not by a "before this id" cursor like the audit log: the order is not the id's, and a row moves
    when the manager presses "Called". A page past the end shows the last one (a stale link still lands somewhere).
    """
    per_page = per_page or CALLS_PER_PAGE
    total = db.session.scalar(select(func.count()).select_from(_CALLS.subquery()))
    pages = max(1, -(-total // per_page))
    number = min(max(page, 1), pages)
    rows = db.session.execute(_CALLS.order_by(VisitFeedback.followed_up_at.is_not(None),
                                              VisitFeedback.callback_requested_at.desc(),
                                              VisitFeedback.id.desc())
                              .limit(per_page).offset((number - 1) * per_page))
    return CallPage([CallRow(*row) for row in rows], number, pages, total)


def call_row(feedback_id: int) -> CallRow | None:
    row = db.session.execute(_CALLS.where(VisitFeedback.id == feedback_id)).first()
    return CallRow(*row) if row else None


def mark_called(feedback_id: int, actor: Actor, now: datetime | None = None) -> CallRow:
    """The manager called the patient back: recorded once (a conditional UPDATE) and audited; 404 / 409 otherwise."""
    now = now or utcnow()
    with atomic():
        claimed = db.session.execute(
            update(VisitFeedback).where(VisitFeedback.id == feedback_id,
                                        VisitFeedback.callback_requested_at.is_not(None),
                                        VisitFeedback.followed_up_at.is_(None),
                                        VisitFeedback.patient_id.in_(select(Patient.id).where(
                                            Patient.erased_at.is_(None))))
            .values(followed_up_at=now, followed_up_by_id=actor.staff_id)
            .execution_options(synchronize_session=False)).rowcount
        row = call_row(feedback_id)
        if row is None:
            raise Refused("not_found", _("There is no such call to make."), status=404)
        if claimed != 1:
            raise Refused("already_called", _("This patient was already called."), status=409)
        audit.record("feedback.called", actor, patient_id=row.patient_id, feedback_id=feedback_id, score=row.score)
    return row


@dataclass(frozen=True)
class NpsFigures:
    answers: int
    promoters: int
    passives: int
    detractors: int

    @property
    def nps(self) -> int | None:
        """% promoters − % detractors, a whole number rounded half away from zero; None with no answers."""
        if not self.answers:
            return None
        difference = self.promoters - self.detractors
        magnitude = (200 * abs(difference) + self.answers) // (2 * self.answers)
        return magnitude if difference >= 0 else -magnitude


def nps_figures(scope) -> NpsFigures:
    """The answers given in the report's period (clinic/services/reports.py Scope), at its branch when it has one.

    The branch is the patient's when they answered (kept on the row, so erased patients' answers still count).
    """
    conditions = [VisitFeedback.created_at >= scope.start, VisitFeedback.created_at < scope.end]
    if scope.branch_id is not None:
        conditions.append(VisitFeedback.branch_id == scope.branch_id)
    promoter = VisitFeedback.score >= PROMOTER_FROM
    passive = and_(VisitFeedback.score >= PASSIVE_FROM, VisitFeedback.score < PROMOTER_FROM)
    row = db.session.execute(select(
        func.count(VisitFeedback.id),
        func.count(case((promoter, VisitFeedback.id))),
        func.count(case((passive, VisitFeedback.id))),
        func.count(case((VisitFeedback.score < PASSIVE_FROM, VisitFeedback.id))),
    ).where(*conditions)).one()
    return NpsFigures(*(int(value) for value in row))


def forget_patient(patient_id: int) -> int:
    """For the erasure (in its transaction): the patient's answers keep their score, date and branch, with no
    patient and no call wish, so the clinic's NPS history stays right and nothing names them. Returns how many."""
    return db.session.execute(
        update(VisitFeedback).where(VisitFeedback.patient_id == patient_id)
        .values(patient_id=None, callback_requested_at=None, followed_up_at=None, followed_up_by_id=None)
        .execution_options(synchronize_session=False)).rowcount
