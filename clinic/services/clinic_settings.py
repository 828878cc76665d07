"""The clinic's settings and its default campaign, as managers edit them."""

from __future__ import annotations

import io
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask_babel import ngettext
from PIL import Image, UnidentifiedImageError
from sqlalchemy import bindparam, func, select, update

from clinic.extensions import db
from clinic.i18n import LANGUAGES, current_language
from clinic.i18n import gettext as _
from clinic.models import (
    UNREDEEMED_CARD_STATUSES,
    BatchStatus,
    Campaign,
    Card,
    CardBatch,
    Clinic,
    Referral,
    RewardKind,
    Staff,
    Voucher,
    VoucherStatus,
)
from clinic.services import audit
from clinic.services.errors import Refused, stored_by_the_server
from clinic.services.images import bytes_after_image
from clinic.services.money import MAX_AMOUNT_MINOR, check_amount, format_money, major_units_text, minor_digits
from clinic.services.settings_snapshot import ClinicRow, current_settings
from clinic.services.transaction import Actor, atomic, read_connection

LOGO_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_LOGO_PIXELS = 4000
MAX_LOGO_BYTES = 1024 * 1024  # checked by the settings form (web/forms.py), which says so next to the field
CLINIC_FIELDS = ("name", "phone", "address", "brand_colour", "currency", "language", "timezone", "public_base_url",
                 "logo_filename", "managers_need_two_step",
                 "retention_months")
# The retention periods a clinic may choose, in months (clinic/services/retention.py); None: keep data until erased.
RETENTION_CHOICES = (12, 24, 36, 60, 84)
CAMPAIGN_FIELDS = (
    "name",
    "referrer_reward_kind",
    "referrer_reward_amount",
    "referrer_reward_label",
    "friend_reward_kind",
    "friend_reward_amount",
    "friend_reward_label",
    "card_referrer_reward_kind",
    "card_referrer_reward_amount",
    "card_referrer_reward_label",
    "card_friend_reward_kind",
    "card_friend_reward_amount",
    "card_friend_reward_label",
    "voucher_valid_days",
)
# What a manager sets on the campaigns pages besides the rewards (see create_campaign).
CAMPAIGN_RULE_FIELDS = CAMPAIGN_FIELDS + (
    "starts_at",
    "ends_at",
    "covers",
    "referrer_reward_stage",
    "friend_reward_stage",
    "cap_referrals_per_year",
    "cap_value_per_year",
    "friend_monthly_quota",
    "quota_label",
)
COVERS = ("personal", "cards", "both")
CAMPAIGN_STAGES = ("redemption", "visit", "payment")
MAX_CAP_REFERRALS = 100_000
MAX_MONTHLY_QUOTA = 10_000


def get_clinic() -> Clinic:
    """The clinic row; a fresh database gets a placeholder so every page can render.

    The session holds on to it: its identity map alone keeps rows only while something else
    does, so a page asking for the currency, the time zone and the base URL read the row each
    time. Like any row it is still read again after a commit or a rollback.
    """
    clinic = db.session.get(Clinic, 1)
    if clinic is None:
        with atomic():
            db.session.add(Clinic(id=1, name="Our clinic"))
        clinic = db.session.get(Clinic, 1)
    db.session.info["clinic"] = clinic
    return clinic


def current_clinic() -> ClinicRow:
    """The clinic's settings for reading: a read-only copy, exact to the last commit (see settings_snapshot).

    Pages and services that only read the name, currency, time zone, language or base URL use this;
    the settings page, which edits the row, uses :func:`get_clinic`.
    """
    return current_settings().clinic


def default_campaign() -> Campaign | None:
    return db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)).limit(1))


def update_clinic(values: dict, actor: Actor) -> Clinic:
    """Save the settings form; the audit event lists what changed, old and new."""
    if "language" in values and values["language"] not in LANGUAGES:
        raise Refused("bad_language", _("Choose one of the languages offered."), field="language")
    if values.get("retention_months") not in (None, *RETENTION_CHOICES):
        raise Refused("validation_error", _("Choose one of the periods offered, or never."), field="retention_months",
                      status=422)
    if values.get("managers_need_two_step") and not get_clinic().managers_need_two_step:
        _check_own_two_step_first(actor)  # before the transaction: its refusal is audited in one of its own
    with atomic():
        clinic = get_clinic()
        moved = {}
        if values.get("currency", clinic.currency) != clinic.currency:
            moved["campaign_amounts"] = _move_campaigns_to_currency(clinic.currency, values["currency"])
        if values.get("timezone", clinic.timezone) != clinic.timezone:
            moved.update(_keep_calendar_days(_zone(clinic.timezone), _zone(values["timezone"])))
        changes = _apply(clinic, values, CLINIC_FIELDS)
        if changes:
            audit.record("settings.changed", actor, changes=changes, **{key: value for key, value in moved.items()
                                                                         if value})
    return clinic


def managers_need_two_step() -> bool:
    """Whether the clinic requires two-step login of managers, read on its own before a view runs.

    Not through current_clinic(): that copy would be kept for the rest of the request, and the settings page
    saving a new language would then still speak the old one in its "saved" message.
    """
    with read_connection() as connection:
        return bool(connection.execute(select(Clinic.managers_need_two_step).where(Clinic.id == 1)).scalar())


def _check_own_two_step_first(actor: Actor) -> None:
    """Requiring two-step login of managers takes a manager who uses it: else the one turning it on would be
    sent to set it up on their very next page, which is the lesson, but a refusal says it before anything changes."""
    staff = db.session.get(Staff, actor.staff_id) if actor.staff_id is not None else None
    if staff is None or not staff.two_step_on:
        audit.record_refusal("settings.change", actor, "two_step_first")
        raise Refused("two_step_first", _("Turn on your own two-step login first (Two-step login, in the top bar): "
                                          "only then can you require it of every manager."),
                      field="managers_need_two_step", status=422)


def _zone(name: str | None):
    """A time zone by name, UTC if unusable (as :func:`clinic_zone`)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def _same_wall_time(moment: datetime, old, new) -> datetime:
    """A stored naive-UTC moment moved to show, in zone ``new``, the wall time it showed in zone ``old``."""
    local = moment.replace(tzinfo=timezone.utc).astimezone(old).replace(tzinfo=new)
    return local.astimezone(timezone.utc).replace(tzinfo=None)


def _keep_calendar_days(old, new) -> dict:
    """Before the clinic's time zone changes: keep the days campaigns run and vouchers last on the clinic's calendar.

    Both are stored as moments (the local midnights that begin and end them) and both were shown, printed and sent by
    webhook as days: "last day 31 December". Left as moments, a move west would end a campaign or a voucher at 08:00
    on its last day (the friend or the patient refused), and a move east would run them into the next day. So each
    keeps its wall times in the new zone. Returns what moved, for the settings' audit event.
    """
    campaign_days = {}
    for campaign in db.session.scalars(select(Campaign).order_by(Campaign.id)):
        for field in ("starts_at", "ends_at"):
            moment = getattr(campaign, field)
            if moment is not None and (kept := _same_wall_time(moment, old, new)) != moment:
                setattr(campaign, field, kept)
                campaign_days[f"{campaign.id}.{field}"] = [_audit_value(moment), _audit_value(kept)]
    expiries = [{"voucher": voucher_id, "kept": kept} for voucher_id, expires_at in db.session.execute(
                    select(Voucher.id, Voucher.expires_at).where(Voucher.status == VoucherStatus.ACTIVE.value))
                if (kept := _same_wall_time(expires_at, old, new)) != expires_at]
    if expiries:
        vouchers = Voucher.__table__
        db.session.execute(update(vouchers).where(vouchers.c.id == bindparam("voucher"))
                           .values(expires_at=bindparam("kept")), expiries)
    return {"campaign_days": campaign_days, "voucher_expiries_kept": len(expiries)}


# A campaign's amounts, in the minor units of the clinic's currency (the campaign has no currency of its own).
CAMPAIGN_MONEY_FIELDS = ("referrer_reward_amount", "friend_reward_amount", "card_referrer_reward_amount",
                         "card_friend_reward_amount", "cap_value_per_year")


def _move_campaigns_to_currency(old: str, new: str) -> dict:
    """Before the clinic's currency changes: refuse once money was given or printed on cards in the old one; else keep
    campaigns' amounts.

    Vouchers, rewards and paid amounts were given in the old currency, and the yearly caps count them: after the
    first referral the currency stays (a clinic sets it up once); so it does while scratch cards that can still be
    redeemed print an amount in it (a card saying CN¥200.00 would pay ¥200). Before that, a campaign's amounts keep
    the number the manager typed (200.00 CNY becomes 200 JPY), not its minor units (20000, which would read 20,000
    JPY); an amount the new currency cannot show (199.99 in JPY, which has no decimals), or one whose minor units
    would not fit its column (2,000,000,000 JPY is 200,000,000,000 fen), is refused, for the manager to change first.
    Returns the amounts changed, for the audit log.
    """
    if db.session.scalar(select(Voucher.id).limit(1)) or db.session.scalar(select(Referral.id).limit(1)):
        raise Refused("currency_in_use", _("The currency cannot change once friends have been referred or vouchers "
                                           "issued: their amounts are in %(currency)s.", currency=old),
                      field="currency")
    campaigns = list(db.session.scalars(select(Campaign).order_by(Campaign.id)))
    printed = sum(cards_carrying_offer(campaign.id) for campaign in campaigns
                  if any(terms.kind == RewardKind.MONEY.value for terms in printed_card_offer(campaign)))
    if printed:
        raise Refused("currency_printed", ngettext(
            "%(num)d scratch card that can still be redeemed prints an amount in %(currency)s: the currency cannot "
            "change while it is out.",
            "%(num)d scratch cards that can still be redeemed print amounts in %(currency)s: the currency cannot "
            "change while they are out.", printed, currency=old), field="currency")
    shift = minor_digits(new) - minor_digits(old)
    moved = {}
    for campaign in campaigns:
        for field in CAMPAIGN_MONEY_FIELDS:
            amount = getattr(campaign, field)
            if not amount or not shift:
                continue
            if shift < 0 and amount % 10 ** -shift:
                raise Refused("amount_not_in_currency", _(
                    "The campaign “%(name)s” has an amount of %(amount)s, which %(currency)s cannot show: change it "
                    "first.", name=campaign.name, amount=major_units_text(amount, old), currency=new),
                    field="currency")
            scaled = amount * 10 ** shift if shift > 0 else amount // 10 ** -shift
            if scaled > MAX_AMOUNT_MINOR:
                raise Refused("amount_not_in_currency", _(
                    "The campaign “%(name)s” has an amount of %(amount)s, more than %(currency)s amounts can be "
                    "(at most %(limit)s): change it first.", name=campaign.name, amount=major_units_text(amount, old),
                    currency=new, limit=major_units_text(MAX_AMOUNT_MINOR, new)), field="currency")
            setattr(campaign, field, scaled)
            moved[f"{campaign.id}.{field}"] = [amount, scaled]
    return moved


def update_default_campaign(values: dict, actor: Actor) -> Campaign:
    """Set the default campaign's rewards (the demo and setup scripts), creating it the first time.

    Its printed offer is kept as :func:`update_campaign` keeps it.
    """
    values = {field: values[field] for field in CAMPAIGN_FIELDS if field in values}
    with _refusals_audited(actor), atomic():
        campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)).limit(1)
                                     .with_for_update().execution_options(populate_existing=True))
        if campaign is None:
            campaign = Campaign(is_default=True, name=values.get("name") or "Refer a friend")
            db.session.add(campaign)
            db.session.flush()
        else:
            _keep_printed_offer(campaign, values)
        changes = _apply(campaign, values, CAMPAIGN_FIELDS)
        if changes:
            audit.record("campaign.changed", actor, campaign_id=campaign.id, changes=changes)
    return campaign


def list_campaigns() -> list[Campaign]:
    """Every campaign, newest first (the newest running one is in force, see rewards.campaign_in_force)."""
    return list(db.session.scalars(select(Campaign).order_by(Campaign.id.desc())))


def create_campaign(values: dict, actor: Actor) -> Campaign:
    """A new campaign from the manager's form; checked as a whole, audited with its terms."""
    _check_campaign_rules(values)
    with atomic():
        campaign = Campaign(name=values["name"])
        db.session.add(campaign)
        _apply(campaign, values, CAMPAIGN_RULE_FIELDS)
        db.session.flush()
        audit.record("campaign.created", actor, campaign_id=campaign.id,
                     terms={field: _audit_value(values[field]) for field in CAMPAIGN_RULE_FIELDS if field in values})
    return campaign


def update_campaign(campaign_id: int, values: dict, actor: Actor) -> Campaign:
    """Change a campaign's terms for redemptions from now on.

    Rewards already promised keep the terms of their redemption (each ``Reward`` row holds them),
    so no voucher, issued or pending, changes value here. The offer printed on scratch cards that can still
    be redeemed cannot change at all (:func:`_keep_printed_offer`).
    """
    with _refusals_audited(actor), atomic():
        # Locked (PostgreSQL; SQLite's write lock already orders it) against a batch being queued meanwhile:
        # inserting a batch locks the campaign it names (its foreign key), so one of the two waits for the other.
        campaign = db.session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
        if campaign is None:
            raise Refused("not_found", _("No such campaign."), status=404)
        _check_campaign_rules({field: getattr(campaign, field) for field in CAMPAIGN_RULE_FIELDS} | values)
        _keep_printed_offer(campaign, values)
        changes = _apply(campaign, values, CAMPAIGN_RULE_FIELDS)
        if changes:
            audit.record("campaign.changed", actor, campaign_id=campaign.id, changes=changes)
    return campaign


def printed_card_offer(campaign) -> tuple[RewardTerms, RewardTerms]:
    """What a scratch card printed with this campaign promises: the friend's reward and the referrer's.

    The card prints each as :meth:`RewardTerms.describe` words it (an amount off, or a named service), so a money
    reward's label and a service's amount, which print nowhere, are left out. The stage stays in: the card tells the
    friend to show it at the front desk, and a reward moved from that moment to a first payment is not what it said.
    ``campaign`` is a campaign or anything with its attributes (the terms a form proposes).
    """
    return tuple(replace(terms, label="") if terms.kind == RewardKind.MONEY.value else replace(terms, amount=0)
                 for terms in (card_friend_reward(campaign), card_referrer_reward(campaign)))


def cards_carrying_offer(campaign_id: int) -> int:
    """How many scratch cards print this campaign's offer and can still be redeemed.

    The cards neither redeemed nor void, and every card of a batch queued or being printed (its sheets print the
    offer as it is when its job runs). A failed batch has no cards; retried, it prints the offer of that moment.
    """
    printed = db.session.scalar(select(func.count(Card.id)).join(CardBatch, Card.batch_id == CardBatch.id)
                                .where(CardBatch.campaign_id == campaign_id,
                                       Card.status.in_(UNREDEEMED_CARD_STATUSES)))
    coming = db.session.scalar(select(func.coalesce(func.sum(CardBatch.size), 0))
                               .where(CardBatch.campaign_id == campaign_id,
                                      CardBatch.status.in_((BatchStatus.QUEUED.value, BatchStatus.RUNNING.value))))
    return printed + coming


class PrintedOfferRefused(Refused):
    """A change of the offer printed on scratch cards that can still be redeemed (see :func:`_keep_printed_offer`)."""

    def __init__(self, campaign_id: int, cards: int, field: str):
        super().__init__("offer_printed", ngettext(
            "%(num)d scratch card that can still be redeemed prints this campaign's offer: what each side gets, and "
            "when, cannot change while it is out. To offer something else, create a new campaign; ending this one "
            "makes its unredeemed card pay the campaign in force (the desk says so).",
            "%(num)d scratch cards that can still be redeemed print this campaign's offer: what each side gets, and "
            "when, cannot change while they are out. To offer something else, create a new campaign; ending this one "
            "makes its unredeemed cards pay the campaign in force (the desk says so).", cards),
            field=field, status=409)
        self.campaign_id, self.cards = campaign_id, cards

    def record(self, actor: Actor) -> None:
        """Audited, after the refused transaction: a manager tried to change what printed cards promise."""
        audit.record_refusal("campaign.change", actor, self.reason, campaign_id=self.campaign_id, cards=self.cards,
                             field=self.field)


@contextmanager
def _refusals_audited(actor: Actor):
    """Audit a refused change of a printed offer once its transaction has rolled back (PrintedOfferRefused.record)."""
    try:
        yield
    except PrintedOfferRefused as refusal:
        refusal.record(actor)
        raise


def _keep_printed_offer(campaign: Campaign, values: dict) -> None:
    """Refuse a change of the offer printed on the campaign's scratch cards while any of them can be redeemed.

    A card pays its batch's campaign while that runs (rewards.campaign_for_card): edited terms would pay the friend
    and the patient in whose hands the card is something else than it says. Not printed, and free to change: the
    days the campaign runs (ending it makes its cards pay the campaign in force, and the desk says so), which codes
    it covers, caps, quotas, the vouchers' validity (each voucher shows its own) and the name. Refused even where the
    change favours the patient (a larger amount): the card would then no longer say what it pays, and a clinic that
    wants to give more makes a new campaign and ends this one, which its cards then follow.
    """
    proposed = SimpleNamespace(**{field: getattr(campaign, field) for field in CAMPAIGN_RULE_FIELDS} | values)
    before, after = printed_card_offer(campaign), printed_card_offer(proposed)
    if before == after:
        return
    count = cards_carrying_offer(campaign.id)
    if count:
        raise PrintedOfferRefused(campaign.id, count, _changed_offer_field(before, after, proposed))


def _changed_offer_field(before: tuple[RewardTerms, RewardTerms], after: tuple[RewardTerms, RewardTerms],
                         proposed) -> str:
    """The form field to show the refusal next to: the first that changes the printed offer."""
    side, old, new = ("friend", before[0], after[0]) if before[0] != after[0] else ("referrer", before[1], after[1])
    if old.stage != new.stage:
        return f"{side}_reward_stage"
    prefix = f"card_{side}" if getattr(proposed, f"card_{side}_reward_kind") else side
    if old.kind != new.kind:
        return f"{prefix}_reward_kind"
    return f"{prefix}_reward_amount" if new.kind == RewardKind.MONEY.value else f"{prefix}_reward_label"


def _check_campaign_rules(values: dict) -> None:
    """Refuse terms that cannot work, naming the field: the form checks types, this checks the rules."""
    if not " ".join((values.get("name") or "").split()):
        raise Refused("validation_error", _("Name the campaign."), field="name")
    if values.get("covers", "both") not in COVERS:
        raise Refused("validation_error", _("Choose personal codes, cards or both."), field="covers")
    for side in ("referrer", "friend"):
        if values.get(f"{side}_reward_stage", "redemption") not in CAMPAIGN_STAGES:
            raise Refused("validation_error", _("Choose when the reward is paid."), field=f"{side}_reward_stage")
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts is not None and ends is not None and ends <= starts:
        raise Refused("validation_error", _("The campaign must end after it starts."), field="ends_at")
    cap = values.get("cap_referrals_per_year")
    if cap is not None and not 1 <= cap <= MAX_CAP_REFERRALS:
        raise Refused("validation_error", _("Between 1 and %(max)s referrals, or blank for no cap.",
                                              max=f"{MAX_CAP_REFERRALS:,}"),
                      field="cap_referrals_per_year")
    currency = current_clinic().currency
    for field in CAMPAIGN_MONEY_FIELDS:
        if values.get(field) is not None:
            try:
                check_amount(values[field], currency)
            except ValueError as problem:
                raise Refused("validation_error", str(problem), field=field) from None
    value_cap = values.get("cap_value_per_year")
    if value_cap is not None and value_cap < 1:
        raise Refused("validation_error", _("Enter an amount above zero, or leave blank for no cap."),
                      field="cap_value_per_year")
    quota = values.get("friend_monthly_quota")
    if quota is not None and not 1 <= quota <= MAX_MONTHLY_QUOTA:
        raise Refused("validation_error", _("Between 1 and %(max)s friends a month, or blank for no quota.",
                                              max=f"{MAX_MONTHLY_QUOTA:,}"),
                      field="friend_monthly_quota")
    if len(values.get("quota_label") or "") > 80:
        raise Refused("validation_error", _("At most %(count)s characters.", count=80), field="quota_label")


def _audit_value(value):
    """Audit details are JSON: times as ISO text."""
    return value.isoformat() if isinstance(value, datetime) else value


def _apply(row, values: dict, fields: tuple[str, ...]) -> dict:
    changes = {}
    for field in fields:
        if field in values and getattr(row, field) != values[field]:
            changes[field] = [_audit_value(getattr(row, field)), _audit_value(values[field])]
            setattr(row, field, values[field])
    return changes


def clinic_zone():
    """The clinic's time zone (UTC if the setting is unusable): calendars, caps and reports follow it."""
    try:
        return ZoneInfo(current_clinic().timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def clinic_local(moment: datetime) -> datetime:
    """A stored naive-UTC moment as the clinic's local wall time."""
    return moment.replace(tzinfo=timezone.utc).astimezone(clinic_zone())


def clinic_today() -> date:
    return datetime.now(clinic_zone()).date()


def to_clinic_time(value: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored naive-UTC time as the clinic's staff read it, in the clinic's time zone."""
    return clinic_local(value).strftime(fmt)


def start_of_clinic_day(day: date) -> datetime:
    """Midnight at the start of ``day`` in the clinic's time zone, as stored naive UTC."""
    local = datetime(day.year, day.month, day.day, tzinfo=clinic_zone())
    return local.astimezone(timezone.utc).replace(tzinfo=None)


EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(2999, 12, 31)


def refuse_implausible_day(day: date) -> None:
    """Refuse a day outside 1900-2999: beyond them, time-zone arithmetic overflows or means nothing."""
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise Refused("bad_date", _("Pick days between %(first)s and %(last)s.", first=EARLIEST_DAY.year,
                                      last=LATEST_DAY.year), status=400)


def clinic_day_of(moment: datetime) -> date:
    """The clinic's calendar day of a stored naive-UTC moment."""
    return clinic_local(moment).date()


def last_day_before(moment: datetime) -> date:
    """The last whole clinic day before an exclusive end stored at a local midnight."""
    return clinic_day_of(moment) - timedelta(days=1)


@dataclass(frozen=True)
class RewardTerms:
    """One side's reward as a campaign defines it: money off or a named service, and when it is paid."""

    kind: str
    amount: int
    label: str
    stage: str = "redemption"

    def describe(self, currency: str, locale: str | None = None) -> str:
        """"CN¥200.00 off" or the service's name, in ``locale`` (default: the language being rendered)."""
        if self.kind == RewardKind.MONEY.value:
            return _("%(amount)s off", amount=format_money(self.amount, currency, locale or current_language()))
        return self.label

    def describe_with_stage(self, currency: str, locale: str | None = None) -> str:
        """As :meth:`describe`, saying when it is given if that is not at once: "… at the first visit"."""
        reward = self.describe(currency, locale)
        if self.stage == "visit":
            return _("%(reward)s at the first visit", reward=reward)
        if self.stage == "payment":
            return _("%(reward)s at the first payment", reward=reward)
        return reward


def referrer_reward(campaign: Campaign) -> RewardTerms:
    return RewardTerms(campaign.referrer_reward_kind, campaign.referrer_reward_amount, campaign.referrer_reward_label,
                       campaign.referrer_reward_stage)


def friend_reward(campaign: Campaign) -> RewardTerms:
    return RewardTerms(campaign.friend_reward_kind, campaign.friend_reward_amount, campaign.friend_reward_label,
                       campaign.friend_reward_stage)


def card_referrer_reward(campaign: Campaign) -> RewardTerms:
    """What the patient who hands out a scratch card gets; as for personal codes unless the campaign says."""
    if campaign.card_referrer_reward_kind:
        return RewardTerms(campaign.card_referrer_reward_kind, campaign.card_referrer_reward_amount or 0,
                           campaign.card_referrer_reward_label or "", campaign.referrer_reward_stage)
    return referrer_reward(campaign)


def card_friend_reward(campaign: Campaign) -> RewardTerms:
    if campaign.card_friend_reward_kind:
        return RewardTerms(campaign.card_friend_reward_kind, campaign.card_friend_reward_amount or 0,
                           campaign.card_friend_reward_label or "", campaign.friend_reward_stage)
    return friend_reward(campaign)


BRAND_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
DEFAULT_BRAND_COLOUR = "#0f766e"


def brand_colour() -> str:
    """The clinic's colour, checked again here because it is written into CSS."""
    colour = current_clinic().brand_colour or ""
    return colour if BRAND_COLOUR.match(colour) else DEFAULT_BRAND_COLOUR


def update_clinic_with_logo(values: dict, logo_stream, upload_folder: str, actor: Actor) -> Clinic:
    """The settings form with a new logo: the logo is checked and stored first, then the settings saved.

    The logo file no longer shown is deleted (only the current one is served): the new one when the settings were
    refused, the one it replaces once they are saved. Replaced logos would otherwise pile up in the folder.
    """
    previous = get_clinic().logo_filename
    stored = save_logo(logo_stream, upload_folder)
    try:
        clinic = update_clinic({**values, "logo_filename": stored}, actor)
    except BaseException:
        _delete_logo(upload_folder, stored)
        raise
    if previous and previous != stored:
        _delete_logo(upload_folder, previous)
    return clinic


def _delete_logo(upload_folder: str, filename: str) -> None:
    if Path(filename).name == filename:  # a name the app gave, never a path
        (Path(upload_folder) / filename).unlink(missing_ok=True)


def save_logo(stream, upload_folder: str) -> str:
    """Check that the upload really is a PNG, JPEG or WebP image of sane size, store it, return its name.

    The file is re-encoded from the decoded pixels, so nothing but image data is kept. SVG is
    refused (it can carry script), and so is a file with more after the image (a polyglot).
    """
    data = stream.read()
    too_many_pixels = Refused("bad_logo", _("The logo can be at most %(pixels)s pixels on a side.",
                                             pixels=MAX_LOGO_PIXELS),
                              field="logo")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            if image_format not in LOGO_FORMATS:
                raise Refused("bad_logo", _("The logo must be a PNG, JPEG or WebP image."), field="logo")
            if max(image.size) > MAX_LOGO_PIXELS:
                raise too_many_pixels
            image.load()
            if bytes_after_image(data, image_format):
                raise Refused("bad_logo", _("The logo file has something after the image: save it again as a "
                                            "plain PNG, JPEG or WebP."), field="logo")
            if image_format == "JPEG" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")  # a print designer's CMYK JPEG: JPEG has no alpha to convert to
            elif image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA")
            encoded = io.BytesIO()
            image.save(encoded, format=image_format)
    except Image.DecompressionBombError:  # Pillow refuses to open it at all: far more than MAX_LOGO_PIXELS
        raise too_many_pixels from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise Refused("bad_logo", _("That file is not an image we can read (PNG, JPEG or WebP)."),
                      field="logo") from None
    # Written outside the checks above, whose OSError means a file Pillow cannot read.
    filename = f"logo-{secrets.token_hex(8)}.{LOGO_FORMATS[image_format]}"
    folder = Path(upload_folder)
    with stored_by_the_server(folder, field="logo"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(encoded.getvalue())
    return filename
