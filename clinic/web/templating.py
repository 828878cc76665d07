"""Jinja filters, template globals and the security headers every answer carries."""

from __future__ import annotations

import secrets
from datetime import datetime

from flask import Flask, g, request
from flask_wtf.csrf import generate_csrf

from clinic.i18n import current_language, format_day, format_moment
from clinic.models._time import utcnow
from clinic.services.clinic_settings import (clinic_day_of, clinic_local, friend_reward, get_clinic,
                                             last_day_before, referrer_reward, to_clinic_time)
from clinic.services.codes import format_code
from clinic.services.money import format_money
from clinic.services.privacy import mask_name, mask_phone
from clinic.services.qr import qr_svg
from clinic.services.urls import invite_url, progress_url, voucher_url

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the clinic are not ours to decide


def _clinic():
    if "clinic" not in g:
        g.clinic = get_clinic()
    return g.clinic


def local_time(value: datetime | None, fmt: str | None = None) -> str:
    """A stored time in the clinic's zone, in the reader's language; ``fmt`` forces a fixed strftime format."""
    if value is None:
        return ""
    return format_moment(clinic_local(value)) if fmt is None else to_clinic_time(value, fmt)


def local_date(value: datetime | None) -> str:
    """The clinic's calendar day of a stored time, in the reader's language."""
    return "" if value is None else format_day(clinic_day_of(value))


def money(amount: int, currency: str | None = None) -> str:
    return format_money(amount, currency or _clinic().currency, current_language())


def describe_voucher(voucher) -> str:
    if voucher.kind == "money":
        return f"{format_money(voucher.amount, voucher.currency)} off"
    return voucher.label


AUDIT_LABELS = {
    "redemption": "Referral code redeemed",
    "voucher.issued": "Voucher issued",
    "voucher.spent": "Voucher spent",
    "voucher.spend": "Voucher spend attempt",
    "voucher.voided": "Voucher voided",
    "patient.enrolled": "Enrolled",
    "patients.imported": "Patients imported (CSV)",
    "export.progress_links": "Progress links of an import exported (CSV)",
    "patient.progress_link_rotated": "New progress link issued",
    "login": "Logged in",
    "logout": "Logged out",
    "settings.changed": "Settings changed",
    "campaign.changed": "Campaign changed",
    "staff.created": "Staff account created",
    "staff.disabled": "Staff account disabled (logged out everywhere)",
    "staff.enabled": "Staff account enabled",
    "staff.sessions_ended": "Staff logged out on every device",
    "patient.poster_consent": "Poster name consent changed",
    "card.activated": "Scratch card activated",
    "card.activate": "Scratch card activation attempt",
    "card.voided": "Scratch card voided",
    "card_batch.created": "Card batch queued",
    "card_batch.generated": "Card batch printed",
    "card_batch.failed": "Card batch failed",
    "card_batch.retried": "Card batch retried",
    "card_batch.voided": "Card batch voided",
    "branch.created": "Branch added",
    "branch.changed": "Branch changed",
    "staff.branch_assigned": "Staff moved to a branch",
    "export.referrals": "Referrals exported (CSV)",
    "export.vouchers": "Vouchers exported (CSV)",
    "export.patients": "Patients exported (CSV)",
    "campaign.created": "Campaign created",
    "referral.visited": "First visit recorded",
    "referral.paid": "First payment recorded",
    "referral.reversed": "Referral reversed",
    "reward.held_for_review": "Reward held for manager approval",
    "review.requested": "Sent for manager approval",
    "review.approved": "Manager approved",
    "review.rejected": "Manager rejected",
    "tier.created": "Tier added",
    "tier.changed": "Tier changed",
    "tier.deleted": "Tier deleted",
    "tier.reached": "Tier reached",
    "patient.leaderboard_consent": "Leaderboard consent changed",
    "api_token.created": "API token created",
    "api_token.revoked": "API token revoked",
    "patient.notification_consent": "Message consent or channel changed",
    "notifications.templates_changed": "Notification messages changed",
    "webhook.created": "Webhook endpoint added",
    "webhook.enabled": "Webhook endpoint enabled",
    "webhook.disabled": "Webhook endpoint disabled",
    "webhook.deleted": "Webhook endpoint deleted",
    "webhook.resent": "Webhook delivery resent",
}


def audit_label(action: str) -> str:
    return AUDIT_LABELS.get(action, action)


def audit_details(event) -> str:
    """The event's details for people: money in the clinic's currency, not raw minor units."""
    details = dict(event.details or {})
    currency = details.pop("currency", None)
    parts = []
    for key, value in details.items():
        if key == "amount":
            if not value:
                continue  # a service voucher has no amount
            if currency:
                value = format_money(int(value), currency)
        elif key == "changes" and isinstance(value, dict):
            value = ", ".join(f"{field.replace('_', ' ')} {old!r} → {new!r}" for field, (old, new) in value.items())
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


STAGE_LABELS = {"redemption": "when the code is redeemed", "visit": "at the friend's first visit",
                "payment": "at the friend's first payment"}


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage)


def campaign_reward(campaign, side: str) -> str:
    """One side's reward under a campaign and when it is paid: "CN¥200.00 off, at the friend's first visit"."""
    terms = referrer_reward(campaign) if side == "referrer" else friend_reward(campaign)
    return f"{terms.describe(_clinic().currency)}, {stage_label(terms.stage)}"


def last_clinic_day(end: datetime | None) -> str:
    """A campaign's exclusive end (a local midnight) as the last day it runs."""
    return "" if end is None else format_day(last_day_before(end))


def voucher_status(voucher) -> str:
    """active / spent / void, or expired for an active voucher past its date."""
    return voucher.status_at(utcnow()).value


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        money=money,
        local_time=local_time,
        code=format_code,
        mask_name=mask_name,
        mask_phone=mask_phone,
        voucher_value=describe_voucher,
        voucher_status=voucher_status,
        audit_label=audit_label,
        audit_details=audit_details,
        stage_label=stage_label,
        campaign_reward=campaign_reward,
        clinic_day=local_date,
        local_date=local_date,
        last_clinic_day=last_clinic_day,
    )
    app.jinja_env.globals.update(qr_svg=qr_svg, csrf_token=generate_csrf, new_form_key=lambda: secrets.token_urlsafe(24),
                                  invite_url=invite_url, progress_url=progress_url, voucher_url=voucher_url)

    @app.context_processor
    def _inject():
        return {"clinic": _clinic(), "now": utcnow()}

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.is_secure:  # over HTTPS (directly or, with TRUSTED_PROXY_HOPS, behind a proxy)
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if request.endpoint != "static":
            # Pages name patients: a shared desk PC or phone must not show them again from its cache
            # (the back button after logging out). Pages that may be cached say so themselves.
            response.headers.setdefault("Cache-Control", "no-store")
        if request.headers.get("HX-Request") and "Vary" not in response.headers:
            response.headers["Vary"] = "HX-Request"
        return response
