"""Enrolling patients, finding them, correcting their details, and their private progress links."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import phonenumbers
from babel.core import get_global
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from clinic.extensions import db
from clinic.models import AuditEvent, Patient, Referral, Voucher
from clinic.models.patient import NOTIFICATION_CHANNELS, NOTIFICATION_LANGUAGES
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.clinic_settings import current_clinic
from clinic.services.codes import InvalidCode, generate_personal_code, normalize_code, parse_code, CodeKind
from clinic.services.errors import Refused
from clinic.services.settings_snapshot import STAMP_COLUMN, last_known_settings, settings_read_with
from clinic.services.text import clean_text, without_hidden_characters
from clinic.services.transaction import Actor, atomic, insert_row_unless_taken

_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
MIN_PHONE_DIGITS = 6
MAX_PHONE_DIGITS = 15  # E.164
NAME_MAX = 120
DISPLAY_NAME_MAX = 60
EXTERNAL_ID_MAX = 64


THE_CLINIC_S = "the clinic's"  # normalize_phone's default region


def normalize_phone(raw: str | None, region: str | None = THE_CLINIC_S) -> str | None:
    """One spelling per phone number, so that the desk's "same phone" checks cannot be passed by writing it another
    way; ``None`` when left empty.

    ``+86 139 1112 7378``, ``0086 13911127378`` and ``139-1112-7378`` are one number to a clinic in China: a
    number of the clinic's own country is kept as dialled there (``13911127378``, ``01012345678``), any other
    as ``+`` and its international digits (``+447700900123``). The country is the clinic's time zone's
    (``region``: another country's code, or None for none). What `phonenumbers` (Google's libphonenumber
    data) cannot read as a possible number is kept as typed, digits only with a leading ``+``: a clinic
    knows its patients' numbers better than a table does.

    Raises ValueError with a message for people when it cannot be a phone number.
    """
    text = _PHONE_PUNCTUATION.sub("", (raw or "").strip())
    if not text:
        return None
    plus = text.startswith("+")
    digits = text[1:] if plus else text
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(_("A phone number has only digits, spaces, dashes and an optional leading +."))
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        raise ValueError(_("A phone number has %(min)s to %(max)s digits.", min=MIN_PHONE_DIGITS, max=MAX_PHONE_DIGITS))
    typed = ("+" if plus else "") + digits
    home = clinic_phone_region() if region == THE_CLINIC_S else region
    try:
        number = phonenumbers.parse(typed, home)
    except phonenumbers.NumberParseException:
        return typed
    if not phonenumbers.is_possible_number(number):
        return typed
    if home and number.country_code == phonenumbers.country_code_for_region(home):
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(character for character in national if character.isdigit())
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clinic_phone_region() -> str | None:
    """The country (ISO 3166 code) whose numbers the clinic writes without a country code: its time zone's.

    From the settings as last checked (settings_snapshot.last_known_settings): a clinic does not change
    countries, and checking would add a statement to every redemption."""
    return phone_region_of(last_known_settings().clinic.timezone)


@lru_cache(maxsize=64)
def phone_region_of(time_zone: str) -> str | None:
    """``Asia/Shanghai`` → ``CN``; ``None`` for zones of no one country (``UTC``)."""
    return get_global("zone_territories").get(time_zone)


def check_channel(raw: str | None) -> str:
    """How the patient wants to be told: ``none`` (the default), ``sms`` or ``wechat``."""
    channel = (raw or "none").strip()
    if channel not in NOTIFICATION_CHANNELS:
        raise ValueError(_("Pick SMS, WeChat or no messages."))
    return channel


def default_message_language() -> str:
    """The language of a patient's messages when nobody chose one: the clinic's own, when messages can be written in it.

    A friend registered at the desk (whose form asks no language) or a patient imported without one reads the
    clinic's language far more often than any other; they were all set to Chinese before, so an English-speaking
    clinic's reminders would have gone out in Chinese once someone recorded their consent.
    """
    language = current_clinic().language
    return language if language in NOTIFICATION_LANGUAGES else NOTIFICATION_LANGUAGES[0]


def check_language(raw: str | None) -> str:
    language = (raw or "").strip() or default_message_language()
    if language not in NOTIFICATION_LANGUAGES:
        raise ValueError(_("Pick the language of the patient's messages."))
    return language


def consent_problem(consent: bool, channel: str, phone: str | None) -> str | None:
    """Why a notification consent cannot be recorded like this, or None (no consent is always fine)."""
    if not consent:
        return None
    if channel == "none":
        return _("Pick how the patient wants to be told (SMS or WeChat) to record their consent.")
    if not phone:
        return _("Messages go to the patient's phone: add their phone number to record their consent.")
    return None


@dataclass(frozen=True)
class PatientDetails:
    """Validated details of a person to enrol (or of a friend at the desk)."""

    full_name: str
    display_name: str = ""
    phone: str | None = None
    external_id: str | None = None
    name_on_posters: bool = False
    # Messages about rewards: only with the patient's consent, by the channel they chose.
    preferred_channel: str = "none"
    preferred_language: str = NOTIFICATION_LANGUAGES[0]
    notification_consent: bool = False

    @classmethod
    def from_form(cls, *, full_name, display_name=None, phone=None, external_id=None,
                  name_on_posters=False, preferred_channel=None, preferred_language=None,
                  notification_consent=False) -> "PatientDetails":
        """Validate every field; raise :class:`FieldErrors` listing each problem."""
        # The labels are translated only if a message needs them (lazily): most forms are valid.
        checks = {
            "full_name": lambda: clean_text(full_name, max_length=NAME_MAX, label=_l("Full name"), required=True),
            "display_name": lambda: clean_text(display_name, max_length=DISPLAY_NAME_MAX,
                                               label=_l("Display name"), required=False),
            "phone": lambda: normalize_phone(phone),
            "external_id": lambda: clean_text(external_id, max_length=EXTERNAL_ID_MAX,
                                              label=_l("Record number"), required=False) or None,
            "preferred_channel": lambda: check_channel(preferred_channel),
            "preferred_language": lambda: check_language(preferred_language),
        }
        values = check_fields(checks)
        problem = consent_problem(bool(notification_consent), values["preferred_channel"], values["phone"])
        if problem:
            raise FieldErrors({"notification_consent": problem})
        return cls(**values, name_on_posters=bool(name_on_posters) and bool(values["display_name"]),
                   notification_consent=bool(notification_consent))


def check_fields(checks: dict) -> dict:
    """Run every field's check (a callable returning the clean value or raising ValueError).

    Returns the clean values, or raises :class:`FieldErrors` naming every field that failed, so a
    form shows all its problems at once.
    """
    values, errors = {}, {}
    for field, check in checks.items():
        try:
            values[field] = check()
        except ValueError as problem:
            errors[field] = str(problem)
    if errors:
        raise FieldErrors(errors)
    return values


class FieldErrors(Refused):
    """Several fields are wrong at once; ``errors`` maps each field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("validation_error", _("Please correct the marked fields."))
        self.errors = errors


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_progress_token() -> tuple[str, str]:
    """A fresh progress token (192 random bits) and the hash we store."""
    token = secrets.token_urlsafe(24)
    return token, hash_token(token)


# Built once: building a statement costs SQLAlchemy about as much as running it.
# (by phone, by record number) -> the query for a patient holding either
_EXISTING = {
    (True, False): select(Patient).where(Patient.phone == bindparam("phone")).limit(1),
    (False, True): select(Patient).where(Patient.external_id == bindparam("external_id")).limit(1),
    (True, True): select(Patient).where(or_(Patient.phone == bindparam("phone"),
                                            Patient.external_id == bindparam("external_id"))).limit(1),
}


def find_existing(details: PatientDetails) -> Patient | None:
    """The patient who already has this phone or record number, if any."""
    by = (bool(details.phone), bool(details.external_id))
    if by == (False, False):
        return None
    return db.session.scalar(_EXISTING[by], {"phone": details.phone, "external_id": details.external_id})


def existing_patient_refusal(existing: Patient, details: PatientDetails) -> Refused:
    field = "phone" if details.phone and existing.phone == details.phone else "external_id"
    message = _("A patient with this phone number is already registered.") if field == "phone" \
        else _("A patient with this record number is already registered.")
    return Refused("existing_patient", message, field=field, status=409)


# Draws of a new personal code (and progress token) before giving up: a collision is already rare.
NEW_CODE_ATTEMPTS = 10


def add_patient(details: PatientDetails, actor: Actor, *, referred_by: Patient | None = None) -> tuple[Patient, str]:
    """Create the patient row inside the caller's transaction; returns it with its progress token.

    One INSERT … ON CONFLICT DO NOTHING checks every unique column. When it writes nothing, a patient already
    holding the phone or record number is refused (``existing_patient``, raised here); otherwise the freshly
    drawn personal code or progress token was taken, and new ones are drawn. A refusal is therefore not a failed
    statement: PostgreSQL logs no unique-violation error for a routine "already registered" at the desk, and the
    transaction is not aborted by it. A unique column added to ``patients`` later must be looked up here too
    (like ``find_existing``): a conflict on it would otherwise be taken for a drawn code and end, after ten draws,
    in a RuntimeError.
    """
    for _attempt in range(NEW_CODE_ATTEMPTS):
        token, token_hash = new_progress_token()
        patient = insert_row_unless_taken(Patient(
            full_name=details.full_name,
            display_name=details.display_name,
            phone=details.phone,
            external_id=details.external_id,
            name_on_posters=details.name_on_posters,
            preferred_channel=details.preferred_channel,
            preferred_language=details.preferred_language,
            notification_consent=details.notification_consent,
            notification_consent_at=utcnow() if details.notification_consent else None,
            personal_code=generate_personal_code(),
            progress_token_hash=token_hash,
            referred_by_id=referred_by.id if referred_by else None,
            enrolled_by_id=actor.staff_id,
            branch_id=actor.branch_id,
        ))
        if patient is not None:
            set_committed_value(patient, "referred_by", referred_by)
            return patient, token
        existing = find_existing(details)
        if existing is not None:
            raise existing_patient_refusal(existing, details)
    raise RuntimeError(f"no free personal code in {NEW_CODE_ATTEMPTS} draws")


def enrol_patient(details: PatientDetails, actor: Actor) -> tuple[Patient, str]:
    """Enrol a patient with a personal code and a private progress link (token returned once).

    A phone or record number already registered, even by another desk a moment ago, is refused by add_patient.
    A patient who agreed to messages is sent their code at once (invitation_messages.invite_new_patient), in this
    transaction: a failed enrolment sends nothing.
    """
    # invitation_messages reads this module (through notifications): imported here, once both are loaded.
    from clinic.services.invitation_messages import invite_new_patient

    with atomic():
        patient, token = add_patient(details, actor)
        audit.record("patient.enrolled", actor, patient_id=patient.id,
                     notification_consent=details.preferred_channel if details.notification_consent else None)
        invite_new_patient(patient, actor, utcnow())
    return patient, token


def patient_to_change(patient_id: int) -> Patient:
    """The patient an action is about to change, read FOR SHARE (PostgreSQL) in the current transaction.

    Refused when unknown (404) or erased (409): an erased patient gets no new link, consent, card or name, and the
    lock makes an erasure and such an action at the same moment come one after the other.
    """
    patient = db.session.get(Patient, patient_id, with_for_update={"read": True}, populate_existing=True)
    if patient is None:
        raise Refused("not_found", _("No such patient."), status=404)
    if patient.erased_at is not None:
        raise Refused("patient_erased", _("This patient's personal data was erased: nothing can be changed."),
                      status=409)
    return patient


def rotate_progress_link(patient_id: int, actor: Actor) -> str:
    """Issue a new progress token; the old link stops working at once."""
    token, token_hash = new_progress_token()
    with atomic():
        patient = patient_to_change(patient_id)
        patient.progress_token_hash = token_hash
        patient.progress_link_issued_at = utcnow()
        audit.record("patient.progress_link_rotated", actor, patient_id=patient.id)
    return token


def set_poster_consent(patient_id: int, consent: bool, actor: Actor) -> Patient:
    """Record whether the patient agreed to have their display name printed on posters."""
    with atomic():
        patient = patient_to_change(patient_id)
        record_poster_consent(patient, consent, actor)
    return patient


def record_poster_consent(patient: Patient, consent: bool, actor: Actor) -> None:
    """The poster consent, changed and audited in the current transaction only if it differs.

    Apart from :func:`set_poster_consent` so that the patient's own choices (clinic/services/consents.py)
    save it in one transaction with their other consents.
    """
    if consent and not patient.display_name:
        raise Refused("validation_error", _("Add a display name first: it is the name a poster would show."),
                      field="name_on_posters")
    if patient.name_on_posters != consent:
        patient.name_on_posters = consent
        audit.record("patient.poster_consent", actor, patient_id=patient.id, consent=consent)


# Built once: the public pages look a patient up on every request, and building a statement
# costs SQLAlchemy nearly as much as running it.
_BY_PROGRESS_TOKEN_HASH = select(Patient).where(Patient.progress_token_hash == bindparam("token_hash"))
# With the settings stamp (settings_snapshot.settings_read_with): a redemption asks next for the campaign in force.
_BY_PERSONAL_CODE = select(Patient, STAMP_COLUMN).where(Patient.personal_code == bindparam("code"))


def patient_by_progress_token(token: str) -> Patient | None:
    if not token or len(token) > 128:
        return None
    return db.session.scalar(_BY_PROGRESS_TOKEN_HASH, {"token_hash": hash_token(token)})


def patient_by_personal_code(code: str) -> Patient | None:
    """The patient holding this personal code, read in the session's transaction.

    The settings are checked by the same statement (the stamp as a column): a redemption looks the
    referrer up and then asks for the campaign in force, and a statement fewer is a round trip fewer
    on PostgreSQL, inside the write transaction.
    """
    row = db.session.execute(_BY_PERSONAL_CODE, {"code": code}).first()
    if row is None:
        return None
    patient, stamp = row
    settings_read_with(stamp, db.session.connection())
    return patient


SEARCH_LIMIT = 50
TIMELINE_LIMIT = 100


def search_patients(query: str | None) -> list[Patient]:
    """Find patients by name, phone digits or personal code; newest first."""
    text = " ".join(without_hidden_characters(query or "").split())[:100]
    statement = select(Patient).order_by(Patient.id.desc()).limit(SEARCH_LIMIT)
    if not text:
        return list(db.session.scalars(statement))
    like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    conditions = [Patient.full_name.ilike(like, escape="\\"), Patient.display_name.ilike(like, escape="\\"),
                  Patient.external_id == text]
    digits = _PHONE_PUNCTUATION.sub("", text).lstrip("+")
    if digits.isascii() and digits.isdigit() and len(digits) >= 3:
        conditions.append(Patient.phone.contains(digits, autoescape=True))
        try:  # "+86 139 1112 7378" finds the patient stored as 13911127378
            conditions.append(Patient.phone == normalize_phone(text))
        except ValueError:
            pass
    try:
        parsed = parse_code(text)
        if parsed.kind is CodeKind.PERSONAL:
            conditions.append(Patient.personal_code == parsed.code)
    except InvalidCode:
        code_like = normalize_code(text)
        if 3 <= len(code_like) <= 8 and code_like.isalnum():
            conditions.append(Patient.personal_code.startswith(code_like, autoescape=True))
    return list(db.session.scalars(statement.where(or_(*conditions))))


@dataclass
class PatientTimeline:
    patient: Patient
    referred_by: Referral | None
    referred: list[Referral]
    vouchers: list[Voucher]
    events: list[AuditEvent]


def patient_timeline(patient_id: int) -> PatientTimeline | None:
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        return None
    return PatientTimeline(
        patient=patient,
        referred_by=db.session.scalar(select(Referral).where(Referral.friend_id == patient.id)),
        referred=list(db.session.scalars(
            select(Referral).where(Referral.referrer_id == patient.id).order_by(Referral.id.desc()))),
        vouchers=list(db.session.scalars(
            select(Voucher).where(Voucher.patient_id == patient.id).order_by(Voucher.id.desc()))),
        events=list(db.session.scalars(
            select(AuditEvent).where(or_(AuditEvent.patient_id == patient.id, AuditEvent.referral_id.in_(
                select(Referral.id).where(or_(Referral.referrer_id == patient.id, Referral.friend_id == patient.id)))))
            .order_by(AuditEvent.id.desc()).limit(TIMELINE_LIMIT))),
    )


def patients_enrolled_between(start: datetime, end: datetime, limit: int) -> list[Patient]:
    """Patients enrolled from ``start`` up to, not including, ``end`` (naive UTC), newest first; none erased."""
    return list(db.session.scalars(
        select(Patient).where(Patient.enrolled_at >= start, Patient.enrolled_at < end, Patient.erased_at.is_(None))
        .order_by(Patient.enrolled_at.desc(), Patient.id.desc()).limit(limit)))


# What a correction may change: who the patient is and how to reach them. Their personal code, progress link,
# referrals and consents stay as they are.
CORRECTABLE_DETAILS = ("full_name", "display_name", "phone", "external_id")


def details_fingerprint(patient: Patient) -> str:
    """A short digest of the patient's correctable details, carried by the correction form (see correct_details).

    Only a digest of values that same form shows: it tells whether they changed, and nothing more.
    """
    values = json.dumps([getattr(patient, name) for name in CORRECTABLE_DETAILS], ensure_ascii=False)
    return hashlib.sha256(values.encode()).hexdigest()[:32]


def correct_details(patient_id: int, details: PatientDetails, actor: Actor, *, seen: str | None) -> list[str]:
    """Correct a patient's name, display name, phone and record number (a typo at the desk; their right to have
    their data corrected), all or nothing. Returns the fields changed, in CORRECTABLE_DETAILS order; none when the
    details were already these, and then nothing is written.

    ``seen`` is :func:`details_fingerprint` of the details the member of staff was shown: if someone else corrected
    them since, the correction is refused (``changed_meanwhile``, 409) rather than written over theirs. The
    patient's row is locked first, so of two corrections at the same moment the second sees the first.

    A phone or record number another patient holds is refused (``existing_patient``, 409, naming the field), also
    when that patient registered it a moment ago: the unique constraints decide. The phone cannot be removed while
    the patient agrees to messages, which go to that phone: staff record the withdrawal first, as the patient's
    own decision (notifications.set_preferences), rather than a correction withdrawing it unasked. Messages waiting
    to be sent to the old number are cancelled, as the sender would (notifications.withheld_because). A new
    display name ends the patient's agreement to have their name printed on posters: they agreed to the old one.

    The audit event names the fields changed, never their values: the log is kept for ever and must not become
    a second copy of the personal data a correction replaces.
    """
    # notifications reads this module's checks: imported here, once both are loaded.
    from clinic.services.notifications import cancel_withheld_messages

    wanted = {name: getattr(details, name) for name in CORRECTABLE_DETAILS}
    changed: list[str] = []
    try:
        with atomic():
            patient = db.session.scalar(select(Patient).where(Patient.id == patient_id).with_for_update()
                                        .execution_options(populate_existing=True))
            if patient is None:
                raise Refused("not_found", _("No such patient."), status=404)
            if patient.erased_at is not None:
                raise Refused("patient_erased", _("This patient's personal data was erased: nothing can be "
                                                  "changed."), status=409)
            changed = [name for name in CORRECTABLE_DETAILS if getattr(patient, name) != wanted[name]]
            if not changed:
                return []
            if seen != details_fingerprint(patient):
                raise Refused("changed_meanwhile", _("These details were changed by someone else since you opened "
                                                     "the form. Here they are as they are now: check them and "
                                                     "correct them again if needed."), status=409)
            removes_phone = "phone" in changed and details.phone is None
            if removes_phone and consent_problem(patient.notification_consent, patient.preferred_channel, None):
                raise FieldErrors({"phone": _("The patient agreed to messages on this phone. Keep a number, or "
                                              "first record on the patient page that they want no messages.")})
            _refuse_contact_held_by_another(patient.id, details, changed)
            for name in changed:
                setattr(patient, name, wanted[name])
            if "display_name" in changed and patient.name_on_posters:
                patient.name_on_posters = False
                changed.append("name_on_posters")
            cancelled = cancel_withheld_messages(patient) if "phone" in changed else []
            audit.record("patient.details_corrected", actor, patient_id=patient.id, fields=changed,
                         cancelled_messages=cancelled or None)
    except IntegrityError:  # another patient was given this phone or record number a moment ago
        _refuse_contact_held_by_another(patient_id, details, changed)
        raise
    return changed


def _refuse_contact_held_by_another(patient_id: int, details: PatientDetails, changed: list[str]) -> None:
    """Refuse a changed phone or record number that another patient holds (existing_patient_refusal)."""
    wanted = [getattr(Patient, name) == getattr(details, name) for name in ("phone", "external_id")
              if name in changed and getattr(details, name) is not None]
    if not wanted:
        return
    holder = db.session.scalar(select(Patient).where(Patient.id != patient_id, or_(*wanted)).limit(1))
    if holder is not None:
        raise existing_patient_refusal(holder, details)
