"""WTForms forms; patient and money fields reuse the services' own validation."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp, ValidationError
from zoneinfo import available_timezones

from clinic.models import RewardKind
from clinic.services.money import parse_money
from clinic.services.patients import FieldErrors, PatientDetails
from clinic.services.text import CONTROL_CHARACTERS

def printable(form, field):
    """Refuse control, zero-width and direction-override characters in free text."""
    if field.data and CONTROL_CHARACTERS.search(field.data.replace("\r\n", " ").replace("\n", " ")):
        raise ValidationError("This contains characters that cannot be printed.")


REWARD_KINDS = [SelectChoice(RewardKind.MONEY.value, "Money off"), SelectChoice(RewardKind.SERVICE.value, "A named service")]
CURRENCIES = ("CNY", "HKD", "TWD", "SGD", "MYR", "USD", "EUR", "GBP", "JPY", "KRW", "AUD", "CAD")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter your email."), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password."), Length(max=200)])


class PatientDetailsForm(FlaskForm):
    """A person's details: enrolment, and the friend's details at the desk."""

    full_name = StringField("Full name")
    display_name = StringField("Name on posters (optional)")
    phone = StringField("Phone (optional)")
    external_id = StringField("Clinic record number (optional)")
    name_on_posters = BooleanField("The patient agrees to have this name printed on their posters")
    details: PatientDetails | None = None

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        try:
            self.details = PatientDetails.from_form(
                full_name=self.full_name.data, display_name=self.display_name.data,
                phone=self.phone.data, external_id=self.external_id.data,
                name_on_posters=self.name_on_posters.data)
        except FieldErrors as problems:
            for field, message in problems.errors.items():
                self[field].errors.append(message)
            return False
        return valid

    def add_error(self, field: str | None, message: str) -> None:
        target = self[field] if field in self else self.full_name
        target.errors.append(message)


class ClinicSettingsForm(FlaskForm):
    name = StringField("Clinic name", validators=[DataRequired("Enter the clinic's name."), Length(max=120), printable])
    phone = StringField("Phone", validators=[Optional(), Length(max=40),
                                             Regexp(r"^[0-9+()\- ]*$", message="Digits, spaces, +, - and brackets only.")])
    address = TextAreaField("Address", validators=[Optional(), Length(max=300), printable])
    brand_colour = StringField("Brand colour", validators=[
        DataRequired("Pick a colour."), Regexp(r"^#[0-9a-fA-F]{6}$", message="A colour like #0f766e.")])
    currency = SelectField("Currency", choices=[SelectChoice(c) for c in CURRENCIES])
    timezone = StringField("Time zone", validators=[DataRequired("Enter a time zone."), Length(max=64)])
    public_base_url = StringField("Public address of this portal", validators=[
        Optional(), Length(max=200),
        Regexp(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?$",
               message="A web address like https://refer.yourclinic.com")])
    logo = FileField("Logo (PNG, JPEG or WebP, up to 1 MB)")

    def validate_timezone(self, field):
        if field.data not in available_timezones():
            raise ValidationError("Unknown time zone: use a name like Asia/Shanghai.")


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
            field.errors.append("A reward of nothing is no reward: enter an amount.")
            return None
    else:
        field = form[f"{prefix}_reward_label"]
        label = " ".join((field.data or "").split())
        if not label or len(label) > 80:
            field.errors.append("Name the service in 1 to 80 characters.")
            return None
        if CONTROL_CHARACTERS.search(label):
            field.errors.append("This contains characters that cannot be printed.")
            return None
        values[f"{prefix}_reward_label"] = label
    return values


class CampaignForm(FlaskForm):
    name = StringField("Campaign name", validators=[DataRequired("Name the campaign."), Length(max=120), printable])
    referrer_reward_kind = RadioField("The patient who refers gets", choices=REWARD_KINDS)
    referrer_reward_amount = StringField("Amount off")
    referrer_reward_label = StringField("Service")
    friend_reward_kind = RadioField("The friend gets", choices=REWARD_KINDS)
    friend_reward_amount = StringField("Amount off")
    friend_reward_label = StringField("Service")
    card_rewards_differ = BooleanField("Gift-pack scratch cards pay different rewards")
    card_referrer_reward_kind = RadioField("With a card, the patient who gave it gets", choices=REWARD_KINDS,
                                           default=RewardKind.SERVICE.value)
    card_referrer_reward_amount = StringField("Amount off")
    card_referrer_reward_label = StringField("Service")
    card_friend_reward_kind = RadioField("With a card, the friend gets", choices=REWARD_KINDS,
                                         default=RewardKind.SERVICE.value)
    card_friend_reward_amount = StringField("Amount off")
    card_friend_reward_label = StringField("Service")
    voucher_valid_days = IntegerField("Vouchers valid for (days)", validators=[
        InputRequired("Enter a number of days."), NumberRange(1, 3650, "Between 1 and 3650 days.")])

    def campaign_values(self, currency: str) -> dict | None:
        """Validated values for the service, or None with errors on the fields."""
        valid = self.validate()
        rewards = [parse_reward(self, "referrer", currency), parse_reward(self, "friend", currency)]
        if self.card_rewards_differ.data:
            rewards += [parse_reward(self, "card_referrer", currency), parse_reward(self, "card_friend", currency)]
        else:
            rewards.append({f"card_{side}_reward_{part}": None for side in ("referrer", "friend")
                            for part in ("kind", "amount", "label")})
        if not valid or None in rewards:
            return None
        values = {"name": " ".join(self.name.data.split()), "voucher_valid_days": self.voucher_valid_days.data}
        for reward in rewards:
            values.update(reward)
        return values


class VoidVoucherForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired("Say why the voucher is voided."), Length(3, 200)])
