"""The audit log: every redemption attempt, voucher change, login and setting change."""

from __future__ import annotations

from sqlalchemy import insert, select

from clinic.extensions import db
from clinic.models import AuditEvent, Patient
from clinic.services.transaction import Actor, atomic, insert_row

# details[BY] of an event no staff member caused: PATIENT_LINK, the patient on their own private link, or a rule of the
# clinic's acting by itself (Actor.rule): RETENTION_RULE, the erasure of patients inactive too long (services/retention.py).
BY = "by"
PATIENT_LINK = "patient_link"
RETENTION_RULE = "retention_rule"
# A friend asking to be called back on the invite page (clinic/services/leads.py): nobody logged in.
INVITE_PAGE = "invite_page"


def record(action: str, actor: Actor, *, outcome: str = "ok", reason: str | None = None,
           patient_id: int | None = None, voucher_id: int | None = None,
           referral_id: int | None = None, **details) -> AuditEvent:
    """Write an audit event in the current transaction, so it commits (or rolls back) with the effect it records.

    Written at once, by one INSERT, rather than left to the session's flush: a redemption records
    several, and the flush costs more than the statements.
    """
    return insert_row(AuditEvent(**_event_values(action, actor, outcome=outcome, reason=reason, patient_id=patient_id,
                                                 voucher_id=voucher_id, referral_id=referral_id, **details)))


_INSERT_EVENTS = insert(AuditEvent.__table__)


def record_all(actor: Actor, events: list[tuple[str, dict]]) -> None:
    """Several events of one action, each ``(action, keyword arguments of record())``, written in order by one INSERT.

    For an action that records several at once (a redemption: itself and each voucher it issued).
    """
    db.session.connection().execute(_INSERT_EVENTS, [_event_values(action, actor, **arguments)
                                                     for action, arguments in events])


def _event_values(action: str, actor: Actor, *, outcome: str = "ok", reason: str | None = None,
                  patient_id: int | None = None, voucher_id: int | None = None, referral_id: int | None = None,
                  **details) -> dict:
    return {
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "staff_id": actor.staff_id,
        "branch_id": actor.branch_id,
        "ip": actor.ip,
        "patient_id": patient_id,
        "voucher_id": voucher_id,
        "referral_id": referral_id,
        "details": {key: value for key, value in {**details, "api_token": actor.api_token,
                                                   BY: PATIENT_LINK if actor.patient_link else actor.rule}.items()
                    if value is not None},
    }


def record_for_each_patient(action: str, actor: Actor, patient_ids: list[int], **details) -> None:
    """One event per patient, written by a single bulk INSERT in the current transaction.

    For actions on thousands of patients at once (an import), where adding an ORM object
    per event would cost seconds.
    """
    if not patient_ids:
        return
    shared = {"action": action, "outcome": "ok", "staff_id": actor.staff_id, "branch_id": actor.branch_id,
              "ip": actor.ip, "details": {key: value for key, value in details.items() if value is not None}}
    db.session.execute(insert(AuditEvent), [{**shared, "patient_id": patient_id} for patient_id in patient_ids])


def record_refusal(action: str, actor: Actor, reason: str, **kwargs) -> None:
    """Record a refused attempt in a transaction of its own (the attempt itself changed nothing)."""
    with atomic():
        record(action, actor, outcome="refused", reason=reason, **kwargs)


def search_events(*, action: str | None = None, outcome: str | None = None,
                  staff_id: int | None = None, patient_id: int | None = None, branch_id: int | None = None,
                  limit: int = 200, before_id: int | None = None) -> list[AuditEvent]:
    """Newest first, filtered; ``before_id`` pages back through older events."""
    if action and "\x00" in action:
        return []  # no action has a NUL, and PostgreSQL refuses to compare text holding one
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    if staff_id:
        query = query.where(AuditEvent.staff_id == staff_id)
    if patient_id:
        query = query.where(AuditEvent.patient_id == patient_id)
    if branch_id:
        query = query.where(AuditEvent.branch_id == branch_id)
    if before_id:
        query = query.where(AuditEvent.id < before_id)
    events = list(db.session.scalars(query))
    _load_named_patients(events)
    return events


def _load_named_patients(events: list[AuditEvent]) -> None:
    """Load the patients the events name, in one query, for the page that shows their names.

    The audit log names each event's patient (``event.patient``) and the referrer its details name
    (templating.audit_details): loaded one by one, a page of a busy day's redemptions sent two queries an event.
    Loaded here, both are found in the session's identity map, which keeps only objects something refers to: so
    the loaded patients are kept in the session's ``info`` for its lifetime (the request).
    """
    ids = {event.patient_id for event in events}
    ids.update(event.details.get("referrer_id") for event in events if event.details)
    ids = {patient_id for patient_id in ids if isinstance(patient_id, int)}
    if ids:
        db.session.info["named_patients"] = db.session.scalars(select(Patient).where(Patient.id.in_(ids))).all()


def audit_actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
