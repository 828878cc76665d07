"""What the invite page at /r/<CODE> shows a friend: who recommends the clinic and the welcome gift.

The page friends reach from every poster and card QR, so it is read as plain rows (models/rows.py)
with one query (which also reads the settings stamp), and the campaign from the settings snapshot: no ORM
entity on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select

from clinic.models import Card, CardBatch, CardStatus, Patient
from clinic.models.rows import (PUBLIC_PATIENT_KEYS, CampaignRow, CardRow, PublicPatientRow, column_keys,
                                columns_of)
from clinic.services.cards import explain_card
from clinic.services.clinic_settings import card_friend_reward, current_clinic, friend_reward
from clinic.services.codes import CodeKind, InvalidCode, parse_code
from clinic.services.rewards import campaign_for_card, campaign_in_force
from clinic.services.settings_snapshot import STAMP_COLUMN, settings_read_with
from clinic.services.transaction import read_connection

# Each with the settings stamp as its last column (settings_snapshot.settings_read_with): one statement fewer.
# An erased patient's code invites nobody: it reads as unknown.
_REFERRER_BY_PERSONAL_CODE = select(*columns_of(Patient, PUBLIC_PATIENT_KEYS), STAMP_COLUMN).where(
    Patient.personal_code == bindparam("code"), Patient.erased_at.is_(None))
# A card, its holder (none until the card is activated at discharge) and the campaign it was printed with, in one query.
_CARD_AND_HOLDER = (select(*columns_of(Card), *columns_of(Patient, PUBLIC_PATIENT_KEYS), CardBatch.campaign_id,
                           STAMP_COLUMN)
                    .join(CardBatch, CardBatch.id == Card.batch_id)
                    .outerjoin(Patient, Patient.id == Card.patient_id).where(Card.code == bindparam("code")))
_CARD_COLUMNS = len(column_keys(Card))


@dataclass
class Invitation:
    code: str
    referrer: PublicPatientRow
    offer: str | None  # None when no campaign is running: the friend is still welcome
    card: CardRow | None = None
    campaign: CampaignRow | None = None  # the campaign this code pays, found once


def invitation(raw: str | None) -> Invitation | None:
    """The invitation behind a personal code or an activated card; None for anything else.

    A card that is printed but not activated, or void, looks exactly like an unknown code,
    so that a stolen stack reveals nothing. A redeemed card raises ``already_redeemed``.
    """
    try:
        parsed = parse_code(raw)
    except InvalidCode:
        return None
    card = None
    with read_connection() as connection:
        query = _REFERRER_BY_PERSONAL_CODE if parsed.kind is CodeKind.PERSONAL else _CARD_AND_HOLDER
        row = connection.execute(query, {"code": parsed.code}).first()
        if row is None:
            return None
        settings_read_with(row[-1], connection)
    if parsed.kind is CodeKind.PERSONAL:
        referrer = PublicPatientRow(*row[:-1])
        campaign = campaign_in_force(for_cards=False)
    else:
        card = CardRow(*row[:_CARD_COLUMNS])
        if card.status == CardStatus.REDEEMED.value:
            raise explain_card(card)
        activated = card.status == CardStatus.ACTIVATED.value and card.patient_id is not None
        referrer = PublicPatientRow(*row[_CARD_COLUMNS:-2]) if activated else None
        campaign = campaign_for_card(row[-2])  # what the desk will pay for it (redemption.referral_offer)
    if referrer is None:
        return None
    offer = None
    if campaign is not None:
        reward = card_friend_reward(campaign) if card else friend_reward(campaign)
        offer = reward.describe_with_stage(current_clinic().currency)
    return Invitation(code=parsed.code, referrer=referrer, offer=offer, card=card, campaign=campaign)
