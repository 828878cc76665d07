"""Call-back requests ("leads"): a friend who opened an invite link leaves a name and phone, and the desk calls back.

Most friends who read what they would get never find the time to phone the clinic. Referral platforms capture the
friend on the landing page; for a clinic that is "leave your number, we will call you to book your first visit". A
lead names the referrer whose personal code the friend came with, so the desk knows who sent them.

A lead holds what calling needs and nothing more: a name to address the friend by, a phone, and when they agreed to
be called (the words on the invite page: templates/public/_call_me.html). There is no message box: a friend would
write why they want to come, which is health data that the portal keeps out (DESIGN.md, Privacy). Whether the phone
is already a patient's is never stored and never told to the friend: the desk's list works it out when it is drawn.

Leads are personal data of people who are not patients yet. Those never converted are deleted 90 days after the
friend last asked (``flask prune-leads``); erasing the referrer, or the friend once registered, deletes theirs
(clinic/services/erasure.py). A lead is not its referrer's activity for the retention rule (services/retention.py):
the referrer did nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, bindparam, case, delete, exists, func, select, update

from clinic.extensions import db
from clinic.models import FriendLead, LeadStatus, Patient
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.invitations import Invitation
from clinic.services.patients import check_fields, normalize_phone
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic, insert_row_unless_taken

NAME_MAX = 60
NOTE_MAX = 200
KEEP_DAYS = 90  # the command's default (flask prune-leads), and what the pages promise
# What the desk may set; "converted" is the redemption's alone, and "new" the friend's (asking again).
DESK_STATUSES = (LeadStatus.CONTACTED.value, LeadStatus.BOOKED.value, LeadStatus.NOT_INTERESTED.value)
CLOSED_STATUSES = (LeadStatus.NOT_INTERESTED.value, LeadStatus.CONVERTED.value)
DESK_LIST_LIMIT = 300  # a clinic's leads of 90 days; beyond that the oldest closed ones are left off
# The audit log's actor for a friend's request (clinic/services/audit.py BY): nobody logged in, and no address kept.
FRIEND_ACTOR = Actor(rule=audit.INVITE_PAGE)


def takes_call_backs(found: Invitation) -> bool:
    """Whether the invite page offers the form: a personal code, with a campaign in force.

    Not for a gift-pack card: its holder got it in person with the clinic's number, and the card is a bearer code
    worth a reward that the friend brings to the desk anyway. Not without an offer: "we will call you to book your
    first visit" promises the welcome gift the page no longer shows.
    """
    return found.card is None and found.offer is not None


def check_request(name: str | None, phone: str | None, consent: str | None) -> tuple[str, str]:
    """The friend's name and normalised phone, or :class:`FieldErrors` naming every problem at once."""
    values = check_fields({
        "name": lambda: _friend_name(name),
        "phone": lambda: _required_phone(phone),
        "consent": lambda: _consented(consent),
    })
    return values["name"], values["phone"]


def _friend_name(raw: str | None) -> str:
    """A stranger's words on the desk's screen: printable, short, and no markup (no name has angle brackets)."""
    name = clean_text(raw, max_length=NAME_MAX, label=_l("Name"), required=True)
    if "<" in name or ">" in name:
        raise ValueError(_("A name has no < or > signs."))
    return name


def _required_phone(raw: str | None) -> str:
    phone = normalize_phone(raw)
    if phone is None:
        raise ValueError(_("Enter your phone number: it is how the clinic reaches you."))
    return phone


def _consented(raw: str | None) -> bool:
    if raw != "yes":
        raise ValueError(_("Tick the box to let the clinic call you: without it, nothing is sent."))
    return True


def no_call_backs() -> Refused:
    return Refused("no_call_backs", _("This code takes no call-back requests now. Please call the clinic."),
                   status=409)


def honeypot_refusal() -> Refused:
    """A form with the hidden field filled in: a robot, or a browser's autofill gone wrong. Nothing is stored."""
    return Refused("not_sent", _("Your request was not sent. Please try again, or call the clinic."), status=422)


_REFERRER_STILL_INVITES = select(Patient.id).where(Patient.id == bindparam("referrer_id"), Patient.erased_at.is_(None))
_LEADS = FriendLead.__table__
# The same phone through the same code again: the first lead is renewed (name, time, back to "new" for the desk),
# unless a redemption already converted it.
_RENEW = (update(_LEADS).where(_LEADS.c.referrer_id == bindparam("referrer"), _LEADS.c.phone == bindparam("number"),
                               _LEADS.c.status != LeadStatus.CONVERTED.value)
          .values(name=bindparam("friend_name"), consent_at=bindparam("now"), status=LeadStatus.NEW.value,
                  status_changed_at=bindparam("now"), status_changed_by_id=None)
          .returning(_LEADS.c.id))


def request_call_back(found: Invitation, name: str | None, phone: str | None, consent: str | None,
                      trap: str | None) -> None:
    """Record (or renew) the friend's call-back request through ``found``'s personal code, in one transaction.

    Answers the same whether or not the phone is a patient's, so that the page tells nobody who the clinic's
    patients are; the desk's list shows it. Refused (:class:`Refused`, nothing stored) when the form is wrong, the
    hidden field is filled, or the code no longer takes requests (erased referrer: 404, as the invite page).
    """
    if trap:
        raise honeypot_refusal()
    if not takes_call_backs(found):
        raise no_call_backs()
    name, phone = check_request(name, phone, consent)
    referrer_id = found.referrer.id
    with atomic():
        # Read again with the write lock (PostgreSQL: FOR SHARE): an erasure either comes after and deletes this
        # lead with the others, or came first and the code invites nobody.
        if db.session.execute(_REFERRER_STILL_INVITES.with_for_update(read=True),
                              {"referrer_id": referrer_id}).first() is None:
            raise Refused("unknown_code", _("This code is not in use."), status=404)
        now = utcnow()
        values = {"referrer": referrer_id, "number": phone, "friend_name": name, "now": now}
        lead_id, action = db.session.execute(_RENEW, values).scalar(), "lead.renewed"
        if lead_id is None:
            lead = insert_row_unless_taken(FriendLead(referrer_id=referrer_id, name=name, phone=phone, consent_at=now,
                                                      created_at=now, status=LeadStatus.NEW.value))
            if lead is not None:
                lead_id, action = lead.id, "lead.requested"
            else:  # a twin request inserted it a moment ago, or a redemption converted it: renew or leave it
                lead_id = db.session.execute(_RENEW, values).scalar()
        if lead_id is not None:
            audit.record(action, FRIEND_ACTOR, patient_id=referrer_id, lead_id=lead_id)


@dataclass(frozen=True)
class DeskLead:
    """One row of the desk's Call-backs page."""

    lead: FriendLead
    referrer: Patient
    # The phone is a patient's now (never stored: asked when the page is drawn). The redemption will refuse them
    # as "already a patient", so the desk may rather book them as a returning patient.
    already_a_patient: bool

    @property
    def is_open(self) -> bool:
        return self.lead.status not in CLOSED_STATUSES


def _desk_query():
    known = exists().where(Patient.phone == FriendLead.phone).correlate(FriendLead)
    return select(FriendLead, Patient, known.label("known")).join(Patient, Patient.id == FriendLead.referrer_id)


def _desk_rows(query) -> list[DeskLead]:
    return [DeskLead(lead, referrer, bool(known)) for lead, referrer, known in db.session.execute(query)]


def desk_leads(limit: int = DESK_LIST_LIMIT) -> list[DeskLead]:
    """Open requests first, then closed ones; newest first within each (one query)."""
    closed = case((FriendLead.status.in_(CLOSED_STATUSES), 1), else_=0)
    return _desk_rows(_desk_query().order_by(closed, FriendLead.consent_at.desc(), FriendLead.id.desc()).limit(limit))


def desk_lead(lead_id: int) -> DeskLead | None:
    """One row, as the list draws it (the row an htmx status change swaps in)."""
    rows = _desk_rows(_desk_query().where(FriendLead.id == lead_id))
    return rows[0] if rows else None


OPEN_AT_DESK_LIMIT = 5  # the desk's panel for a code names at most this many of its open requests


def open_requests(referrer_id: int, limit: int = OPEN_AT_DESK_LIMIT) -> list[FriendLead]:
    """The open call-back requests through this referrer's code, newest first: the desk redeeming the code sees who
    asked and when (phones masked there), so the receptionist knows the friend in front of them asked for a call."""
    return list(db.session.scalars(
        select(FriendLead).where(FriendLead.referrer_id == referrer_id, FriendLead.status.not_in(CLOSED_STATUSES))
        .order_by(FriendLead.consent_at.desc(), FriendLead.id.desc()).limit(limit)))


def open_request(referrer_id: int, phone: str | None) -> FriendLead | None:
    """The open request through this referrer's code from this (normalised) phone, if any."""
    if phone is None:
        return None
    return db.session.scalar(select(FriendLead).where(FriendLead.referrer_id == referrer_id, FriendLead.phone == phone,
                                                      FriendLead.status.not_in(CLOSED_STATUSES)))


def new_lead_count() -> int:
    """Requests nobody has answered yet, for the top bar's "Call-backs (n)"."""
    return db.session.scalar(select(func.count()).select_from(FriendLead)
                             .where(FriendLead.status == LeadStatus.NEW.value)) or 0


def check_status(raw: str | None) -> str:
    if raw not in DESK_STATUSES:
        raise Refused("validation_error", _("Choose contacted, booked or not interested."), field="status")
    return raw


def set_status(lead_id: int, raw_status: str | None, raw_note: str | None, actor: Actor) -> None:
    """The desk's answer to a request: contacted, booked or not interested, with an optional short note.

    A note replaces the one before; an empty one keeps it. A converted request is closed (409): the friend is
    registered. The note is not copied into the append-only audit log (staff may write a name there).
    """
    status = check_status(raw_status)
    note = check_fields({"note": lambda: clean_text(raw_note, max_length=NOTE_MAX, label=_l("Note"),
                                                    required=False)})["note"]
    with atomic():
        changes = {"status": status, "status_changed_at": utcnow(), "status_changed_by_id": actor.staff_id}
        if note:
            changes["note"] = note
        referrer_id = db.session.execute(
            update(FriendLead).where(FriendLead.id == lead_id, FriendLead.status != LeadStatus.CONVERTED.value)
            .values(**changes).returning(FriendLead.referrer_id).execution_options(synchronize_session=False)).scalar()
        if referrer_id is None:
            if db.session.get(FriendLead, lead_id) is None:
                raise Refused("not_found", _("No such call-back request: it may have been deleted."), status=404)
            raise Refused("converted", _("This friend is already registered: the request is closed."), status=409)
        audit.record("lead.status_changed", actor, patient_id=referrer_id, lead_id=lead_id, status=status,
                     with_note=bool(note) or None)


def _prunable(cutoff):
    return and_(FriendLead.status != LeadStatus.CONVERTED.value, FriendLead.consent_at < cutoff)


def prune_leads(days: int = KEEP_DAYS, actor: Actor = Actor(), *, dry_run: bool = False) -> int:
    """Delete the requests never converted whose friend last asked more than ``days`` ago; how many (audited once).

    ``dry_run``: only count them. Converted ones stay with their referral, until the friend is erased.
    """
    if days < 1:
        raise ValueError("keep at least one day of call-back requests")
    cutoff = utcnow() - timedelta(days=days)
    if dry_run:
        count = db.session.scalar(select(func.count()).select_from(FriendLead).where(_prunable(cutoff)))
        db.session.rollback()
        return count
    with atomic():
        deleted = db.session.execute(delete(FriendLead).where(_prunable(cutoff))
                                     .execution_options(synchronize_session=False)).rowcount
        audit.record("leads.pruned", actor, count=deleted, older_than_days=days)
    return deleted
