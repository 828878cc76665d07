"""Reminding patients of vouchers they have not spent before those expire.

A voucher that expires unspent is a reward the patient never felt and a visit the clinic never had; a short
message a week before ("your ¥200 voucher can be used until 3 December") is what referral programmes send
to bring them in. Run daily (``flask --app wsgi remind-expiring-vouchers``, from cron):

- only patients who agreed to messages, by the channel they chose, with a gateway subscribed to
  ``notification.requested`` — the same rule as every other message (clinic/services/notifications.py);
- one message per patient, naming each of their vouchers that expires within the window;
- each voucher once: a row in ``voucher_reminders`` per voucher, inserted ON CONFLICT DO NOTHING, so two
  runs at the same moment (two hosts' crons) remind nobody twice;
- not for a voucher issued within the window: its ``reward_earned`` message gave the date a few days ago.

The reminder changes nothing about the voucher (it is not a voucher event); the run is one audit event listing
the vouchers reminded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Patient, Voucher, VoucherReminder, VoucherStatus
from clinic.models._time import utcnow
from clinic.services import audit, notifications, webhooks
from clinic.services.transaction import Actor, atomic, insert_new_rows

DEFAULT_WINDOW = timedelta(days=7)


@dataclass
class ReminderReport:
    patients: int  # messages queued, one per patient
    vouchers: int  # vouchers they name
    gateway: bool  # False when no webhook endpoint receives messages: nothing was sent or recorded

    def describe(self) -> str:
        if not self.gateway:
            return ("No webhook endpoint receives notification.requested: no reminder sent (add one on the "
                    "Webhooks page).")
        return (f"Reminded {self.patients} patient{'' if self.patients == 1 else 's'} of {self.vouchers} "
                f"voucher{'' if self.vouchers == 1 else 's'} about to expire.")


def _vouchers_to_remind(now: datetime, window: timedelta):
    """Active vouchers expiring within the window, issued before it, not yet reminded, of patients who may be told."""
    return (select(Voucher, Patient).join(Patient, Voucher.patient_id == Patient.id)
            .where(Voucher.status == VoucherStatus.ACTIVE.value, Voucher.expires_at > now,
                   Voucher.expires_at <= now + window, Voucher.issued_at <= now - window,
                   ~select(VoucherReminder.voucher_id).where(VoucherReminder.voucher_id == Voucher.id).exists(),
                   *notifications.may_message_conditions())
            .order_by(Voucher.patient_id, Voucher.expires_at, Voucher.id))


def remind_expiring_vouchers(actor: Actor, window: timedelta = DEFAULT_WINDOW,
                             now: datetime | None = None) -> ReminderReport:
    """Queue one message per patient for their vouchers expiring within ``window``; each voucher once."""
    now = now or utcnow()
    with atomic():
        if not webhooks.subscribed(notifications.EVENT):
            return ReminderReport(patients=0, vouchers=0, gateway=False)
        reminded: list[int] = []
        patients = 0
        for _patient_id, rows in groupby(db.session.execute(_vouchers_to_remind(now, window)).all(),
                                         key=lambda row: row.Patient.id):
            rows = list(rows)
            patient = rows[0].Patient
            if not notifications.may_message(patient):
                continue
            taken = {key for key, in insert_new_rows(VoucherReminder, [{"voucher_id": row.Voucher.id, "queued_at": now}
                                                                      for row in rows])}
            vouchers = [row.Voucher for row in rows if row.Voucher.id in taken]
            if vouchers:
                notifications.vouchers_expiring(vouchers, patient)
                patients += 1
                reminded.extend(voucher.id for voucher in vouchers)
        if reminded:
            audit.record("vouchers.expiry_reminded", actor, count=len(reminded), vouchers=reminded,
                         window_days=window.days)
    return ReminderReport(patients=patients, vouchers=len(reminded), gateway=True)
