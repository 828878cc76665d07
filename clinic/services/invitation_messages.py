"""Sending patients their own referral code by message: "your code is ABCD-EFGH; a friend gets …; share this link".

The "share your link" message is the core loop of referral programmes: a patient who never got the poster or lost
the welcome slip otherwise never learns their code, and a clinic starting a better offer cannot tell its patients.
It goes out as every other message (clinic/services/notifications.py): a ``notification.requested`` event, only to
patients who agreed, by the channel they chose. Three ways:

- on enrolment, with consent, in the enrolment's transaction (:func:`invite_new_patient`); the friend registered at
  the desk gets none (the desk form asks no consent);
- a member of staff's button on the patient's page (:func:`invite_patient`), refused for an hour after the last one
  (a double click, a repeated press);
- a manager's bulk send (page and ``flask send-invitations``, :func:`send_invitations`) to the patients who agreed,
  not invited within the last M days, at most 1,000 per press.

Each patient once: ``Patient.last_invited_at`` is claimed by a conditional UPDATE (… WHERE last_invited_at IS NULL
OR last_invited_at < cutoff), so of two presses, two managers or a press and the command at the same moment only
the one whose UPDATE changed the row writes that patient's message (PostgreSQL re-checks the WHERE on the row the
other committed; SQLite's write lock runs the two one after the other).

The message carries the personal code and the invite link (/r/<CODE>), never the private progress link: a message's
text is kept in the outbox and at the gateway, and the progress token is stored only as a hash. An invitation is
the clinic's act, not the patient's: it is no activity for the retention rule (clinic/services/retention.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import func, or_, select, update

from clinic.extensions import db
from clinic.models import Patient
from clinic.models._time import utcnow
from clinic.models.patient import NOTIFICATION_LANGUAGES
from clinic.models.rows import CampaignRow
from clinic.services import audit, notifications, webhooks
from clinic.i18n import format_moment
from clinic.services.clinic_settings import RewardTerms, clinic_local, current_clinic, friend_reward, referrer_reward
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.services.privacy import mask_name
from clinic.services.rewards import campaign_in_force
from clinic.services.transaction import Actor, atomic
from clinic.services.urls import invite_url

BUTTON_PAUSE = timedelta(hours=1)  # the patient page's button: a double click or a repeated press sends one
DEFAULT_NOT_WITHIN_DAYS = 90  # the manager's page and the command
BATCH_LIMIT = 1000  # per press of the bulk send: a request never runs long; press again for the rest
MAX_DAYS = 3650  # as the form's "Between 1 and 3650 days."


def _describe(terms: RewardTerms, language: str) -> str:
    """What a reward is, in the message's language (as the invite page and poster describe the offer)."""
    with force_locale(language):
        return terms.describe_with_stage(current_clinic().currency, language)


def message_values(patient: Patient, campaign: CampaignRow) -> dict:
    """The invitation's placeholders for this patient under ``campaign`` (rewards per language, as notifications wants)."""
    return {"code": format_code(patient.personal_code), "link": invite_url(patient.personal_code),
            "friend_reward": lambda language: _describe(friend_reward(campaign), language),
            "reward": lambda language: _describe(referrer_reward(campaign), language)}


def _may_be_invited(cutoff: datetime) -> list:
    """The conditions a patient must meet to be sent an invitation now: the messaging rule, and none since ``cutoff``."""
    return [*notifications.may_message_conditions(),
            or_(Patient.last_invited_at.is_(None), Patient.last_invited_at < cutoff)]


def _claim(patient_ids: list[int], now: datetime, cutoff: datetime) -> list[int]:
    """Mark these patients invited now, those who still may be; returns the ones this transaction won.

    The database decides, not a read before it: a patient another transaction claimed a moment ago has a
    ``last_invited_at`` after ``cutoff`` when this UPDATE reaches their row, and is left out.
    """
    if not patient_ids:
        return []
    claimed = db.session.execute(update(Patient).where(Patient.id.in_(patient_ids), *_may_be_invited(cutoff))
                                 .values(last_invited_at=now).returning(Patient.id)
                                 .execution_options(synchronize_session=False))
    return sorted(claimed.scalars())


def _invite(patient: Patient, campaign: CampaignRow, via: str) -> None:
    notifications.invitation(patient, message_values(patient, campaign),
                             {"event": "patient.invited", "via": via, "campaign_id": campaign.id})


def invite_new_patient(patient: Patient, actor: Actor, now: datetime) -> bool:
    """On enrolment, in its transaction: the new patient's invitation, if they agreed and there is an offer to tell.

    Nothing (and no refusal: the enrolment goes on) without consent, a campaign in force or a gateway.
    """
    campaign = campaign_in_force(for_cards=False, now=now)
    if campaign is None or not notifications.may_message(patient) or not webhooks.subscribed(notifications.EVENT):
        return False
    patient.last_invited_at = now
    _invite(patient, campaign, "enrolment")
    audit.record("patient.invited", actor, patient_id=patient.id, via="enrolment")
    return True


def _nothing_to_offer() -> Refused:
    return Refused("no_campaign", _("No campaign is running: there is no offer to tell patients about. Start a "
                                    "campaign first."), status=409)


def _no_gateway() -> Refused:
    return Refused("no_gateway", _("No webhook endpoint receives notification.requested, so no message can be "
                                   "sent: add the clinic's SMS or WeChat gateway on the Webhooks page."), status=409)


def _offer_and_gateway(now: datetime) -> CampaignRow:
    """The campaign whose offer the message tells, when a gateway will send it; else refused."""
    campaign = campaign_in_force(for_cards=False, now=now)
    if campaign is None:
        raise _nothing_to_offer()
    if not webhooks.subscribed(notifications.EVENT):
        raise _no_gateway()
    return campaign


def _why_not(patient: Patient | None) -> Refused:
    """Why this patient may not be sent their code now (after the claim found them not to qualify)."""
    if patient is None:
        return Refused("not_found", _("No such patient."), status=404)
    if patient.erased_at is not None:
        return Refused("patient_erased", _("This patient's personal data was erased: nothing can be sent."),
                       status=409)
    if not notifications.may_message(patient):
        return Refused("no_consent", _("No message can be sent: the patient has not agreed to messages, or has no "
                                       "channel or phone recorded."), status=409)
    return Refused("recently_invited", _("Their code was already sent to them at %(when)s: wait an hour before "
                                         "sending it again.", when=format_moment(clinic_local(patient.last_invited_at))),
                   status=429)


def invite_patient(patient_id: int, actor: Actor, now: datetime | None = None) -> Patient:
    """Send one patient their code (the button on their page); refused with the reason, nothing written."""
    now = now or utcnow()
    with atomic():
        patient = db.session.get(Patient, patient_id)
        if patient is None or patient.erased_at is not None or not notifications.may_message(patient):
            raise _why_not(patient)
        campaign = _offer_and_gateway(now)
        claimed = _claim([patient_id], now, now - BUTTON_PAUSE)
        patient = db.session.get(Patient, patient_id, populate_existing=True)
        if not claimed:
            raise _why_not(patient)
        _invite(patient, campaign, "staff")
        audit.record("patient.invited", actor, patient_id=patient.id, via="staff")
    return patient


@dataclass(frozen=True)
class Audience:
    """Who a bulk send is for: patients who agreed to messages (not erased), not invited within ``not_within_days``,
    and, when given, enrolled within ``enrolled_within_days``."""

    not_within_days: int = DEFAULT_NOT_WITHIN_DAYS
    enrolled_within_days: int | None = None

    def __post_init__(self):
        if not 1 <= self.not_within_days <= MAX_DAYS:
            raise ValueError(_("Between 1 and 3650 days."))
        if self.enrolled_within_days is not None and not 1 <= self.enrolled_within_days <= MAX_DAYS:
            raise ValueError(_("Between 1 and 3650 days."))

    def conditions(self, now: datetime) -> list:
        conditions = _may_be_invited(now - timedelta(days=self.not_within_days))
        if self.enrolled_within_days is not None:
            conditions.append(Patient.enrolled_at >= now - timedelta(days=self.enrolled_within_days))
        return conditions

    def count(self, now: datetime) -> int:
        return db.session.scalar(select(func.count()).select_from(Patient).where(*self.conditions(now)))

    def first_ids(self, now: datetime, limit: int) -> list[int]:
        return list(db.session.scalars(select(Patient.id).where(*self.conditions(now)).order_by(Patient.id)
                                       .limit(limit)))


@dataclass
class Preview:
    """What the manager's page shows before sending: how many, and the message as a sample patient would get it."""

    count: int
    campaign: bool
    gateway: bool
    texts: dict[str, str] = field(default_factory=dict)  # language -> the text, for the sample patient (masked)


def preview(audience: Audience, now: datetime | None = None) -> Preview:
    now = now or utcnow()
    campaign = campaign_in_force(for_cards=False, now=now)
    result = Preview(count=audience.count(now), campaign=campaign is not None,
                     gateway=webhooks.subscribed(notifications.EVENT))
    sample = db.session.scalar(select(Patient).where(*audience.conditions(now)).order_by(Patient.id).limit(1))
    if sample is None:
        sample = db.session.scalar(select(Patient).where(Patient.erased_at.is_(None)).order_by(Patient.id).limit(1))
    if campaign is None or sample is None:
        return result
    values = message_values(sample, campaign)
    for language in NOTIFICATION_LANGUAGES:
        result.texts[language] = notifications.render(notifications.template_text("invitation", language), {
            "name": mask_name(sample.public_name), "clinic": current_clinic().name,
            **{key: value(language) if callable(value) else value for key, value in values.items()}})
    return result


@dataclass
class InvitationRun:
    """What a bulk send did (or, with ``dry_run``, would do)."""

    audience: int  # patients in the audience before this run
    sent: list[int] = field(default_factory=list)  # the patients sent their code (with dry_run: who would be)
    dry_run: bool = False

    @property
    def remaining(self) -> int:
        return max(self.audience - len(self.sent), 0)

    def describe(self) -> str:
        count = len(self.sent)
        done = "Would send" if self.dry_run else "Sent"
        text = f"{done} their code to {count} patient{'' if count == 1 else 's'}"
        text += f": {', '.join(map(str, self.sent))}." if self.sent else "."
        if self.remaining:
            text += f" {self.remaining} more in the audience: run again for the rest."
        return text


def send_invitations(audience: Audience, actor: Actor, limit: int = BATCH_LIMIT, dry_run: bool = False,
                     now: datetime | None = None) -> InvitationRun:
    """Send their code to the first ``limit`` patients of the audience (at most 1,000), one transaction, one audit
    event with their ids. Refused (nothing written) without a campaign in force or a gateway.

    A patient another run claimed meanwhile is left out (see the module): two runs at the same moment send each
    patient one message, and a second run right after the first sends nothing.
    """
    now = now or utcnow()
    limit = max(1, min(limit, BATCH_LIMIT))
    if dry_run:
        _offer_and_gateway(now)
        return InvitationRun(audience=audience.count(now), sent=audience.first_ids(now, limit), dry_run=True)
    with atomic():
        campaign = _offer_and_gateway(now)
        run = InvitationRun(audience=audience.count(now))
        run.sent = _claim(audience.first_ids(now, limit), now, now - timedelta(days=audience.not_within_days))
        for patient in db.session.scalars(select(Patient).where(Patient.id.in_(run.sent)).order_by(Patient.id)
                                          .execution_options(populate_existing=True)):
            _invite(patient, campaign, "bulk")
        if run.sent:
            audit.record("invitations.sent", actor, count=len(run.sent), patients=run.sent,
                         not_within_days=audience.not_within_days, enrolled_within_days=audience.enrolled_within_days)
    return run
