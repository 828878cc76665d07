"""The clinic's settings and its default campaign, as managers edit them."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Campaign, Clinic, RewardKind
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.money import format_money
from clinic.services.transaction import Actor, atomic

LOGO_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_LOGO_PIXELS = 4000
CLINIC_FIELDS = ("name", "phone", "address", "brand_colour", "currency", "timezone", "public_base_url",
                 "logo_filename")
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


def get_clinic() -> Clinic:
    """The clinic row; a fresh database gets a placeholder so every page can render."""
    clinic = db.session.get(Clinic, 1)
    if clinic is None:
        with atomic():
            db.session.add(Clinic(id=1, name="Our clinic"))
        clinic = db.session.get(Clinic, 1)
    return clinic


def default_campaign() -> Campaign | None:
    return db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)).limit(1))


def update_clinic(values: dict, actor: Actor) -> Clinic:
    """Save the settings form; the audit event lists what changed, old and new."""
    with atomic():
        clinic = get_clinic()
        changes = _apply(clinic, values, CLINIC_FIELDS)
        if changes:
            audit.record("settings.changed", actor, changes=changes)
    return clinic


def update_default_campaign(values: dict, actor: Actor) -> Campaign:
    with atomic():
        campaign = default_campaign()
        if campaign is None:
            campaign = Campaign(is_default=True, name=values.get("name") or "Refer a friend")
            db.session.add(campaign)
            db.session.flush()
        changes = _apply(campaign, values, CAMPAIGN_FIELDS)
        if changes:
            audit.record("campaign.changed", actor, campaign_id=campaign.id, changes=changes)
    return campaign


def _apply(row, values: dict, fields: tuple[str, ...]) -> dict:
    changes = {}
    for field in fields:
        if field in values and getattr(row, field) != values[field]:
            changes[field] = [getattr(row, field), values[field]]
            setattr(row, field, values[field])
    return changes


def to_clinic_time(value: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored naive-UTC time as the clinic's staff read it, in the clinic's time zone."""
    try:
        zone = ZoneInfo(get_clinic().timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    return value.replace(tzinfo=timezone.utc).astimezone(zone).strftime(fmt)


@dataclass(frozen=True)
class RewardTerms:
    """One side's reward as a campaign defines it: money off or a named service, and when it is paid."""

    kind: str
    amount: int
    label: str
    stage: str = "redemption"

    def describe(self, currency: str, locale: str = "en") -> str:
        if self.kind == RewardKind.MONEY.value:
            return f"{format_money(self.amount, currency, locale)} off"
        return self.label


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
    colour = get_clinic().brand_colour or ""
    return colour if BRAND_COLOUR.match(colour) else DEFAULT_BRAND_COLOUR


def save_logo(stream, upload_folder: str) -> str:
    """Check that the upload really is a PNG, JPEG or WebP image of sane size, store it, return its name.

    The file is re-encoded from the decoded pixels, so nothing but image data is kept
    (no scripts in SVG, no trailing payloads). SVG is refused: it can carry script.
    """
    try:
        with Image.open(stream) as image:
            image_format = image.format
            if image_format not in LOGO_FORMATS:
                raise Refused("bad_logo", "The logo must be a PNG, JPEG or WebP image.", field="logo")
            if max(image.size) > MAX_LOGO_PIXELS:
                raise Refused("bad_logo", f"The logo can be at most {MAX_LOGO_PIXELS} pixels on a side.",
                              field="logo")
            image.load()
            extension = LOGO_FORMATS[image_format]
            filename = f"logo-{secrets.token_hex(8)}.{extension}"
            folder = Path(upload_folder)
            folder.mkdir(parents=True, exist_ok=True)
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA")
            image.save(folder / filename, format=image_format)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError):
        raise Refused("bad_logo", "That file is not an image we can read (PNG, JPEG or WebP).",
                      field="logo") from None
    return filename
