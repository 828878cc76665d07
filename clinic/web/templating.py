"""Jinja filters, template globals and the security headers every answer carries."""

from __future__ import annotations

import secrets
from collections import ChainMap
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import Flask, current_app, request, url_for
from flask.templating import Environment
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_pgettext
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from jinja2.compiler import CodeGenerator
from markupsafe import Markup, escape

from clinic.extensions import db
from clinic.i18n import MacroModuleAwareTemplate, current_language, format_day, format_moment, pgettext
from clinic.i18n import gettext as _
from clinic.models import Patient
from clinic.models._time import utcnow
from clinic.services.clinic_settings import (clinic_day_of, clinic_local, friend_reward, current_clinic,
                                             last_day_before, referrer_reward, to_clinic_time)
from clinic.services import audit
from clinic.services.codes import format_code
from clinic.services.erasure import ERASURE_REASON_LABELS
from clinic.services.errors import Refused
from clinic.services.money import format_money
from clinic.services.privacy import mask_name, mask_phone
from clinic.services.qr import qr_svg
from clinic.services.settings_snapshot import current_settings
from clinic.services.urls import invite_url, progress_url, public_base_url, voucher_url
from clinic.services.webhook_sender import redacted_url

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


# On every answer unless the view set its own.
ALWAYS_HEADERS = (("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("X-Content-Type-Options", "nosniff"),
                  ("Referrer-Policy", "same-origin"), ("X-Frame-Options", "DENY"))
HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the clinic are not ours to decide


class _TemplateGlobals(ChainMap):
    """A template's globals over the environment's, as Jinja builds them, with ``keys()`` a real set.

    Each ``{% from "_macros.html" import … %}`` makes Jinja compare the importing context's global names
    with the macro template's (``ctx.globals_keys - template.globals.keys()``). On a ChainMap that is
    a Python-level membership test per name, across both maps: about 20 µs an import, 2–3 % of a
    patient's page. A set union of the maps gives the same names, compared in C.
    """

    def keys(self):
        return set().union(*self.maps)


def escape_output(value) -> Markup:
    """``markupsafe.escape`` for a template's output, returning a Markup value itself instead of a copy.

    Most of a page's ``{{ … }}`` print Markup already (its translated messages, its macros); escape makes a
    new Markup of each through ``__html__``, equal to it: three Python calls each, some 3 % of a patient's page.
    """
    return value if type(value) is Markup else escape(value)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, printing ``{{ … }}`` through :func:`escape_output` where autoescape is on."""

    def _output_child_pre(self, node, frame, finalize):
        if frame.eval_ctx.autoescape and not frame.eval_ctx.volatile and finalize.src is None:
            self.write("environment.escape_output(")
        else:
            super()._output_child_pre(node, frame, finalize)


class TemplateEnvironment(Environment):
    """Flask's Jinja environment, with :class:`_TemplateGlobals` as every template's globals."""

    template_class = MacroModuleAwareTemplate  # the catalogue of imported macros follows each render's language
    code_generator_class = _CodeGenerator
    escape_output = staticmethod(escape_output)

    def make_globals(self, d):
        return _TemplateGlobals({} if d is None else d, self.globals)


def local_time(value: datetime | None, fmt: str | None = None) -> str:
    """A stored time in the clinic's zone, in the reader's language; ``fmt`` forces a fixed strftime format."""
    if value is None:
        return ""
    return format_moment(clinic_local(value)) if fmt is None else to_clinic_time(value, fmt)


def local_date(value: datetime | None) -> str:
    """The clinic's calendar day of a stored time, in the reader's language."""
    return "" if value is None else format_day(clinic_day_of(value))


def money(amount: int, currency: str | None = None) -> str:
    return format_money(amount, currency or current_clinic().currency, current_language())


def describe_voucher(voucher) -> str:
    if voucher.kind == "money":
        return _("%(amount)s off", amount=format_money(voucher.amount, voucher.currency, current_language()))
    return voucher.label


AUDIT_LABELS = {
    "redemption": _l("Referral code redemption"),  # ok or refused: "redeemed · refused" contradicted itself
    "voucher.issued": _l("Voucher issued"),
    "voucher.spent": _l("Voucher spent"),
    "voucher.spend": _l("Voucher spend attempt"),
    "voucher.voided": _l("Voucher voided"),
    "voucher.void": _l("Voucher void attempt"),
    "voucher.expiry_moved": _l("Voucher expiry moved to the end of its day"),
    "patient.enrolled": "Enrolled",  # see audit_label
    "patients.imported": _l("Patients imported (CSV)"),
    "export.progress_links": _l("Progress links of an import exported (CSV)"),
    "patient.progress_link_rotated": _l("New progress link issued"),
    "login": _l("Logged in"),
    "logout": _l("Logged out"),
    "settings.changed": _l("Settings changed"),
    "campaign.changed": _l("Campaign changed"),
    "campaign.change": _l("Campaign change attempt"),
    "staff.created": _l("Staff account created"),
    "staff.disabled": _l("Staff account disabled (logged out everywhere)"),
    "staff.enabled": _l("Staff account enabled"),
    "staff.sessions_ended": _l("Staff logged out on every device"),
    "login.code": _l("Two-step login code"),
    "two_step.enrolment_started": _l("Two-step login set-up started"),
    "two_step.enable": _l("Two-step login turn-on attempt"),
    "two_step.enabled": _l("Two-step login turned on"),
    "two_step.disable": _l("Two-step login turn-off attempt"),
    "two_step.disabled": _l("Two-step login turned off"),
    "two_step.reset": _l("Two-step login reset by a manager"),
    "patient.poster_consent": _l("Poster name consent changed"),
    "card.activated": _l("Scratch card activated"),
    "card.activate": _l("Scratch card activation attempt"),
    "card.voided": _l("Scratch card voided"),
    "card_batch.created": _l("Card batch queued"),
    "card_batch.generated": _l("Card batch printed"),
    "card_batch.failed": _l("Card batch failed"),
    "card_batch.retried": _l("Card batch retried"),
    "card_batch.voided": _l("Card batch voided"),
    "branch.created": _l("Branch added"),
    "branch.changed": _l("Branch changed"),
    "staff.branch_assigned": _l("Staff moved to a branch"),
    "export.referrals": _l("Referrals exported (CSV)"),
    "export.vouchers": _l("Vouchers exported (CSV)"),
    "export.patients": _l("Patients exported (CSV)"),
    "export.campaigns": _l("Campaign comparison exported (CSV)"),
    "campaign.created": _l("Campaign created"),
    "referral.visited": _l("First visit recorded"),
    "referral.paid": _l("First payment recorded"),
    "referral.reversed": _l("Referral reversed"),
    "reward.held_for_review": _l("Reward held for manager approval"),
    "review.requested": _l("Sent for manager approval"),
    "review.approved": _l("Manager approved"),
    "review.rejected": _l("Manager rejected"),
    "tier.created": _l("Tier added"),
    "tier.changed": _l("Tier changed"),
    "tier.deleted": _l("Tier deleted"),
    "tier.reached": _l("Tier reached"),
    "patient.leaderboard_consent": _l("Leaderboard consent changed"),
    "api_token.created": _l("API token created"),
    "api_token.revoked": _l("API token revoked"),
    "patient.notification_consent": _l("Message consent or channel changed"),
    "notifications.templates_changed": _l("Notification messages changed"),
    "webhook.created": _l("Webhook endpoint added"),
    "webhook.enabled": _l("Webhook endpoint enabled"),
    "webhook.disabled": _l("Webhook endpoint disabled"),
    "webhook.deleted": _l("Webhook endpoint deleted"),
    "webhook.resent": _l("Webhook delivery resent"),
    "webhook.secret_rotated": _l("Webhook signing secret replaced"),
    "webhook.cancelled": _l("Message to a patient cancelled, not sent"),
    "patient.erased": _l("Personal data erased"),
    "feedback.called": _l("Patient called back after their feedback"),
    "check.marked": _l("Referral to check marked as checked"),
    "export.patient_data": _l("A patient's data exported (JSON)"),
    "patient.details_corrected": _l("Patient details corrected"),
    "vouchers.expiry_reminded": _l("Patients reminded of vouchers about to expire"),
    "retention.run": _l("Inactive patients' data erased (retention rule)"),
    "patient.invited": _l("Patient sent their code by message"),
    "invitations.sent": _l("Patients sent their code by message"),
    "lead.requested": _l("Call-back requested on the invite page"),
    "lead.renewed": _l("Call-back requested again"),
    "lead.status_changed": _l("Call-back status changed"),
    "leads.pruned": _l("Old call-back requests deleted"),
}


def audit_label(action: str) -> str:
    if action == "patient.enrolled":  # "Enrolled" elsewhere heads a column of dates
        return pgettext("audit", "Enrolled")
    return str(AUDIT_LABELS.get(action, action))


# Why an attempt was refused, for people: the audit log showed the stored key ("existing_patient") even in Chinese.
REFUSAL_LABELS = {
    "unknown_code": lazy_pgettext("refusal", "unknown code"),
    "mistyped_code": lazy_pgettext("refusal", "mistyped code"),
    "not_a_referral_code": lazy_pgettext("refusal", "not a referral code"),
    "not_a_voucher": lazy_pgettext("refusal", "not a voucher"),
    "unknown_card": lazy_pgettext("refusal", "unknown card"),
    "card_not_activated": lazy_pgettext("refusal", "card not activated"),
    "card_void": lazy_pgettext("refusal", "card void"),
    "already_activated": lazy_pgettext("refusal", "already activated"),
    "already_redeemed": lazy_pgettext("refusal", "already redeemed"),
    "already_spent": lazy_pgettext("refusal", "already spent"),
    "voided": lazy_pgettext("refusal", "voided"),
    "expired": lazy_pgettext("refusal", "expired"),
    "campaign_ended": lazy_pgettext("refusal", "campaign ended"),
    "no_campaign": lazy_pgettext("refusal", "no campaign"),
    "code_withdrawn": lazy_pgettext("refusal", "code withdrawn"),
    "self_referral": lazy_pgettext("refusal", "self-referral"),
    "existing_patient": lazy_pgettext("refusal", "already a patient"),
    "patient_erased": lazy_pgettext("refusal", "patient erased"),
    "over_cap": lazy_pgettext("refusal", "over the referrer's cap"),
    "quota_full": lazy_pgettext("refusal", "monthly quota full"),
    "rate_limited": lazy_pgettext("refusal", "too many attempts"),
    "validation_error": lazy_pgettext("refusal", "invalid input"),
    "bad_credentials": lazy_pgettext("refusal", "wrong email or password"),
    "wrong_password": lazy_pgettext("refusal", "wrong password"),
    "wrong_code": lazy_pgettext("refusal", "wrong code"),
    "two_step_first": lazy_pgettext("refusal", "two-step login needed first"),
}


def audit_reason(reason: str | None) -> str:
    """A refusal's reason in the reader's language; a reason without a label reads as its key with spaces."""
    if not reason:
        return ""
    label = REFUSAL_LABELS.get(reason)
    return str(label) if label is not None else reason.replace("_", " ")


# The names of audit details and of changed settings, for people; others show as their key with spaces.
AUDIT_DETAIL_LABELS = {
    "email": _l("email"), "role": _l("role"), "staff_member": _l("staff member"), "batch": _l("batch"),
    "size": _l("size"), "design": _l("design"), "bleed": _l("bleed"), "serial": _l("serial"), "card": _l("card"),
    "cards": _l("cards"), "code": _l("code"), "referrer": _l("referrer"), "campaign": _l("campaign"),
    "amount": _l("amount"), "beneficiary": _l("beneficiary"), "kind": _l("kind"), "label": _l("label"),
    "reason_text": _l("reason text"), "changes": _l("changes"), "rewards_paid": _l("rewards paid"),
    "voided": _l("voided"), "already_spent": _l("already spent"), "cancelled": _l("cancelled"), "tier": _l("tier"),
    "tier_id": _l("tier id"), "consent": _l("consent"), "channel": _l("channel"),
    "language": _l("language"), "templates": _l("templates"), "branch": _l("branch"), "old_branch": _l("old branch"),
    "new_branch": _l("new branch"), "sessions": _l("sessions"), "count": _l("count"), "skipped": _l("skipped"),
    "source": _l("source"), "rows": _l("rows"), "first_day": _l("first day"), "last_day": _l("last day"),
    "terms": _l("terms"), "personal": _l("personal"), "approved_review": _l("approved review"),
    "notification_consent": _l("notification consent"), "min_paid_referrals": _l("min paid referrals"),
    "window_months": _l("window months"), "events": _l("events"), "url": _l("url"), "error": _l("error"),
    "api_token": _l("api token"), "phone": _l("phone"), "address": _l("address"), "currency": _l("currency"),
    "timezone": _l("timezone"), "brand_colour": _l("brand colour"), "public_base_url": _l("public base url"),
    "logo_filename": _l("logo filename"), "voucher_valid_days": _l("voucher valid days"),
    "cancelled_messages": _l("cancelled messages"), "scopes": _l("scopes"),
    "erasure_reason": _l("why"), "cards_voided": _l("cards voided"), "rewards_cancelled": _l("rewards cancelled"),
    "reviews_rejected": _l("requests rejected"), "messages_cancelled": _l("messages cancelled"),
    "events_redacted": _l("events redacted"), "vouchers_kept": _l("vouchers kept"), "bytes": _l("bytes"),
    # A campaign's and the clinic's settings, as a change lists them.
    "referrer_reward_kind": _l("referrer's reward kind"), "referrer_reward_amount": _l("referrer's reward amount"),
    "referrer_reward_label": _l("referrer's reward name"), "friend_reward_kind": _l("friend's reward kind"),
    "friend_reward_amount": _l("friend's reward amount"), "friend_reward_label": _l("friend's reward name"),
    "card_referrer_reward_kind": _l("card: referrer's reward kind"),
    "card_referrer_reward_amount": _l("card: referrer's reward amount"),
    "card_referrer_reward_label": _l("card: referrer's reward name"),
    "card_friend_reward_kind": _l("card: friend's reward kind"),
    "card_friend_reward_amount": _l("card: friend's reward amount"),
    "card_friend_reward_label": _l("card: friend's reward name"),
    "starts_at": _l("starts"), "ends_at": _l("ends"), "covers": _l("covers"),
    "referrer_reward_stage": _l("referrer rewarded"), "friend_reward_stage": _l("friend rewarded"),
    "cap_referrals_per_year": _l("yearly cap on referrals"), "cap_value_per_year": _l("yearly cap on reward value"),
    "friend_monthly_quota": _l("monthly quota"), "quota_label": _l("quota note"),
    "managers_need_two_step": _l("managers need two-step login"),
    "fields": _l("fields"), "full_name": _l("full name"), "display_name": _l("display name"),
    "external_id": _l("record number"), "name_on_posters": _l("name on posters"),
    "vouchers": _l("vouchers"), "window_days": _l("days before expiry"),
    "retention_months": _l("erase after months without activity"), "erased": _l("erased"), "failed": _l("failed"),
    "via": _l("via"), "patients": _l("patients"), "not_within_days": _l("not sent within days"),
    "enrolled_within_days": _l("enrolled within days"),
    "lead_id": _l("call-back request"), "status": _l("status"), "with_note": _l("with a note"),
    "older_than_days": _l("older than days"), "call_back": _l("call-back request answered"),
    "call_back_requests_deleted": _l("call-back requests deleted"),
}


def _detail_label(key: str) -> str:
    if key == "name":  # a branch's, tier's or token's name: not a person's, as "name" is elsewhere
        return pgettext("audit detail", "name")
    return str(AUDIT_DETAIL_LABELS.get(key, key.replace("_", " ")))


def audit_actor(event) -> str:
    """Who acted: the staff member's email, the patient on their own private link, a rule of the clinic's, or "—".

    A manager who pressed the retention rule's button is named, with the rule: they chose the moment, the rule whom.
    """
    by = (event.details or {}).get(audit.BY)
    if by == audit.RETENTION_RULE:
        rule = _("The clinic's retention rule")
        return f"{rule} ({event.staff.email})" if event.staff is not None else rule
    if event.staff is not None:
        return event.staff.email
    if by == audit.PATIENT_LINK:
        return _("The patient, on their own link")
    if by == audit.INVITE_PAGE:
        return _("A friend, on the invite page")
    return "—"


def audit_details(event) -> str:
    """The event's details for people: money in the clinic's currency, not raw minor units."""
    details = dict(event.details or {})
    details.pop(audit.BY, None)  # said in the actor's column (audit_actor)
    # Amounts are in the clinic's currency unless the event says otherwise (events before the paid amount
    # carried its currency said nothing).
    currency = details.pop("currency", None) or current_clinic().currency
    if "tier" in details:
        details.pop("tier_id", None)  # the tier's name says it
    parts = []
    for key, value in details.items():
        if key == "campaign_id":
            key, value = "campaign", _campaign_name(value)
        elif key == "referrer_id":
            key, value = "referrer", _patient_name(value)
        elif key == "code" and isinstance(value, str) and value.isalnum():
            value = format_code(value)  # as the desk shows and the patient reads it
        elif key == "rewards_paid" and value == 0:
            value = _("none")
        elif key == "beneficiary" and value in ("referrer", "friend"):
            value = pgettext("beneficiary", value)  # stored in English, read in the reader's language
        elif key == "kind" and value in ("money", "service"):
            value = reward_kind_label(value)
        elif key == "amount":
            if not value:
                continue  # a service voucher has no amount
            value = format_money(int(value), currency, current_language())
        elif key == "url" and isinstance(value, str):
            value = redacted_url(value)  # events written before addresses were redacted kept their keys
        elif key == "erasure_reason":
            value = ERASURE_REASON_LABELS.get(value, value)
        elif key == "changes" and isinstance(value, dict):
            value = ", ".join(f"{_detail_label(field)} {_changed_value(field, old, currency)} → "
                              f"{_changed_value(field, new, currency)}" for field, (old, new) in value.items())
        elif key == "fields" and isinstance(value, list):  # the names of the fields changed, never their values
            value = ", ".join(_detail_label(str(field)) for field in value)
        parts.append(f"{_detail_label(key)}: {value}")
    return "; ".join(parts)


def reward_kind_label(kind: str) -> str:
    """A reward's kind (``money`` or ``service``) in the reader's words."""
    return _("money off") if kind == "money" else _("a named service")


def _changed_value(field: str, value, currency: str) -> str:
    """One side of a changed setting, for people: it read "None → 20000" (Python's words and minor units).

    Nothing is "—", an amount is money, a reward's kind its name, a stored moment the clinic's local day and time,
    a text in quotes (so that a blank or a trailing space shows), a yes/no setting yes or no.
    """
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if (field.endswith("_amount") or field == "cap_value_per_year") and isinstance(value, int):
        return format_money(value, currency, current_language())
    if field.endswith("_kind") and value in ("money", "service"):
        return reward_kind_label(value)
    if field.endswith("_stage") and value in STAGE_LABELS:
        return str(STAGE_LABELS[value])
    if field == "covers" and value in COVERS_LABELS:
        return str(COVERS_LABELS[value])
    if field.endswith("_at") and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)  # stored moments are naive UTC
        return format_moment(clinic_local(moment))
    if isinstance(value, str):
        return f"“{value}”"
    return str(value)


def _campaign_name(campaign_id) -> str:
    """A campaign named as the manager named it; its id only if it is not (or no longer) there."""
    name = next((campaign.name for campaign in current_settings().campaigns if campaign.id == campaign_id), None)
    return name if name is not None else f"#{campaign_id}"


def _patient_name(patient_id) -> str:
    """The patient named for staff (an erased one is called so); the id of one that cannot be found."""
    patient = db.session.get(Patient, patient_id) if isinstance(patient_id, int) else None
    return patient.staff_name if patient is not None else f"#{patient_id}"


COVERS_LABELS = {"both": _l("Personal codes and scratch cards"), "personal": _l("Personal codes only"),
                 "cards": _l("Scratch cards only")}
STAGE_LABELS = {"redemption": _l("when the code is redeemed"), "visit": _l("at the friend's first visit"),
                "payment": _l("at the friend's first payment")}


def stage_label(stage: str) -> str:
    return str(STAGE_LABELS.get(stage, stage))


def campaign_reward(campaign, side: str) -> str:
    """One side's reward under a campaign and when it is paid: "CN¥200.00 off, at the friend's first visit"."""
    terms = referrer_reward(campaign) if side == "referrer" else friend_reward(campaign)
    return _("%(reward)s, %(stage)s", reward=terms.describe(current_clinic().currency), stage=stage_label(terms.stage))


def last_clinic_day(end: datetime | None) -> str:
    """An exclusive end at a local midnight (a campaign's, a voucher's expiry) as the last day it holds."""
    return "" if end is None else format_day(last_day_before(end))


def voucher_status(voucher) -> str:
    """active / spent / void, or expired for an active voucher past its date."""
    return voucher.status_at(utcnow()).value


def fixed_url(endpoint: str, **values) -> str:
    """``url_for`` for a link that is the same on every request: a static file, the brand stylesheet.

    Werkzeug builds a URL in about 10 µs and every page links three or four of these, so each is built
    once per app and script root (the path prefix a proxy may mount the app under) and remembered.
    """
    urls = current_app.extensions.setdefault("fixed_urls", {})
    key = (request.script_root, endpoint, *sorted(values.items()))
    url = urls.get(key)
    if url is None:
        url = urls[key] = url_for(endpoint, **values)
    return url


@dataclass(frozen=True)
class PlainField:
    """A field a view checks by itself, without a WTForms form, shaped as templates/_macros.html's error macros read a
    WTForms field (its ``id`` and its ``errors``): hand-drawn forms then say their errors as field() does."""

    id: str
    errors: tuple[str, ...] = ()


def plain_field(field_id: str, *errors: str | None) -> PlainField:
    """The field ``field_id`` with its messages; none given (or only empty ones): the field is fine."""
    return PlainField(field_id, tuple(error for error in errors if error))


def refused_field(field_id: str, refusal: Refused | None) -> PlainField:
    """The field ``field_id``, with a view's refusal as its error when the refusal names that field."""
    return plain_field(field_id, refusal.message if refusal is not None and refusal.field == field_id else None)


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
        audit_reason=audit_reason,
        audit_details=audit_details,
        audit_actor=audit_actor,
        stage_label=stage_label,
        campaign_reward=campaign_reward,
        clinic_day=local_date,
        local_date=local_date,
        last_clinic_day=last_clinic_day,
        redacted_url=redacted_url,
    )
    app.jinja_env.globals.update(qr_svg=qr_svg, csrf_token=generate_csrf, new_form_key=lambda: secrets.token_urlsafe(24),
                                  invite_url=invite_url, progress_url=progress_url, voucher_url=voucher_url,
                                  public_base_url=public_base_url,
                                  fixed_url=fixed_url, current_user=current_user, plain_field=plain_field,
                                  refused_field=refused_field)

    @app.context_processor
    def _inject():
        return {"clinic": current_clinic(), "now": utcnow()}

    @app.after_request
    def _security_headers(response):
        # The names already there, read once: werkzeug answers each lookup of a missing header (setdefault,
        # "in") by raising and catching an HTTP exception, a dozen a page.
        present = {name.lower() for name, _value in response.headers.items()}
        wanted = [*ALWAYS_HEADERS]
        if request.is_secure:  # over HTTPS (directly or, with TRUSTED_PROXY_HOPS, behind a proxy)
            wanted.append(("Strict-Transport-Security", HSTS))
        if request.endpoint != "static":
            # Pages name patients: a shared desk PC or phone must not show them again from its cache
            # (the back button after logging out). Pages that may be cached say so themselves.
            wanted.append(("Cache-Control", "no-store"))
        if request.environ.get("HTTP_HX_REQUEST"):
            wanted.append(("Vary", "HX-Request"))
        for name, value in wanted:
            if name.lower() not in present:
                response.headers.add(name, value)
        return response
