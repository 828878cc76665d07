"""WTForms forms; patient and money fields reuse the services' own validation."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_pgettext
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileSize
from dataclasses import fields as dataclass_fields
from datetime import date, timedelta

from wtforms import (BooleanField, DateField, EmailField, HiddenField, IntegerField, PasswordField, RadioField,
                     SelectField, SelectMultipleField, StringField, TextAreaField)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp, ValidationError
from zoneinfo import available_timezones

from clinic.i18n import LANGUAGES as PORTAL_LANGUAGES
from clinic.models import RewardKind
from clinic.services.erasure import ERASURE_REASONS
from clinic.services.invitation_messages import DEFAULT_NOT_WITHIN_DAYS, Audience
from clinic.services.clinic_settings import (MAX_LOGO_BYTES, MAX_LOGO_PIXELS, RETENTION_CHOICES, clinic_day_of,
                                             last_day_before, start_of_clinic_day)
from clinic.services.money import major_units_text, parse_money
from clinic.services.patients import CORRECTABLE_DETAILS, FieldErrors, PatientDetails
from clinic.services.tiers import TierRules
from clinic.services.webhooks import EVENT_TYPES, EndpointRules
from clinic.services.text import has_hidden_characters

def printable(form, field):
    """Refuse control, zero-width and direction-override characters in free text."""
    if field.data and has_hidden_characters(field.data.replace("\r\n", " ").replace("\n", " ")):
        raise ValidationError(_("This contains characters that cannot be printed."))


REWARD_KINDS = [SelectChoice(RewardKind.MONEY.value, _l("Money off")),
                SelectChoice(RewardKind.SERVICE.value, _l("A named service"))]
CURRENCIES = ("CNY", "HKD", "TWD", "SGD", "MYR", "USD", "EUR", "GBP", "JPY", "KRW", "AUD", "CAD")


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter your email.")), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=200)])


class TwoStepCodeForm(FlaskForm):
    """The second step of a login, and the confirmation of a new authenticator app: one code."""

    code = StringField(_l("Verification code"), validators=[DataRequired(_l("Type the code from your authenticator app.")),
                                              Length(max=40, message=_l("That is longer than any code."))])


class TwoStepOffForm(TwoStepCodeForm):
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=200)])


CHANNELS = [SelectChoice("none", _l("No messages")), SelectChoice("sms", _l("SMS")),
            SelectChoice("wechat", _l("WeChat"))]
LANGUAGES = [SelectChoice("zh_CN", "简体中文"), SelectChoice("en", "English")]


# PatientDetails.from_form's arguments, each the name of the form field it is read from.
PATIENT_DETAIL_FIELDS = tuple(field.name for field in dataclass_fields(PatientDetails))


class PatientNameAndContactForm(FlaskForm):
    """Who the patient is and how to reach them, checked by :meth:`PatientDetails.from_form`.

    The fields every patient form shares: enrolment and the desk's friend add the consents
    (PatientDetailsForm), a correction of the details adds what it was loaded with (CorrectDetailsForm).
    """

    full_name = StringField(_l("Full name"))
    display_name = StringField(_l("Name on posters (optional)"))
    phone = StringField(_l("Phone (optional)"))
    external_id = StringField(_l("Clinic record number (optional)"))
    details: PatientDetails | None = None

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        try:
            self.details = PatientDetails.from_form(**self.detail_values())
        except FieldErrors as problems:
            for field, message in problems.errors.items():
                self.add_error(field, message)
            return False
        return valid

    def detail_values(self) -> dict:
        """What the fields say, by the names PatientDetails takes."""
        return {name: self[name].data for name in PATIENT_DETAIL_FIELDS if name in self}

    def add_error(self, field: str | None, message: str) -> None:
        target = self[field] if field in self else self.full_name
        target.errors.append(message)


class PatientDetailsForm(PatientNameAndContactForm):
    """A person's details: enrolment, and the friend's details at the desk."""

    name_on_posters = BooleanField(_l("The patient agrees to have this name printed on their posters"))
    # Optional: the desk's redemption form leaves them out (no channel, no consent).
    preferred_channel = SelectField(_l("Messages about rewards"), choices=CHANNELS, validate_choice=False)
    preferred_language = SelectField(_l("Language of the messages"), choices=LANGUAGES, validate_choice=False)
    notification_consent = BooleanField(_l("The patient agrees to receive these messages"))


LOGO_MB = MAX_LOGO_BYTES // (1024 * 1024)


def _months_or_never(value) -> int | None:
    """The retention field's value: "" is never (None); anything not a whole number fails the choice check."""
    if value in (None, ""):
        return None
    return int(value)


RETENTION_OPTIONS = [SelectChoice("", _l("Never: keep it until someone erases it"))] + [
    SelectChoice(str(months), _l("After %(years)s years without activity", years=months // 12))
    for months in RETENTION_CHOICES]


class ClinicSettingsForm(FlaskForm):
    name = StringField(_l("Clinic name"), validators=[DataRequired(_l("Enter the clinic's name.")), Length(max=120),
                                                      printable])
    # The clinic's own number, often a landline: 电话, where a patient's phone is their mobile (手机号).
    phone = StringField(lazy_pgettext("clinic", "Phone"), validators=[
        Optional(), Length(max=40),
        Regexp(r"^[0-9+()\- ]*$", message=_l("Digits, spaces, +, - and brackets only."))])
    address = TextAreaField(_l("Address"), validators=[Optional(), Length(max=300), printable])
    brand_colour = StringField(_l("Brand colour"), validators=[
        DataRequired(_l("Pick a colour.")), Regexp(r"^#[0-9a-fA-F]{6}$", message=_l("A colour like #0f766e."))])
    currency = SelectField(_l("Currency"), choices=[SelectChoice(c) for c in CURRENCIES])
    # Each language named in itself (English, 简体中文): whoever reads the page can find their own.
    language = SelectField(_l("Default language"), validate_choice=False,
                           choices=[SelectChoice(code, name) for code, name in PORTAL_LANGUAGES.items()])
    timezone = StringField(_l("Time zone"), validators=[DataRequired(_l("Enter a time zone.")), Length(max=64)])
    public_base_url = StringField(_l("Public address of this portal"), validators=[
        Optional(), Length(max=200),
        Regexp(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?$",
               message=_l("A web address like https://refer.yourclinic.com"))])
    # Its size is checked here, not by the request's size limit: that refused the whole form with an error page, and
    # what the manager had typed in the other fields was lost (admin.py lets the form's body be larger).
    logo = FileField(_l("Logo"),
                     description=_l("PNG, JPEG or WebP, at most %(size)s MB and %(pixels)s pixels on a side.",
                                    size=LOGO_MB, pixels=MAX_LOGO_PIXELS),
                     validators=[FileSize(MAX_LOGO_BYTES, message=_l(
                         "The logo file can be at most %(size)s MB: save it with fewer pixels, or as a JPEG or WebP.",
                         size=LOGO_MB))])
    retention_months = SelectField(_l("Erase patients' personal data"), choices=RETENTION_OPTIONS,
                                   coerce=_months_or_never)

    def validate(self, extra_validators=None) -> bool:
        """As WTForms, with the retention field's refusal in our words (WTForms says "Not a valid choice")."""
        valid = super().validate(extra_validators)
        if self.retention_months.errors:
            self.retention_months.errors[:] = [_("Choose one of the periods offered, or never.")]
        return valid

    managers_need_two_step = BooleanField(
        _l("Managers must use two-step login"),
        description=_l("A manager without it is sent to set it up before any other page. Front-desk staff choose "
                       "for themselves. You need two-step login on your own account to turn this on."))

    def validate_timezone(self, field):
        if field.data not in available_timezones():
            raise ValidationError(_("Unknown time zone: use a name like Asia/Shanghai."))

    def validate_language(self, field):
        if field.data not in PORTAL_LANGUAGES:
            raise ValidationError(_("Choose one of the languages offered."))


def parse_reward(form, prefix: str, currency: str) -> dict | None:
    """One side's reward (kind + amount or label) in the clinic's currency, or None with field errors."""
    kind = form[f"{prefix}_reward_kind"].data
    values = {f"{prefix}_reward_kind": kind, f"{prefix}_reward_amount": 0, f"{prefix}_reward_label": ""}
    if kind == RewardKind.MONEY.value:
        field = form[f"{prefix}_reward_amount"]
        try:
            values[f"{prefix}_reward_amount"] = parse_money(field.data, currency)
        except ValueError as problem:
            field.errors.append(str(problem))
            return None
        if values[f"{prefix}_reward_amount"] == 0:
            field.errors.append(_("A reward of nothing is no reward: enter an amount."))
            return None
    else:
        field = form[f"{prefix}_reward_label"]
        label = " ".join((field.data or "").split())
        if not label or len(label) > 80:
            field.errors.append(_("Name the service in 1 to 80 characters."))
            return None
        if has_hidden_characters(label):
            field.errors.append(_("This contains characters that cannot be printed."))
            return None
        values[f"{prefix}_reward_label"] = label
    return values


COVERS = [SelectChoice("both", _l("Personal codes and scratch cards")),
          SelectChoice("personal", _l("Personal codes only")), SelectChoice("cards", _l("Scratch cards only"))]
STAGES = [SelectChoice("redemption", _l("When the code is redeemed")),
          SelectChoice("visit", _l("At the friend's first visit")),
          SelectChoice("payment", _l("At the friend's first payment"))]
FIRST_YEAR, LAST_YEAR = 2000, 2100


def plausible_day(form, field):
    if field.data and not FIRST_YEAR <= field.data.year <= LAST_YEAR:
        raise ValidationError(_("Pick a day between %(first)s and %(last)s.", first=FIRST_YEAR, last=LAST_YEAR))


class CampaignForm(FlaskForm):
    """A campaign's terms. Days are the clinic's calendar days; the last day is included."""

    name = StringField(_l("Campaign name"), validators=[DataRequired(_l("Name the campaign.")), Length(max=120),
                                                        printable])
    starts_at = DateField(_l("First day (optional)"), validators=[Optional(), plausible_day])
    ends_at = DateField(_l("Last day, included (optional)"), validators=[Optional(), plausible_day])
    covers = RadioField(_l("Codes it covers"), choices=COVERS, default="both")
    referrer_reward_kind = RadioField(_l("The patient who refers gets"), choices=REWARD_KINDS,
                                      default=RewardKind.MONEY.value)
    referrer_reward_stage = RadioField(_l("Paid"), choices=STAGES, default="redemption")
    referrer_reward_amount = StringField(_l("Amount off"))
    referrer_reward_label = StringField(_l("Service"))
    friend_reward_kind = RadioField(_l("The friend gets"), choices=REWARD_KINDS, default=RewardKind.MONEY.value)
    friend_reward_stage = RadioField(_l("Paid"), choices=STAGES, default="redemption")
    friend_reward_amount = StringField(_l("Amount off"))
    friend_reward_label = StringField(_l("Service"))
    card_rewards_differ = BooleanField(_l("Gift-pack scratch cards pay different rewards"))
    card_referrer_reward_kind = RadioField(_l("With a card, the patient who gave it gets"), choices=REWARD_KINDS,
                                           default=RewardKind.SERVICE.value)
    card_referrer_reward_amount = StringField(_l("Amount off"))
    card_referrer_reward_label = StringField(_l("Service"))
    card_friend_reward_kind = RadioField(_l("With a card, the friend gets"), choices=REWARD_KINDS,
                                         default=RewardKind.SERVICE.value)
    card_friend_reward_amount = StringField(_l("Amount off"))
    card_friend_reward_label = StringField(_l("Service"))
    voucher_valid_days = IntegerField(_l("Vouchers valid for (days)"), validators=[
        InputRequired(_l("Enter a number of days.")), NumberRange(1, 3650, _l("Between 1 and 3650 days."))])
    cap_referrals_per_year = IntegerField(_l("Rewarded friends per referrer per calendar year (optional)"),
                                          validators=[Optional()])
    cap_value_per_year = StringField(_l("Money rewards per referrer per calendar year, in total (optional)"))
    friend_monthly_quota = IntegerField(_l("Referred friends welcomed per month (optional)"), validators=[Optional()])
    quota_label = StringField(_l("What the places are (optional)"), validators=[Optional(), Length(max=80), printable])

    def fill_from(self, campaign, currency: str) -> None:
        """Show a stored campaign as a manager typed it: money in major units, the clinic's days."""
        for prefix in ("referrer", "friend", "card_referrer", "card_friend"):
            amount = getattr(campaign, f"{prefix}_reward_amount")
            self[f"{prefix}_reward_amount"].data = major_units_text(amount, currency) if amount else ""
        self.card_rewards_differ.data = bool(campaign.card_referrer_reward_kind)
        for prefix in ("card_referrer", "card_friend"):
            self[f"{prefix}_reward_kind"].data = getattr(campaign, f"{prefix}_reward_kind") or RewardKind.SERVICE.value
        self.starts_at.data = clinic_day_of(campaign.starts_at) if campaign.starts_at else None
        self.ends_at.data = last_day_before(campaign.ends_at) if campaign.ends_at else None
        cap = campaign.cap_value_per_year
        self.cap_value_per_year.data = major_units_text(cap, currency) if cap is not None else ""

    def campaign_values(self, currency: str) -> dict | None:
        """Validated values for the service, or None with errors on the fields.

        Days become the clinic's local midnights in naive UTC; the end is stored exclusive,
        at the midnight after the last day, so the last day runs to its end.
        """
        valid = self.validate()
        rewards = [parse_reward(self, "referrer", currency), parse_reward(self, "friend", currency)]
        if self.card_rewards_differ.data:
            rewards += [parse_reward(self, "card_referrer", currency), parse_reward(self, "card_friend", currency)]
        else:
            rewards.append({f"card_{side}_reward_{part}": None for side in ("referrer", "friend")
                            for part in ("kind", "amount", "label")})
        value_cap = self._value_cap(currency)
        if not valid or None in rewards or value_cap is False:
            return None
        values = {"name": " ".join(self.name.data.split()), "voucher_valid_days": self.voucher_valid_days.data,
                  "starts_at": _day_start(self.starts_at.data),
                  "ends_at": _day_start(self.ends_at.data + timedelta(days=1)) if self.ends_at.data else None,
                  "covers": self.covers.data, "referrer_reward_stage": self.referrer_reward_stage.data,
                  "friend_reward_stage": self.friend_reward_stage.data,
                  "cap_referrals_per_year": self.cap_referrals_per_year.data, "cap_value_per_year": value_cap,
                  "friend_monthly_quota": self.friend_monthly_quota.data,
                  "quota_label": " ".join((self.quota_label.data or "").split())}
        for reward in rewards:
            values.update(reward)
        return values

    def _value_cap(self, currency: str) -> int | None | bool:
        """The yearly value cap in minor units, None for no cap, False after an error on the field."""
        if not (self.cap_value_per_year.data or "").strip():
            return None
        try:
            return parse_money(self.cap_value_per_year.data, currency)
        except ValueError as problem:
            self.cap_value_per_year.errors.append(str(problem))
            return False

    def add_error(self, field: str | None, message: str) -> None:
        (self[field] if field in self else self.name).errors.append(message)


def _day_start(day: date | None):
    return start_of_clinic_day(day) if day else None


class VoidVoucherForm(FlaskForm):
    reason = StringField(_l("Reason"), validators=[DataRequired(_l("Say why the voucher is voided.")), Length(3, 200)])


class PaymentForm(FlaskForm):
    """The friend's first payment; the amount is optional."""

    amount = StringField(_l("Amount paid (optional)"))

    def amount_minor(self, currency: str) -> int | None | bool:
        """The amount in minor units, None when left blank, False after an error on the field."""
        if not (self.amount.data or "").strip():
            return None
        try:
            return parse_money(self.amount.data, currency)
        except ValueError as problem:
            self.amount.errors = [str(problem)]
            return False


class ReasonForm(FlaskForm):
    """A manager's reason (reversing a referral, deciding a review); the service checks it."""

    reason = StringField(_l("Reason"))


class TierForm(FlaskForm):
    """A tier's fields as typed; :class:`clinic.services.tiers.TierRules` validates them."""

    name = StringField(_l("Tier name"))
    min_paid_referrals = StringField(_l("Paid friends needed"))
    window_months = StringField(_l("Counted over the last (months)"), default="12")
    privileges = TextAreaField(_l("Privileges (one per line)"))
    rules = None

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        try:
            self.rules = TierRules.from_form(name=self.name.data, min_paid_referrals=self.min_paid_referrals.data,
                                             window_months=self.window_months.data, privileges=self.privileges.data)
        except FieldErrors as problems:
            self.add_errors(problems)
            return False
        return valid

    def add_errors(self, problems: FieldErrors) -> None:
        for field, message in problems.errors.items():
            self[field].errors.append(message)


class NotificationPreferencesForm(FlaskForm):
    """How a patient wants to hear about rewards, and whether they agreed; the service checks the values."""

    preferred_channel = SelectField(_l("Messages about rewards"), choices=CHANNELS, validate_choice=False,
                                    validators=[InputRequired(_l("Pick how the patient wants to be told."))])
    preferred_language = SelectField(_l("Language of the messages"), choices=LANGUAGES, validate_choice=False,
                                     validators=[InputRequired(_l("Pick the language of the messages."))])
    notification_consent = BooleanField(_l("The patient agrees to receive these messages"))


class WebhookEndpointForm(FlaskForm):
    """A receiver to add; :class:`clinic.services.webhooks.EndpointRules` checks the address and the events."""

    url = StringField(_l("Receiver URL"))
    description = StringField(_l("Description (optional)"))
    events = SelectMultipleField(_l("Events to send"), validate_choice=False,
                                 choices=[SelectChoice(name, label) for name, label in EVENT_TYPES.items()])
    rules: EndpointRules | None = None

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        try:
            self.rules = EndpointRules.from_form(url=self.url.data, events=self.events.data,
                                                 description=self.description.data)
        except FieldErrors as problems:
            for field, message in problems.errors.items():
                self[field].errors.append(message)
            return False
        return valid


class ErasureForm(FlaskForm):
    """A manager's confirmation before a patient's personal data is erased; the reasons are a fixed list."""

    reason = RadioField(_l("Why"), choices=[SelectChoice(key, label) for key, label in ERASURE_REASONS.items()],
                        validators=[InputRequired(_l("Choose why the data is erased."))])
    confirm = BooleanField(_l("I understand that this cannot be undone."),
                           validators=[DataRequired(_l("Tick the box to confirm: erasing cannot be undone."))])


class RetentionForm(FlaskForm):
    """A manager's confirmation before the retention rule erases every patient due."""

    confirm = BooleanField(_l("I have read the list: erase these patients' personal data. This cannot be undone."),
                           validators=[DataRequired(_l("Tick the box to confirm: erasing cannot be undone."))])


class InvitationAudienceForm(FlaskForm):
    """Who a bulk send of invitations is for (read from the query string: choosing changes nothing)."""

    class Meta:
        csrf = False

    enrolled_within_days = IntegerField(_l("Only patients enrolled within the last … days (optional)"), validators=[
        Optional(), NumberRange(1, 3650, _l("Between 1 and 3650 days."))])
    not_within_days = IntegerField(_l("Not sent their code within the last … days"), default=90, validators=[
        Optional(), NumberRange(1, 3650, _l("Between 1 and 3650 days."))])  # empty: the default, 90

    def audience(self) -> Audience:
        return Audience(self.not_within_days.data or DEFAULT_NOT_WITHIN_DAYS, self.enrolled_within_days.data)


class SendInvitationsForm(InvitationAudienceForm):
    """The same audience, posted with the manager's confirmation."""

    class Meta:
        csrf = FlaskForm.Meta.csrf  # as every posted form (the audience form turns it off)

    confirm = BooleanField(_l("I have checked the audience and the message: send it."),
                           validators=[DataRequired(_l("Tick the box to confirm: messages cannot be called back."))])


class CorrectDetailsForm(PatientNameAndContactForm):
    """A patient's name, display name, phone and record number corrected; checked as at enrolment.

    ``seen`` carries the fingerprint of the details the form was filled with
    (:func:`clinic.services.patients.details_fingerprint`): a change saved by someone else since is refused,
    not overwritten.
    """

    seen = HiddenField()
    # For staff who see phones masked: the number an empty phone field keeps (None: the field shows the number).
    kept_phone: str | None = None

    def keep_phone_masked(self, patient) -> None:
        """Front-desk staff see phones masked (DESIGN.md), here too, or walking ids would collect every number: the
        phone field starts empty and, left empty, keeps the patient's number; a number typed replaces it."""
        self.kept_phone = patient.phone or ""

    def detail_values(self) -> dict:
        values = super().detail_values()
        if self.kept_phone is not None and not (values["phone"] or "").strip():
            values["phone"] = self.kept_phone
        return values

    def fill_from(self, patient, fingerprint: str) -> None:
        """Show the patient's details as they are now (the phone left empty when it is kept masked), and remember
        them as the ones seen."""
        for name in CORRECTABLE_DETAILS:
            self[name].data = getattr(patient, name) or ""
        if self.kept_phone is not None:
            self.keep_phone_masked(patient)
            self.phone.data = ""
        self.seen.data = fingerprint

    def show_current(self, patient, fingerprint: str) -> dict[str, str]:
        """After someone else changed the details: show them as they are now (fill_from), and return what this
        form asked for instead, field by field, where that differs from them ("—" for nothing). A masked phone
        left empty asked for nothing: the number it kept is not shown."""
        asked = {name: getattr(self.details, name) for name in CORRECTABLE_DETAILS}
        if self.kept_phone is not None and not (self.phone.data or "").strip():
            del asked["phone"]
        self.fill_from(patient, fingerprint)
        return {name: value or "—" for name, value in asked.items() if value != getattr(patient, name)}


STAFF_ROLES = [SelectChoice("front_desk", _l("Front desk")), SelectChoice("manager", _l("Manager"))]


class NewStaffForm(FlaskForm):
    """A manager adds a member of staff; the service checks the address and the role, and makes the password."""

    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter their email address.")),
                                                Length(max=254, message=_l("An email address has at most 254 characters."))])
    role = SelectField(_l("Role"), choices=STAFF_ROLES, validate_choice=False)


class StaffRoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=STAFF_ROLES, validate_choice=False)


class PasswordChangeForm(FlaskForm):
    """A staff member's own new password; the service checks the current one and the rules (one message a field)."""

    current_password = PasswordField(_l("Current password"), validators=[Length(max=200)])
    new_password = PasswordField(_l("New password"), validators=[Length(max=200)])
    repeat_password = PasswordField(_l("New password again"), validators=[Length(max=200)])
