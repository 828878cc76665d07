"""A voucher holds the whole of the day it is shown valid until: existing expiries move to that day's end.

Vouchers used to expire at the hour they were issued, N days later, while every page, receipt and message
shows only the day ("valid until 25 Nov"): on that very day, after that hour, the desk refused them. New
vouchers now expire at the clinic's midnight that ends their last day (clinic/services/vouchers.py,
``expiry_for``) and every reader shows the day before that exclusive end. Each existing voucher moves the
same way, to the local midnight that ends the day it was shown: the day a patient was already promised holds,
the voucher only gains the rest of that day, and the new reading prints the same day as the old one did (left
alone, every existing voucher would print a day earlier and expire as before, mid-day). Spent and void
vouchers move too, so that their history shows the day it always showed. The clinic's time zone is read as
the app reads it (UTC when unusable). Each move is in the audit log as ``voucher.expiry_moved``.

The downgrade gives the old code a reading that agrees with itself: an expiry at a local midnight goes back
one second, to the last second of the day shown, so the old pages still print that day and the desk accepts
the voucher until its end. Upgrading again restores the midnight.

Revision ID: a9ed78e61793
Revises: 92c765c8c112
Create Date: 2026-11-25 00:00:00.000000

"""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a9ed78e61793'
down_revision = '92c765c8c112'
branch_labels = None
depends_on = None

# Frozen copies of the columns this migration reads and writes, as they are at this revision.
CLINICS = sa.table("clinics", sa.column("id", sa.Integer), sa.column("timezone", sa.String))
VOUCHERS = sa.table("vouchers", sa.column("id", sa.Integer), sa.column("patient_id", sa.Integer),
                    sa.column("referral_id", sa.Integer), sa.column("expires_at", sa.DateTime))
AUDIT_EVENTS = sa.table("audit_events", sa.column("at", sa.DateTime), sa.column("action", sa.String),
                        sa.column("outcome", sa.String), sa.column("patient_id", sa.Integer),
                        sa.column("voucher_id", sa.Integer), sa.column("referral_id", sa.Integer),
                        sa.column("details", sa.JSON))
ONE_SECOND = timedelta(seconds=1)


def _clinic_zone(connection):
    """The clinic's zone as clinic/services/clinic_settings.py:clinic_zone reads it, frozen here."""
    name = connection.execute(sa.select(CLINICS.c.timezone).order_by(CLINICS.c.id).limit(1)).scalar()
    try:
        return ZoneInfo(name) if name else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def _local(moment: datetime, zone) -> datetime:
    return moment.replace(tzinfo=timezone.utc).astimezone(zone)


def _start_of_day(day, zone) -> datetime:
    """Midnight at the start of ``day`` in ``zone``, as naive UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc).replace(tzinfo=None)


def _end_of_shown_day(expires_at: datetime, zone) -> datetime:
    """The local midnight that ends the day the old code showed for ``expires_at``."""
    return _start_of_day(_local(expires_at, zone).date() + timedelta(days=1), zone)


def _last_second_of_day(expires_at: datetime, zone) -> datetime:
    """An expiry at a local midnight as the last second of the day before it; any other left as it is."""
    local = _local(expires_at, zone)
    return expires_at - ONE_SECOND if local.time() == datetime.min.time() else expires_at


def _move_expiries(new_expiry) -> None:
    """Set each voucher's expiry to ``new_expiry(old, zone)``, with an audit event for each one that moved."""
    connection = op.get_bind()
    zone = _clinic_zone(connection)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    moves, events = [], []
    for voucher in connection.execute(sa.select(VOUCHERS).order_by(VOUCHERS.c.id)):
        moved = new_expiry(voucher.expires_at, zone)
        if moved == voucher.expires_at:
            continue
        moves.append({"voucher": voucher.id, "moved": moved})
        events.append({"at": now, "action": "voucher.expiry_moved", "outcome": "ok", "patient_id": voucher.patient_id,
                       "voucher_id": voucher.id, "referral_id": voucher.referral_id,
                       "details": {"expires_at": [voucher.expires_at.isoformat(), moved.isoformat()],
                                   "migration": revision}})
    if moves:
        connection.execute(VOUCHERS.update().where(VOUCHERS.c.id == sa.bindparam("voucher"))
                           .values(expires_at=sa.bindparam("moved")), moves)
        connection.execute(AUDIT_EVENTS.insert(), events)


def upgrade():
    _move_expiries(_end_of_shown_day)


def downgrade():
    _move_expiries(_last_second_of_day)
