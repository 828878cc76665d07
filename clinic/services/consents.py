"""A patient's own privacy choices, made on their private link: messages, their name on posters, the leaderboard.

Staff record these consents on the patient's page; a patient may change them too, without phoning the clinic,
from the page their progress link leads to (``/p/<token>/choices``). The token is the authority: whoever holds
the link is the patient, as for the progress page itself. The three are saved together, in one transaction, by
the same functions the staff pages use, so each change is checked and audited as there — with an actor that
says the patient did it (``Actor(patient_link=True)``, shown so in the audit log).

What the patient cannot choose here, they are told, and not offered: messages when the clinic recorded no
phone or no way to send them (the channel and language stay the clinic's), a name on posters when the clinic
recorded no display name to print. The leaderboard is always offered: the clinic's leaderboard page is always
public (clinic/web/honours.py), listing only those who agreed.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Patient
from clinic.services.errors import Refused
from clinic.services.notifications import MESSAGE_CHANNELS, record_preferences
from clinic.services.patients import FieldErrors, hash_token, patient_to_change, record_poster_consent
from clinic.services.privacy import mask_name, mask_phone
from clinic.services.tiers import record_leaderboard_consent
from clinic.services.transaction import Actor, atomic

# The form fields of the choices, in the order the page shows them.
CHOICES = ("messages", "name_on_posters", "leaderboard")


@dataclass(frozen=True)
class OwnChoices:
    """The patient's consents as their own page shows them, and which of them they may change there."""

    messages: bool
    channel: str | None  # "sms" or "wechat"; None: the clinic cannot message them, so there is no choice
    phone: str  # masked: the page's URL may be shared by mistake
    name_on_posters: bool
    poster_name: str  # the display name a poster would print; "" when none: no choice
    leaderboard: bool
    leaderboard_name: str  # masked, as the leaderboard shows it

    @property
    def offered(self) -> tuple[str, ...]:
        """The choices the page offers, each a field the form must send."""
        return tuple(choice for choice, open_ in zip(CHOICES, (self.channel, self.poster_name, True)) if open_)


def own_choices(patient) -> OwnChoices:
    can_message = patient.preferred_channel in MESSAGE_CHANNELS and bool(patient.phone)
    return OwnChoices(
        messages=bool(patient.notification_consent) and can_message,
        channel=patient.preferred_channel if can_message else None,
        phone=mask_phone(patient.phone),
        name_on_posters=bool(patient.name_on_posters and patient.display_name),
        poster_name=patient.display_name or "",
        leaderboard=bool(patient.leaderboard_opt_in),
        leaderboard_name=mask_name(patient.public_name),
    )


def save_own_choices(token: str, wanted: dict[str, bool], actor: Actor) -> Patient:
    """Save the choices the patient sent (choice -> agreed), all or none; only changes are audited.

    Refused with 404 when the link is unknown, rotated or erased (as the progress page), and with
    :class:`FieldErrors` (in the patient's words) when a choice the page offers is missing or one it does not
    offer is asked for: the clinic removed the phone or the name while the page was open, or the form was forged.
    A choice not offered may be sent as "no", which changes nothing.
    """
    with atomic():
        patient = _patient_holding(token)
        offered = own_choices(patient).offered
        problems = {choice: _("Choose yes or no.") for choice in offered if choice not in wanted}
        if wanted.get("messages") and "messages" not in offered:
            problems["messages"] = _("The clinic has no phone number or way to message you: ask at the front desk.")
        if wanted.get("name_on_posters") and "name_on_posters" not in offered:
            problems["name_on_posters"] = _("The clinic has no name to print on your posters: ask at the front desk.")
        if problems:
            raise FieldErrors(problems)
        if "messages" in offered:
            record_preferences(patient, patient.preferred_channel, patient.preferred_language, wanted["messages"],
                               actor)
        if "name_on_posters" in offered:
            record_poster_consent(patient, wanted["name_on_posters"], actor)
        record_leaderboard_consent(patient, wanted["leaderboard"], actor)
    return patient


def _patient_holding(token: str) -> Patient:
    """The patient whose progress link this is, read FOR SHARE in the current transaction; else 404.

    Looked up by the token's hash, then locked and read again: a link rotated or erased in between is refused.
    """
    if not token or len(token) > 128:
        raise _unknown_link()
    token_hash = hash_token(token)
    patient_id = db.session.scalar(select(Patient.id).where(Patient.progress_token_hash == token_hash))
    if patient_id is None:
        raise _unknown_link()
    patient = patient_to_change(patient_id)
    if patient.progress_token_hash != token_hash:
        raise _unknown_link()
    return patient


def _unknown_link() -> Refused:
    return Refused("unknown_link", _("This link is not valid"), status=404)
