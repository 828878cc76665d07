"""Issuing, spending and voiding vouchers: each change happens once and is audited."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import select, update

from clinic.extensions import db
from clinic.i18n import format_day, format_moment
from clinic.models import IssuedCode, Patient, Referral, Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.services import audit, events, idempotency
from clinic.services.clinic_settings import (RewardTerms, clinic_day_of, clinic_local, last_day_before,
                                             start_of_clinic_day)
from clinic.services.codes import CodeKind, InvalidCode, generate_bearer_code, parse_code
from clinic.services.errors import Refused
from clinic.services.text import clean_reason
from clinic.services.transaction import Actor, insert_new_rows, insert_row


def unused_bearer_code() -> str:
    """A bearer code no card or voucher has had; claimed in the current transaction."""
    return unused_bearer_codes(1)[0]


def unused_bearer_codes(count: int) -> list[str]:
    """``count`` distinct bearer codes no card or voucher has had, claimed in the current transaction by one INSERT.

    A code already issued (a rare collision) is left out by the INSERT and drawn again.
    """
    codes: list[str] = []
    while len(codes) < count:
        drawn = {generate_bearer_code() for _ in range(count - len(codes))}
        claimed = insert_new_rows(IssuedCode, [{"code": code, "kind": "voucher"} for code in drawn])
        codes += [code for (code,) in claimed]
    return codes


def issue_voucher(patient: Patient, reward: RewardTerms, *, beneficiary: str, currency: str, valid_days: int,
                  actor: Actor, referral: Referral | None = None) -> Voucher:
    """Add a voucher and its audit event to the current transaction."""
    voucher = new_voucher(patient, reward, beneficiary=beneficiary, currency=currency, valid_days=valid_days,
                          referral=referral)
    record_issued(voucher, patient, actor)
    return voucher


def new_voucher(patient: Patient, reward: RewardTerms, *, beneficiary: str, currency: str, valid_days: int,
                referral: Referral | None = None) -> Voucher:
    """A voucher with a fresh code, written in the current transaction (it has its id) but not yet audited.

    The caller then audits and announces it with :func:`record_issued` (a redemption writes both sides'
    vouchers first); :func:`issue_voucher` does both for one voucher.
    """
    return insert_row(voucher_row(unused_bearer_code(), patient, reward, beneficiary=beneficiary, currency=currency,
                                  valid_days=valid_days, referral=referral, now=utcnow()))


def voucher_row(code: str, patient: Patient, reward: RewardTerms, *, beneficiary: str, currency: str, valid_days: int,
                referral: Referral | None, now) -> Voucher:
    """A new active voucher with a claimed ``code``, not yet written (a redemption writes both sides' at once)."""
    return Voucher(
        code=code,
        patient_id=patient.id,
        referral_id=referral.id if referral else None,
        beneficiary=beneficiary,
        kind=reward.kind,
        amount=reward.amount,
        label=reward.label,
        currency=currency,
        status=VoucherStatus.ACTIVE.value,
        issued_at=now,
        expires_at=expiry_for(now, valid_days),
    )


def expiry_for(issued_at: datetime, valid_days: int) -> datetime:
    """When a voucher issued at ``issued_at`` stops being spendable: the end of the clinic's day ``valid_days`` later.

    The patient is shown only a day ("valid until 25 Nov"), so the voucher must hold all of that day in the
    clinic's time zone, not stop at the hour it was issued. Stored like a campaign's end, as the exclusive
    local midnight after that day: every page, message and refusal shows ``last_day_before(expires_at)``.
    """
    return start_of_clinic_day(clinic_day_of(issued_at) + timedelta(days=valid_days + 1))


def record_issued(voucher: Voucher, patient: Patient, actor: Actor) -> None:
    """The audit event and the webhook event of a voucher just issued (flushed: it has its id)."""
    action, arguments = issued_audit_event(voucher, patient)
    audit.record(action, actor, **arguments)
    events.voucher_issued(voucher, patient)


def issued_audit_event(voucher: Voucher, patient: Patient) -> tuple[str, dict]:
    """The audit event of a voucher just issued, as ``audit.record_all`` takes it."""
    return "voucher.issued", dict(patient_id=patient.id, voucher_id=voucher.id, referral_id=voucher.referral_id,
                                  beneficiary=voucher.beneficiary, kind=voucher.kind, amount=voucher.amount,
                                  label=voucher.label or None, currency=voucher.currency)


def find_voucher(code: str) -> Voucher | None:
    """Read fresh from the database (after a refused conditional UPDATE, an older copy could mislead)."""
    return db.session.scalar(select(Voucher).where(Voucher.code == code).execution_options(populate_existing=True))


def explain_unusable(voucher: Voucher | None) -> Refused:
    """Why a voucher cannot be spent or voided now, in words the desk can read out."""
    if voucher is None:
        return Refused("unknown_code", _("No voucher has this code."), field="code", status=404)
    status = voucher.status_at(utcnow())
    if status is VoucherStatus.SPENT:
        return Refused("already_spent", _("This voucher was already spent on %(when)s.",
                                          when=format_moment(clinic_local(voucher.spent_at))), field="code", status=409)
    if status is VoucherStatus.VOID:
        return Refused("voided", _("This voucher was voided: %(reason)s.", reason=voucher.void_reason), field="code",
                       status=409)
    return Refused("expired", _("This voucher has expired: it was valid until %(day)s.",
                                day=format_day(last_day_before(voucher.expires_at))), field="code", status=409)


def parse_voucher_code(raw: str | None) -> str:
    try:
        parsed = parse_code(raw)
    except InvalidCode as problem:
        raise problem.as_refusal() from None
    if parsed.kind is not CodeKind.BEARER:
        raise Refused("not_a_voucher", _("That is a personal referral code, not a voucher code."), field="code")
    return parsed.code


def spend_voucher(raw_code: str | None, actor: Actor, *, idempotency_key: str | None = None) -> tuple[Voucher, bool]:
    """Mark an active, unexpired voucher spent exactly once, however many desks try at once.

    The conditional UPDATE decides: only the transaction that still sees ``status='active'``
    changes the row. Returns the voucher and whether this call was a replay of the same form.
    """
    code = None

    def spend() -> Voucher:
        now = utcnow()
        changed = db.session.execute(
            update(Voucher)
            .where(Voucher.code == code, Voucher.status == VoucherStatus.ACTIVE.value, Voucher.expires_at > now)
            .values(status=VoucherStatus.SPENT.value, spent_at=now, spent_by_id=actor.staff_id,
                    spent_branch_id=actor.branch_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        voucher = find_voucher(code)
        if changed != 1:
            raise explain_unusable(voucher)
        db.session.refresh(voucher)
        audit.record("voucher.spent", actor, patient_id=voucher.patient_id, voucher_id=voucher.id,
                     referral_id=voucher.referral_id, amount=voucher.amount, currency=voucher.currency)
        events.voucher_spent(voucher)
        return voucher

    try:
        code = parse_voucher_code(raw_code)
        return idempotency.run_once("spend", idempotency_key, (code,), spend, lambda spent: spent.id,
                                    lambda found: db.session.get(Voucher, found))
    except Refused as refusal:
        voucher = find_voucher(code) if code else None
        audit.record_refusal("voucher.spend", actor, refusal.reason, voucher_id=voucher.id if voucher else None,
                             patient_id=voucher.patient_id if voucher else None)
        raise


def void_voucher(voucher_id: int, reason: str | None, actor: Actor, *, idempotency_key: str | None = None) -> Voucher:
    """A manager voids an active voucher with a reason; spent vouchers stay spent.

    A resent form (same idempotency key) answers as the first time instead of "already void".
    """
    reason = clean_reason(reason)

    def void() -> Voucher:
        now = utcnow()
        changed = db.session.execute(
            update(Voucher)
            .where(Voucher.id == voucher_id, Voucher.status == VoucherStatus.ACTIVE.value)
            .values(status=VoucherStatus.VOID.value, voided_at=now, voided_by_id=actor.staff_id, void_reason=reason)
            .execution_options(synchronize_session=False)
        ).rowcount
        voucher = db.session.get(Voucher, voucher_id)
        if changed != 1:
            raise explain_unusable(voucher)
        db.session.refresh(voucher)
        audit.record("voucher.voided", actor, patient_id=voucher.patient_id, voucher_id=voucher.id,
                     referral_id=voucher.referral_id, reason_text=reason)
        return voucher

    try:
        voucher, _replayed = idempotency.run_once("void", idempotency_key, (voucher_id, reason), void,
                                                  lambda voided: voided.id,
                                                  lambda found: db.session.get(Voucher, found))
    except Refused as refusal:  # audited like a refused spend: every void attempt on money is in the log
        voucher = db.session.get(Voucher, voucher_id)
        audit.record_refusal("voucher.void", actor, refusal.reason, voucher_id=voucher.id if voucher else None,
                             patient_id=voucher.patient_id if voucher else None)
        raise
    return voucher
