"""Two-step login: after the password, a 6-digit code from an authenticator app (TOTP, RFC 6238).

Managers change rewards, void vouchers and export patients' phone numbers; desk staff pay vouchers. A
password alone (phished, reused, written on the desk PC) is the weakest link, so each staff member can
turn on a second step: a code their phone's authenticator app makes every 30 seconds from a secret shared
once, through a QR code. A lost phone is covered by one-time recovery codes, by a manager's reset on the
staff page, and for the last manager by ``flask --app wsgi reset-two-step EMAIL``.

A code is accepted in the 30-second step it belongs to and one step either side (clocks drift), and only
once: the step of the last accepted code is kept, and a conditional UPDATE refuses any code at or before it,
so one code seen over a shoulder cannot be replayed, even by two logins at the same moment.

The secrets are stored sealed with the app's key (clinic/services/two_step_secrets.py); a secret that cannot be
opened (the key changed) refuses its account's login with "ask a manager to reset it".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from flask_babel import gettext as _
from sqlalchemy import delete, func, or_, select, update

from clinic.extensions import db
from clinic.models import RecoveryCode, Staff
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services import staff as staff_service
from clinic.services.codes import ALPHABET
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic
from clinic.services.two_step_secrets import SEALED_PREFIX, is_sealed, open_secret, seal

CODE_DIGITS = 6
VALID_WINDOW = 1  # steps either side of now: a phone's clock a little off still works
RECOVERY_CODE_COUNT = 8
RECOVERY_CODE_LENGTH = 10  # Crockford symbols, shown XXXXX-XXXXX: 50 random bits, and each works once
MAX_CODE_INPUT = 40  # longer than any code with its spaces and dashes


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=CODE_DIGITS)


def provisioning_uri(email: str, secret: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return _totp(secret).provisioning_uri(name=email, issuer_name=issuer or None)


def _digits(code: str) -> str | None:
    """The six digits typed, with any spaces or dashes (apps show ``123 456``); None if it is not such a code."""
    digits = "".join(c for c in code if c not in " -\u00a0\t")
    return digits if len(digits) == CODE_DIGITS and digits.isascii() and digits.isdigit() else None


def matching_step(secret: str | None, code: str, for_time: datetime | None = None) -> int | None:
    """The time step whose code this is, within the valid window around ``for_time`` (now), or None.

    No secret (one this server cannot open) matches no code.
    """
    digits = _digits(code)
    if digits is None or secret is None:
        return None
    totp = _totp(secret)
    now_step = totp.timecode(for_time or datetime.now())
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def _normalise_recovery(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum()).replace("I", "1").replace("L", "1").replace("O", "0")


def _recovery_hash(staff_id: int, code: str) -> str:
    # The account's id in the hash: the same code for two people would otherwise collide on the unique hash.
    return hashlib.sha256(f"{staff_id}:{_normalise_recovery(code)}".encode()).hexdigest()


def _new_recovery_codes(staff_id: int) -> list[str]:
    """Fresh codes replace every earlier one; the codes themselves are returned once, to be shown once."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff_id))
    codes = ["".join(secrets.choice(ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
             for _ in range(RECOVERY_CODE_COUNT)]
    db.session.add_all(RecoveryCode(staff_id=staff_id, code_hash=_recovery_hash(staff_id, code)) for code in codes)
    half = RECOVERY_CODE_LENGTH // 2
    return [f"{code[:half]}-{code[half:]}" for code in codes]


def recovery_codes_left(staff_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode)
                             .where(RecoveryCode.staff_id == staff_id, RecoveryCode.used_at.is_(None)))


def _staff(staff_id: int) -> Staff:
    staff = db.session.get(Staff, staff_id)
    if staff is None:
        raise Refused("unknown_staff", _("There is no such staff account."), status=404)
    return staff


def _wrong_code() -> Refused:
    return Refused("wrong_code", _("That code is not right. Type the 6-digit code your authenticator app shows "
                                   "now, or one of your recovery codes."), field="code", status=422)


def already_on() -> Refused:
    return Refused("already_on", _("Two-step login is already on for this account."), status=409)


def already_off() -> Refused:
    return Refused("already_off", _("Two-step login is already off for this account."), status=409)


def not_started() -> Refused:
    return Refused("not_started", _("Start again: scan a new QR code with your authenticator app."), status=409)


def unreadable() -> Refused:
    return Refused("secret_unreadable", _("This server cannot check the codes of your authenticator app (its key "
                                          "has changed). Type one of your recovery codes instead, or ask a manager "
                                          "to reset your two-step login."), field="code", status=409)


def _secret_for_code(staff: Staff, code: str | None) -> str | None:
    """The account's confirmed secret, opened, to check ``code`` with; None when it cannot be opened.

    A secret sealed under another key (SECRET_KEY changed without a TWO_STEP_KEY) makes the app's codes
    uncheckable, and such a code is refused as that (never a 500, never a pass). A recovery code does not depend
    on the secret (its hash is kept), so it still works: that is what recovery codes are for, and without it a
    key change would lock out every manager of a clinic that requires two-step login.
    """
    secret = open_secret(staff.totp_secret)
    if secret is None and _digits((code or "")[:MAX_CODE_INPUT]) is not None:
        raise unreadable()
    return secret


def secret_unreadable(staff: Staff) -> bool:
    """Two-step login is on but this server cannot open its secret: only recovery codes work for it."""
    return staff.two_step_on and open_secret(staff.totp_secret) is None


def accounts_with_unreadable_secrets() -> list[Staff]:
    """Enabled accounts whose two-step secret this server's key cannot open, for the manager and the start-up log.

    Few rows (a clinic's staff), each opened in Python: the key is not in the database, so SQL cannot tell.
    """
    accounts = db.session.scalars(select(Staff).where(Staff.enabled.is_(True), Staff.totp_secret.is_not(None))
                                  .order_by(Staff.email))
    return [staff for staff in accounts if open_secret(staff.totp_secret) is None]


def start_enrolment(staff_id: int, actor: Actor) -> str:
    """A new secret, kept pending until a code made from it is typed (confirm_enrolment). Returns the secret.

    Starting again replaces a pending secret, never a confirmed one: two-step login stays as it is until the
    new phone has proved it holds the new secret.
    """
    with atomic():
        staff = _staff(staff_id)
        if staff.two_step_on:
            raise already_on()
        secret = pyotp.random_base32()
        staff.totp_pending_secret = seal(secret)
        audit.record("two_step.enrolment_started", actor, staff_member=staff.id)
        return secret


def confirm_enrolment(staff_id: int, code: str | None, actor: Actor, for_time: datetime | None = None,
                      session_token: str | None = None) -> list[str]:
    """Turn two-step login on, once a code from the pending secret proves the app has it. Returns the new
    recovery codes (shown once; only their hashes are kept).

    Turned on from a session (``session_token``, the web page's), every other session of the account ends: a
    person often turns two-step login on because they fear their password is known, and a session someone opened
    with it would otherwise outlive the new second step.
    """
    staff = _staff(staff_id)
    if staff.two_step_on:
        raise already_on()
    stored_pending = staff.totp_pending_secret
    pending = open_secret(stored_pending)
    if pending is None:  # none, or sealed under a key this server no longer has: a new QR code mends both
        raise not_started()
    step = matching_step(pending, (code or "")[:MAX_CODE_INPUT], for_time)
    if step is None:
        audit.record_refusal("two_step.enable", actor, "wrong_code", staff_member=staff_id)
        raise _wrong_code()
    with atomic():
        changed = db.session.execute(
            update(Staff).where(Staff.id == staff_id, Staff.totp_secret.is_(None),
                                Staff.totp_pending_secret == stored_pending)
            .values(totp_secret=seal(pending), totp_pending_secret=None, two_step_enabled_at=utcnow(), totp_last_step=step)
            .execution_options(synchronize_session=False)).rowcount
        if changed != 1:  # another tab confirmed or started again meanwhile
            raise not_started()
        codes = _new_recovery_codes(staff_id)
        ended = (staff_service.end_other_sessions(staff_id, session_token, "two_step_enabled")
                 if session_token is not None else 0)
        audit.record("two_step.enabled", actor, staff_member=staff_id, other_sessions_ended=ended)
    return codes


def _accept_code(staff_id: int, stored: str, secret: str | None, code: str, for_time: datetime | None = None) -> str | None:
    """Use up this code for this account, in the open transaction: 'totp' or 'recovery_code', or None.

    Both are decided by the database: the step only moves forward (a replayed or concurrent code finds it
    already there), and a recovery code is marked used only if it was not. ``stored`` is the column as read:
    the UPDATE checks the secret did not change (a reset, a new set-up) since.
    """
    step = matching_step(secret, code, for_time)
    if step is not None:
        moved = db.session.execute(
            update(Staff).where(Staff.id == staff_id, Staff.totp_secret == stored,
                                or_(Staff.totp_last_step.is_(None), Staff.totp_last_step < step))
            .values(totp_last_step=step).execution_options(synchronize_session=False)).rowcount
        return "totp" if moved == 1 else None
    if _digits(code) is None and _normalise_recovery(code):
        used = db.session.execute(
            update(RecoveryCode).where(RecoveryCode.staff_id == staff_id,
                                       RecoveryCode.code_hash == _recovery_hash(staff_id, code),
                                       RecoveryCode.used_at.is_(None))
            .values(used_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        return "recovery_code" if used == 1 else None
    return None


def _use_code(staff_id: int, stored: str, secret: str | None, code: str | None, for_time: datetime | None,
              then=None) -> str | None:
    """Accept the code and run ``then`` in one transaction; nothing is written when the code is not accepted.

    A secret still stored in clear (from before sealing) is sealed in that transaction: its owner has just
    proved they hold it, so this is the first moment it is known to be worth keeping.
    """
    code = (code or "")[:MAX_CODE_INPUT]
    accepted = None
    try:
        with atomic():
            accepted = _accept_code(staff_id, stored, secret, code, for_time)
            if accepted is None:
                raise _NotAccepted
            if not is_sealed(stored):
                _seal_clear(Staff.totp_secret, stored, staff_id)
            if then is not None:
                then()
    except _NotAccepted:
        pass
    return accepted


class _NotAccepted(Exception):
    """Rolls back the transaction of a code that was not accepted."""


def _code_refusal(staff_id: int, secret: str | None, code: str | None, for_time: datetime | None) -> tuple[str, Refused]:
    """Why a code was not accepted: a right code used before (replayed), or a wrong one."""
    if matching_step(secret, (code or "")[:MAX_CODE_INPUT], for_time) is not None:
        return "replayed_code", Refused("replayed_code", _("That code was already used. Wait for the next code in "
                                                           "your app, then type it."), field="code", status=422)
    return "wrong_code", _wrong_code()


def finish_login(staff_id: int, code: str | None, actor: Actor, user_agent: str = "",
                 for_time: datetime | None = None) -> Staff:
    """The second step: with a right, unused code the staff member is logged in on a new session.

    A wrong or replayed code is refused and audited, and so is an account disabled (or its two-step login
    reset) between the two steps.
    """
    staff = db.session.get(Staff, staff_id)
    if staff is None or not staff.enabled or not staff.two_step_on:
        audit.record_refusal("login", Actor(staff_id=staff_id if staff else None, ip=actor.ip), "account_changed")
        raise Refused("login_again", _("Log in again: this account changed since you typed the password."),
                      status=409)
    try:
        secret = _secret_for_code(staff, code)
    except Refused as refusal:
        audit.record_refusal("login.code", Actor(staff_id=staff_id, ip=actor.ip), refusal.reason)
        raise
    how = _use_code(staff_id, staff.totp_secret, secret, code, for_time)
    if how is None:
        reason, refusal = _code_refusal(staff_id, secret, code, for_time)
        audit.record_refusal("login.code", Actor(staff_id=staff_id, ip=actor.ip), reason)
        raise refusal
    return staff_service.open_session(staff_id, actor, user_agent, with_code=how)


def _with_password_and_code(staff_id: int, password: str | None, code: str | None, actor: Actor, refused_as: str,
                            then, for_time: datetime | None) -> None:
    """Run ``then`` (in the code's transaction) for the account's owner only: its password and a code, so an
    unattended logged-in desk PC is not enough. Refusals are audited as ``refused_as``."""
    staff = _staff(staff_id)
    if not staff.two_step_on:
        raise already_off()
    if not staff.check_password((password or "")[:200]):
        audit.record_refusal(refused_as, actor, "wrong_password", staff_member=staff_id)
        raise Refused("wrong_password", _("That password is not right."), field="password", status=422)
    try:
        stored, secret = staff.totp_secret, _secret_for_code(staff, code)
    except Refused as refusal:
        audit.record_refusal(refused_as, actor, refusal.reason, staff_member=staff_id)
        raise
    if _use_code(staff_id, stored, secret, code, for_time, then=then) is None:
        reason, refusal = _code_refusal(staff_id, secret, code, for_time)
        audit.record_refusal(refused_as, actor, reason, staff_member=staff_id)
        raise refusal


def turn_off(staff_id: int, password: str | None, code: str | None, actor: Actor,
             for_time: datetime | None = None) -> None:
    """The owner turns two-step login off, with the password and a code."""
    def turned_off():
        _clear(staff_id)
        audit.record("two_step.disabled", actor, staff_member=staff_id)

    _with_password_and_code(staff_id, password, code, actor, "two_step.disable", turned_off, for_time)


def renew_recovery_codes(staff_id: int, password: str | None, code: str | None, actor: Actor,
                         for_time: datetime | None = None) -> list[str]:
    """New recovery codes for the owner (the old ones used up, lost, or seen by someone): with the password
    and a code, like turning it off. Every earlier code stops working in the same transaction; the new ones are
    returned to be shown once, only their hashes kept."""
    codes: list[str] = []

    def renewed():
        codes.extend(_new_recovery_codes(staff_id))
        audit.record("two_step.recovery_codes_renewed", actor, staff_member=staff_id)

    _with_password_and_code(staff_id, password, code, actor, "two_step.recovery_codes", renewed, for_time)
    return codes


def _clear(staff_id: int) -> None:
    db.session.execute(update(Staff).where(Staff.id == staff_id)
                       .values(totp_secret=None, totp_pending_secret=None, two_step_enabled_at=None,
                               totp_last_step=None).execution_options(synchronize_session=False))
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff_id))


def reset(staff_id: int, actor: Actor) -> str:
    """A manager (or the reset-two-step command) turns off someone's two-step login: a lost phone and no
    recovery code. They log in with their password alone until they turn it on again with the new phone.
    Returns their email, for the answer.

    Every session of theirs ends at once: a lost (or stolen) phone may be logged in too, and whoever holds it
    must not keep the account after its second step was removed. They log in again with the password.
    """
    if actor.staff_id == staff_id:  # turning off one's own takes the password and a code (turn_off)
        raise Refused("own_account", _("Turn off your own two-step login on your two-step login page."), status=409)
    with atomic():
        staff = _staff(staff_id)
        if not staff.two_step_on and staff.totp_pending_secret is None:
            raise Refused("already_off", _("%(email)s does not use two-step login.", email=staff.email), status=409)
        _clear(staff_id)
        ended = staff_service.end_every_session(staff_id, "two_step_reset")
        audit.record("two_step.reset", actor, email=staff.email, staff_member=staff_id, sessions=ended)
        email = staff.email
    return email


@dataclass(frozen=True)
class TwoStepState:
    on: bool
    enabled_at: datetime | None
    pending_secret: str | None  # shown to its owner while they set up the app
    recovery_codes_left: int
    secret_unreadable: bool = False  # on, but this server's key cannot open the secret: recovery codes only


def state(staff_id: int) -> TwoStepState:
    """What the account page shows about this staff member's two-step login."""
    staff = _staff(staff_id)
    return TwoStepState(on=staff.two_step_on, enabled_at=staff.two_step_enabled_at,
                        pending_secret=None if staff.two_step_on else open_secret(staff.totp_pending_secret),
                        recovery_codes_left=recovery_codes_left(staff_id) if staff.two_step_on else 0,
                        secret_unreadable=secret_unreadable(staff))


def _seal_clear(column, clear: str, staff_id: int | None = None) -> int:
    """Seal one clear secret in ``column`` (of one account, or of every account holding it), if still there."""
    which = [column == clear] + ([Staff.id == staff_id] if staff_id is not None else [])
    return db.session.execute(update(Staff).where(*which).values({column.key: seal(clear)})
                              .execution_options(synchronize_session=False)).rowcount


def seal_clear_secrets() -> int:
    """Seal every secret still stored in clear (``flask --app wsgi seal-two-step-secrets``); returns how many.

    Why a command and first use, not a migration or start-up: a migration runs without the app's key (it may be
    set only in the server's environment), and sealing at start-up would write to the database from every
    worker on every boot. Sealing at the next accepted code covers whoever logs in; this command covers the rest
    at once (say, before a backup leaves the building). Each row is sealed only if it still holds the clear
    secret read, so a login or reset meanwhile is never overwritten.
    """
    sealed = 0
    with atomic():
        for column in (Staff.totp_secret, Staff.totp_pending_secret):
            clear = db.session.scalars(select(column).where(column.is_not(None),
                                                            ~column.startswith(SEALED_PREFIX))).all()
            sealed += sum(_seal_clear(column, value) for value in set(clear))
    return sealed
