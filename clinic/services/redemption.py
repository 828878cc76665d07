"""Redeeming a referral code at the desk: the friend becomes a patient and both sides are paid.

A redemption completes fully (friend, referral, both vouchers, audit) or changes nothing.
Concurrency is left to the database: unique phone and record numbers on patients, a unique
friend on referrals and a unique idempotency key per form decide which of several
simultaneous attempts wins; the others are refused or replay the winner's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from clinic.extensions import db
from clinic.models import Campaign, Card, CardStatus, FriendLead, LeadStatus, Patient, Referral, Reward, Voucher
from clinic.models._time import utcnow
from clinic.services import audit, events, idempotency
from clinic.services.cards import explain_card, find_card_by_code
from clinic.services.clinic_settings import (
    RewardTerms,
    card_friend_reward,
    card_referrer_reward,
    friend_reward,
    current_clinic,
    referrer_reward,
)
from clinic.services.codes import CodeKind, InvalidCode, ParsedCode, parse_code
from clinic.services.errors import Refused
from clinic.services.patients import (
    PatientDetails,
    add_patient,
    existing_patient_refusal,
    find_existing,
    patient_by_personal_code,
)
from clinic.services.settings_snapshot import keep_settings_checked_by
from clinic.services.transaction import Actor, atomic, insert_row
from clinic.services.rewards import campaign_for_card, campaign_in_force, reward_redemption, take_quota_place
from clinic.services.vouchers import find_voucher


@dataclass
class RedemptionResult:
    referral: Referral
    friend: Patient
    vouchers: list[Voucher]
    # The friend's progress token, shown once; None when this answer replays an earlier one.
    friend_progress_token: str | None = None
    replayed: bool = False
    # The friend had asked through this referrer's code to be called back (when they last asked): the redemption
    # answered that request (clinic/services/leads.py), and the desk's receipt says so.
    call_back_asked_at: datetime | None = None

    @property
    def rewards(self) -> list[Reward]:
        return list(self.referral.rewards)

    def reward_for(self, beneficiary: str) -> Reward | None:
        return next((r for r in self.rewards if r.beneficiary == beneficiary), None)

    @property
    def referrer_voucher(self) -> Voucher | None:
        return next((v for v in self.vouchers if v.beneficiary == "referrer"), None)

    @property
    def friend_voucher(self) -> Voucher | None:
        return next((v for v in self.vouchers if v.beneficiary == "friend"), None)

    @property
    def printed_campaign(self) -> Campaign | None:
        """The campaign the friend's card was printed with, when it had ended and the redemption paid another."""
        card = self.referral.card
        if card is None or card.batch.campaign_id in (None, self.referral.campaign_id):
            return None
        return card.batch.campaign


def printed_campaign_lapse(campaign: Campaign | None, now: datetime | None = None) -> str | None:
    """Why a card's printed campaign no longer pays it: "ended", "not_for_cards" (a manager made it cover personal
    codes only) or "not_started" (its start moved later); None without such a campaign.

    The desk tells the friend before confirming that the card pays today's offer instead, and a wrong reason
    ("has ended" for a campaign still on the posters) would start an argument at the counter.
    """
    if campaign is None:
        return None
    now = now or utcnow()
    if campaign.has_ended(now):
        return "ended"
    return "not_for_cards" if not campaign.covers_cards() else "not_started"


@dataclass
class ReferralOffer:
    """What the desk shows for a valid referral code before the friend's details are taken.

    The code is either the referrer's personal code or an activated scratch card (``card``).
    """

    code: ParsedCode
    referrer: Patient
    campaign: Campaign
    card: Card | None = None
    # The campaign the card was printed with when it no longer runs: the card then pays ``campaign`` instead.
    printed_campaign: Campaign | None = None

    @property
    def printed_campaign_lapse(self) -> str | None:
        """Why the card's printed campaign does not pay it (see :func:`printed_campaign_lapse`)."""
        return printed_campaign_lapse(self.printed_campaign)

    @property
    def referrer_reward(self) -> RewardTerms:
        return card_referrer_reward(self.campaign) if self.card else referrer_reward(self.campaign)

    @property
    def friend_reward(self) -> RewardTerms:
        return card_friend_reward(self.campaign) if self.card else friend_reward(self.campaign)

    @property
    def friend_gets(self) -> str:
        return self.friend_reward.describe_with_stage(current_clinic().currency)

    @property
    def referrer_gets(self) -> str:
        return self.referrer_reward.describe_with_stage(current_clinic().currency)


def referral_offer(raw: str | None, *, campaign_id: int | None = None) -> ReferralOffer:
    """Check a referral code (personal code or scratch card) without using it.

    Says who referred and what the campaign pays, or raises :class:`Refused` with the reason:
    unknown, mistyped, a voucher code, a card never activated, already redeemed or void.
    ``campaign_id``: the campaign an offer was already made under (an existing patient's review), which
    stands whether or not it still runs; otherwise the one in force now.
    """
    return _offer_for(_parsed_code(raw), campaign_id)


def _parsed_code(raw: str | None) -> ParsedCode:
    try:
        return parse_code(raw)
    except InvalidCode as problem:
        raise problem.as_refusal() from None


def _offer_for(parsed: ParsedCode, campaign_id: int | None = None) -> ReferralOffer:
    """The offer behind a well-formed code, read from the database (see :func:`referral_offer`)."""
    if parsed.kind is CodeKind.PERSONAL:
        referrer = patient_by_personal_code(parsed.code)
        if referrer is None:
            raise Refused("unknown_code", _("No patient holds this code. Check it with the friend."),
                          field="code", status=404)
        if referrer.erased_at is not None:
            raise _code_withdrawn()
        return ReferralOffer(code=parsed, referrer=referrer, campaign=_campaign(False, campaign_id))
    card = find_card_by_code(parsed.code)
    if card is not None:
        if card.status != CardStatus.ACTIVATED.value:
            raise explain_card(card)
        if campaign_id is not None:
            return ReferralOffer(code=parsed, referrer=card.patient, campaign=_campaign(True, campaign_id), card=card)
        printed_id = card.batch.campaign_id
        campaign = _refuse_without(campaign_for_card(printed_id))
        printed = None if printed_id in (None, campaign.id) else db.session.get(Campaign, printed_id)
        return ReferralOffer(code=parsed, referrer=card.patient, campaign=campaign, card=card, printed_campaign=printed)
    if find_voucher(parsed.code) is not None:
        raise Refused("not_a_referral_code", _("This is a voucher code: spend it at checkout instead."),
                      field="code")
    raise Refused("unknown_code", _("No card or voucher has this code."), field="code", status=404)


def _code_withdrawn() -> Refused:
    return Refused("code_withdrawn", _("This code is no longer in use: the friend can be enrolled as a new patient "
                                       "without it."), field="code", status=409)


def _campaign(for_cards: bool, campaign_id: int | None) -> Campaign:
    """The offer's campaign: the one named (an offer already made), else the one in force now, else a refusal."""
    if campaign_id is not None:
        return db.session.get(Campaign, campaign_id)
    return _refuse_without(campaign_in_force(for_cards))


def _refuse_without(campaign: Campaign | None) -> Campaign:
    if campaign is None:
        raise Refused("campaign_ended", _("The referral campaign has ended: no rewards can be issued."),
                      field="code", status=409)
    return campaign


def _refuse_self_referral(referrer: Patient, details: PatientDetails) -> None:
    same_phone = details.phone is not None and details.phone == referrer.phone
    same_record = details.external_id is not None and details.external_id == referrer.external_id
    if same_phone or same_record:
        raise Refused("self_referral", _("A patient cannot redeem their own code: this is the code's owner."),
                      field="phone" if same_phone else "external_id")


def _require_a_way_to_tell_the_friend_apart(details: PatientDetails) -> None:
    """A friend with neither phone nor record number could not be told from the referrer or an existing patient:
    the same person could redeem their own code again and again under any name."""
    if details.phone is None and details.external_id is None:
        raise Refused("contact_needed", _("Enter the friend's phone number or record number: it is how the desk "
                                          "makes sure they are new to the clinic."), field="phone")


def redeem_code(raw_code: str | None, details: PatientDetails, actor: Actor, *,
                idempotency_key: str | None = None) -> RedemptionResult:
    """Register the friend, link them to the referrer and issue both vouchers, all or nothing.

    Every attempt is audited, the refused ones with their reason. The code is looked up once, inside
    the write transaction, so the referrer and the campaign are read under the lock the redemption holds;
    only what needs no database (the code's form and check symbol, the form's fingerprint) is done before.
    """
    offer = None
    try:
        key = idempotency.check_key(idempotency_key)
        parsed = _parsed_code(raw_code)
        _require_a_way_to_tell_the_friend_apart(details)
        request_fingerprint = idempotency.fingerprint(
            "redeem", parsed.code, details.full_name, details.phone, details.external_id)
        try:
            with atomic(keep_loaded=True) as session:  # the receipt is built from the rows just written
                transaction = session.get_transaction()
                offer = _offer_for(parsed)
                result = _redeem(offer, details, actor, key, request_fingerprint)
            # ... and in the settings the redemption was made under (it changes none): no stamp read after the commit.
            keep_settings_checked_by(transaction)
            return result
        except IntegrityError:
            # A unique index refused a row: a concurrent twin won (replay its result), or the friend is already a
            # patient (add_patient refuses that itself; this stays as the net for any other path to it).
            replayed = idempotency.previous_result(key, "redeem", request_fingerprint)
            if replayed is not None:
                return _result_for(replayed)
            existing = find_existing(details)
            if existing is None:
                raise
            raise existing_patient_refusal(existing, details) from None
    except Refused as refusal:
        record_refused_redemption(refusal, actor, offer)
        raise


def record_refused_redemption(refusal: Refused, actor: Actor, offer: ReferralOffer | None = None) -> None:
    """Audit a refused redemption attempt with its reason (the attempt itself changed nothing)."""
    audit.record_refusal("redemption", actor, refusal.reason,
                         code=offer.code.code if offer else None,
                         referrer_id=offer.referrer.id if offer else None)


def _redeem(offer: ReferralOffer, details: PatientDetails, actor: Actor, key: str | None,
            request_fingerprint: str) -> RedemptionResult:
    """The redemption itself, inside the caller's write transaction (which commits it)."""
    # Claim the key before the work: on PostgreSQL a twin of this form would otherwise see this
    # redemption's friend and refuse ("existing patient") instead of waiting here to replay it.
    if not idempotency.claim(key, "redeem", request_fingerprint):
        return _result_for(idempotency.previous_result(key, "redeem", request_fingerprint))
    # On PostgreSQL the referrer is read again FOR SHARE: an erasure at this moment waits for this redemption, then
    # cleans what it wrote, or came first and the code is withdrawn. On SQLite the code was looked up under the
    # write lock this transaction holds, which already orders the two: no statement more.
    referrer = offer.referrer
    if db.session.get_bind().dialect.name == "postgresql":
        referrer = db.session.get(Patient, referrer.id, with_for_update={"read": True}, populate_existing=True)
        if referrer.erased_at is not None:
            raise _code_withdrawn()
    if offer.card is not None:
        redeemed_at = use_card(offer.card.id)
        # The loaded copy, as the row now is (the webhook event and the audit read its serial).
        set_committed_value(offer.card, "status", CardStatus.REDEEMED.value)
        set_committed_value(offer.card, "redeemed_at", redeemed_at)
    referrer, campaign = offer.referrer, offer.campaign
    _refuse_self_referral(referrer, details)
    # A patient already holding the phone or record number is refused here (by the INSERT's ON CONFLICT, not a failed
    # statement). It comes before the quota, so an existing patient hears that rather than "quota full".
    friend, token = add_patient(details, actor, referred_by=referrer)
    now = utcnow()
    quota_month = take_quota_place(campaign, now)
    referral = insert_row(Referral(referrer_id=referrer.id, friend_id=friend.id, campaign_id=campaign.id,
                                   code_used=offer.code.code, staff_id=actor.staff_id, branch_id=actor.branch_id,
                                   card_id=offer.card.id if offer.card else None, quota_month=quota_month))
    set_committed_value(referral, "referrer", referrer)
    set_committed_value(referral, "friend", friend)
    set_committed_value(referral, "card", offer.card)
    events.referral_redeemed(referral)
    # The friend asked through this referrer's code to be called back: that request is answered now (one UPDATE, and
    # only when the friend gave a phone; the request is not loaded). Said in the redemption's own audit event.
    call_back_asked_at = convert_call_back(referrer.id, details.phone, referral.id, now, actor)
    call_back = call_back_asked_at is not None
    rewards, issued, audited = reward_redemption(referral, referrer, friend, offer.referrer_reward,
                                                 offer.friend_reward, campaign, actor, now)
    for voucher, holder in issued:
        events.voucher_issued(voucher, holder)
    audit.record_all(actor, [("redemption", dict(patient_id=friend.id, referral_id=referral.id, code=offer.code.code,
                                                 referrer_id=referrer.id, campaign_id=campaign.id,
                                                 card=offer.card.serial if offer.card else None,
                                                 call_back=call_back or None)), *audited])
    # A new referral has exactly these rewards and vouchers: the receipt needs not read them back.
    vouchers = sorted((voucher for voucher, _holder in issued), key=lambda voucher: voucher.id)
    set_committed_value(referral, "rewards", sorted(rewards, key=lambda reward: reward.id))
    set_committed_value(referral, "vouchers", vouchers)
    idempotency.record_result(key, referral.id)
    return RedemptionResult(referral=referral, friend=friend, vouchers=vouchers, friend_progress_token=token,
                            call_back_asked_at=call_back_asked_at)


_CARDS = Card.__table__
# Built once: every card redemption runs it, and building a statement costs about as much as running it.
_USE_CARD = (update(_CARDS).where(_CARDS.c.id == bindparam("card_id"), _CARDS.c.status == CardStatus.ACTIVATED.value)
             .values(status=CardStatus.REDEEMED.value, redeemed_at=bindparam("now")))


_LEADS = FriendLead.__table__
_CONVERT_LEAD = (update(_LEADS).where(_LEADS.c.referrer_id == bindparam("referrer"),
                                      _LEADS.c.phone == bindparam("number"), _LEADS.c.status != LeadStatus.CONVERTED.value)
                 .values(status=LeadStatus.CONVERTED.value, converted_referral_id=bindparam("referral"),
                         status_changed_at=bindparam("now"), status_changed_by_id=bindparam("staff"))
                 .returning(_LEADS.c.consent_at))


def convert_call_back(referrer_id: int, phone: str | None, referral_id: int, now: datetime,
                      actor: Actor) -> datetime | None:
    """The friend's call-back request through this referrer's code (the same phone) is answered by ``referral``:
    one conditional UPDATE in the caller's transaction (a redemption, or a manager approving an existing patient as
    the friend), the request not loaded. Returns when the friend last asked, or None when there was no open request
    (or no phone to match)."""
    if phone is None:
        return None
    return db.session.execute(_CONVERT_LEAD, {"referrer": referrer_id, "number": phone, "referral": referral_id,
                                              "now": now, "staff": actor.staff_id}).scalar()


def use_card(card_id: int) -> datetime:
    """Mark an activated card redeemed; exactly one of many simultaneous attempts succeeds. Returns when."""
    now = utcnow()
    used = db.session.execute(_USE_CARD, {"card_id": card_id, "now": now}).rowcount
    if used != 1:
        # Read the row again: the copy in this session predates the winner's commit.
        raise explain_card(db.session.get(Card, card_id, populate_existing=True))
    return now


def _result_for(referral_id: int, replayed: bool = True) -> RedemptionResult:
    referral = db.session.get(Referral, referral_id)
    asked_at = db.session.scalar(select(FriendLead.consent_at).where(FriendLead.converted_referral_id == referral_id)
                                 .order_by(FriendLead.consent_at.desc()).limit(1))
    return RedemptionResult(referral=referral, friend=referral.friend, vouchers=list(referral.vouchers),
                            replayed=replayed, call_back_asked_at=asked_at)


def redemption_result(referral_id: int) -> RedemptionResult | None:
    """A past redemption, for the desk's result page (the friend's token is not recoverable)."""
    if db.session.get(Referral, referral_id) is None:
        return None
    return _result_for(referral_id, replayed=False)


def recent_redemptions(limit: int = 10) -> list[Referral]:
    """The latest redemptions with both patients, whose names the desk's list shows, in the same query."""
    return list(db.session.scalars(select(Referral).options(joinedload(Referral.friend), joinedload(Referral.referrer))
                                   .order_by(Referral.id.desc()).limit(limit)))
