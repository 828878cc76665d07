"""Staff accounts: creation, log in and out, server-side sessions, disabling an account."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import make_transient_to_detached
from werkzeug.security import check_password_hash, generate_password_hash

from clinic.extensions import db
from clinic.models import Role, Staff, StaffSession
from clinic.models._time import utcnow
from clinic.models.rows import column_keys, columns_of
from clinic.services import audit
from clinic.services.codes import ALPHABET
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.services.text import has_hidden_characters
from clinic.services.transaction import Actor, atomic, read_connection

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200  # hashing a megabyte "password" is work for nothing


# One @, something either side, a dot in the domain, no spaces or control characters: a login name, not RFC 5322.
_PLAUSIBLE_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def normalize_email(email: str | None) -> str:
    return (email or "").strip().lower()


def create_staff(email: str, password: str, role: str, actor: Actor | None = None, *,
                 password_change_required: bool = False) -> Staff:
    email = normalize_email(email)
    if not _PLAUSIBLE_EMAIL.fullmatch(email) or len(email) > 254 or has_hidden_characters(email):
        raise Refused("validation_error", _("Give a valid email address."), field="email")
    if role not in {r.value for r in Role}:
        raise Refused("validation_error", _("Role must be one of: %(roles)s.", roles=", ".join(r.value for r in Role)),
                      field="role")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused("validation_error", _("The password needs at least %(count)s characters.",
                                              count=MIN_PASSWORD_LENGTH),
                      field="password")
    with atomic():
        if db.session.scalar(select(Staff.id).where(func.lower(Staff.email) == email)) is not None:
            raise Refused("exists", _("%(email)s already has an account.", email=email), field="email", status=409)
        staff = Staff(email=email, role=role, password_change_required=password_change_required)
        staff.set_password(password)
        db.session.add(staff)
        db.session.flush()
        audit.record("staff.created", actor or Actor(), email=email, role=role, staff_member=staff.id)
    return staff


def check_credentials(email: str | None, password: str | None, actor: Actor) -> Staff | None:
    """The enabled staff member with these credentials, or None (audited as a refused login).

    Only the first step of logging in: no session is opened here. An account with two-step login on
    still has to give a code (clinic/services/two_step.py) before ``open_session`` runs.
    """
    email = normalize_email(email)
    stand_in = _stand_in_password_hash()  # before the lookup: its one-off cost falls on every first login alike
    # No address has a NUL, and PostgreSQL refuses to compare text holding one.
    staff = db.session.scalar(select(Staff).where(Staff.email == email)) if "\x00" not in email else None
    # One hash check whatever the account: skipping it for a missing or disabled one answered in 20 ms instead
    # of 300, which told anyone trying addresses which staff emails exist.
    password_matches = check_password_hash(staff.password_hash if staff is not None else stand_in, password or "")
    if staff is None or not staff.enabled or not password_matches:
        audit.record_refusal("login", actor, "bad_credentials", email=email[:254])
        return None
    return staff


def open_session(staff_id: int, actor: Actor, user_agent: str = "", *, audited_as: str = "login",
                 **details) -> Staff:
    """Log this staff member in on a new session (audited); the caller has checked every step of the login.

    The returned staff member carries the new session's token (``session_token``) for Flask-Login to put in
    the cookie.
    """
    token = secrets.token_urlsafe(32)
    with atomic():
        staff = _staff_or_refuse(staff_id)
        db.session.add(StaffSession(token_hash=_token_hash(token), staff_id=staff.id, ip=actor.ip,
                                    user_agent=(user_agent or "")[:200]))
        audit.record(audited_as, Actor(staff_id=staff.id, ip=actor.ip, branch_id=staff.branch_id), **details)
    staff = db.session.get(Staff, staff_id)
    staff.session_token = token
    return staff


def authenticate(email: str | None, password: str | None, actor: Actor, user_agent: str = "") -> Staff | None:
    """A password-only login in one call (the CLI and tests): None also for an account with two-step login on,
    whose session only the second step opens (two_step.finish_login)."""
    staff = check_credentials(email, password, actor)
    if staff is None or staff.two_step_on:
        return None
    return open_session(staff.id, actor, user_agent)


@cache
def _stand_in_password_hash() -> str:
    """A hash of a password nobody knows, of the kind and cost every account's has (werkzeug's default).

    Checked when an address has no account, so that a wrong address takes as long as a wrong password.
    Made once per process, on its first login attempt, whoever that attempt is for.
    """
    return generate_password_hash(secrets.token_urlsafe(32))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Built once: it runs on every staff request, and building a statement costs about as much as running it.
_STAFF_KEYS = column_keys(Staff)
_OPEN_SESSION = (select(StaffSession.created_at, *columns_of(Staff)).join(Staff, Staff.id == StaffSession.staff_id)
                 .where(StaffSession.token_hash == bindparam("token_hash"), StaffSession.ended_at.is_(None)))


def load_session_user(token: str) -> Staff | None:
    """Flask-Login's loader: the staff member whose session this token opened, if it is still open.

    Read-only on purpose (it runs on every request, sometimes inside another action's
    transaction): an ended, expired or disabled session simply stops loading. Read outside any
    transaction unless one is open (transaction.read_connection): otherwise the desk action that follows
    began by rolling back a transaction opened only for this SELECT, and on PostgreSQL that rollback also
    drops the statements psycopg had prepared on the connection (a ``DEALLOCATE ALL``), so no statement of
    a redemption stayed prepared from one request to the next: three round trips, and every statement
    planned again.
    """
    if not token or len(token) > 64:
        return None
    with read_connection() as connection:
        row = connection.execute(_OPEN_SESSION, {"token_hash": _token_hash(token)}).first()
    if row is None:
        return None
    created_at, *columns = row
    # A detached copy of the row, outside the session: an action's commit would otherwise expire it, and
    # the page after the action (a desk receipt asking the staff member's language) would read it again.
    # A copy also leaves alone any Staff row an action has loaded in the session. current_user is only
    # ever read (its id, role, branch, language), never changed or linked to other rows.
    staff = Staff(**dict(zip(_STAFF_KEYS, columns)))
    if not staff.enabled or utcnow() - created_at > session_lifetime():
        return None
    make_transient_to_detached(staff)
    staff.session_token = token
    return staff


def session_lifetime() -> timedelta:
    """How long a login lasts: a working day and more, so a desk logs in once a day."""
    return timedelta(hours=current_app.config["STAFF_SESSION_HOURS"])


def log_out(staff: Staff, actor: Actor) -> None:
    """End this session (only this one: colleagues on other desks stay logged in)."""
    with atomic():
        _end_sessions(StaffSession.token_hash == _token_hash(staff.session_token or ""), "logout")
        audit.record("logout", actor)


def set_language(staff_id: int, language: str | None) -> Staff:
    """A staff member's own language for the portal (None: follow the clinic's default)."""
    from clinic.i18n import LANGUAGES

    if language is not None and language not in LANGUAGES:
        raise Refused("validation_error", _("Choose one of the languages offered."), field="language")
    with atomic():
        staff = _staff_or_refuse(staff_id)
        staff.language = language
    return staff


def _end_sessions(which, reason: str) -> int:
    result = db.session.execute(update(StaffSession).where(which, StaffSession.ended_at.is_(None))
                                .values(ended_at=utcnow(), ended_reason=reason))
    return result.rowcount


def staff_list() -> list[tuple[Staff, int]]:
    """Every account with its number of open sessions, for the manager's staff page."""
    since = utcnow() - session_lifetime()
    open_count = (select(func.count()).select_from(StaffSession)
                  .where(StaffSession.staff_id == Staff.id, StaffSession.ended_at.is_(None),
                         StaffSession.created_at > since).scalar_subquery())
    return [(staff, count) for staff, count in db.session.execute(
        select(Staff, open_count).order_by(Staff.enabled.desc(), Staff.email))]


def end_every_session(staff_id: int, reason: str) -> int:
    """Log this account out on every device, in the open transaction (its caller audits why). Returns how many."""
    return _end_sessions(StaffSession.staff_id == staff_id, reason)


def end_other_sessions(staff_id: int, session_token: str | None, reason: str) -> int:
    """Log this account out on every device but the one holding ``session_token``, in the open transaction.

    For the moments that make a session opened before them suspect (a new password, two-step login turned on):
    whoever else may have used the old password is logged out; the person acting stays logged in.
    """
    return _end_sessions((StaffSession.staff_id == staff_id)
                         & (StaffSession.token_hash != _token_hash(session_token or "")), reason)


def end_sessions(staff_id: int, actor: Actor) -> int:
    """A manager logs someone out everywhere (a lost phone, a shared password). Returns how many."""
    with atomic():
        staff = _staff_or_refuse(staff_id)
        ended = end_every_session(staff.id, "ended_by_manager")
        audit.record("staff.sessions_ended", actor, email=staff.email, staff_member=staff.id, sessions=ended)
    return ended


def set_enabled(staff_id: int, enabled: bool, actor: Actor) -> Staff:
    """Disable (and log out everywhere, at once) or re-enable an account."""
    with atomic():
        staff = _staff_or_refuse(staff_id)
        if staff.enabled == enabled:
            return staff
        if not enabled:
            if staff.id == actor.staff_id:
                raise Refused("own_account", _("You cannot disable your own account."), status=409)
            if staff.role == Role.MANAGER.value and _enabled_managers() <= 1:
                raise Refused("last_manager", _("This is the only enabled manager: enable or create another first."),
                              status=409)
            end_every_session(staff.id, "disabled")
        staff.enabled = enabled
        audit.record("staff.enabled" if enabled else "staff.disabled", actor, email=staff.email,
                     staff_member=staff.id)
    return staff


def _staff_or_refuse(staff_id: int) -> Staff:
    staff = db.session.get(Staff, staff_id)
    if staff is None:
        raise Refused("unknown_staff", _("There is no such staff account."), status=404)
    return staff


def _enabled_managers() -> int:
    return db.session.scalar(select(func.count()).select_from(Staff)
                             .where(Staff.role == Role.MANAGER.value, Staff.enabled.is_(True)))


def staff_by_email(email: str) -> Staff | None:
    return db.session.scalar(select(Staff).where(Staff.email == normalize_email(email)))


# Accounts a manager makes or resets on the staff page (no shell needed): a temporary password, shown once, that
# only lets its holder choose their own (web/accounts.py keeps them on that page until they have).

TEMPORARY_PASSWORD_SYMBOLS = 12  # XXXX-XXXX-XXXX from the codes' alphabet: 60 random bits, read out and typed once


@dataclass(frozen=True)
class IssuedPassword:
    """A temporary password for ``staff``: shown to the manager once, stored only as its hash."""

    staff: Staff
    password: str


def temporary_password() -> str:
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(TEMPORARY_PASSWORD_SYMBOLS))
    return "-".join(symbols[start:start + 4] for start in range(0, TEMPORARY_PASSWORD_SYMBOLS, 4))


def add_staff(email: str | None, role: str | None, actor: Actor) -> IssuedPassword:
    """A new account with a temporary password, to be changed at its first login (audited as ``staff.created``)."""
    if role not in {r.value for r in Role}:
        raise Refused("validation_error", _("Choose front desk or manager."), field="role")
    password = temporary_password()
    staff = create_staff(email or "", password, role, actor, password_change_required=True)
    return IssuedPassword(staff, password)


def reset_password(staff_id: int, actor: Actor) -> IssuedPassword:
    """A forgotten password: a temporary one instead, every session of the account ended (a password someone else
    may know is what a reset is often for). One's own password is changed on one's account page instead."""
    password = temporary_password()
    with atomic():
        staff = _staff_or_refuse(staff_id)
        if staff.id == actor.staff_id:
            raise Refused("own_account", _("Change your own password on your account page."), status=409)
        staff.set_password(password)
        staff.password_change_required = True
        ended = end_every_session(staff.id, "password_reset")
        audit.record("staff.password_reset", actor, email=staff.email, staff_member=staff.id, sessions=ended)
    return IssuedPassword(staff, password)


def change_role(staff_id: int, role: str | None, actor: Actor) -> Staff:
    """Front desk <-> manager. Not one's own (a slip would lock a manager out of the staff page), and never the
    clinic's last enabled manager's."""
    if role not in {r.value for r in Role}:
        raise Refused("validation_error", _("Choose front desk or manager."), field="role")
    with atomic():
        staff = _staff_or_refuse(staff_id)
        if staff.role == role:
            return staff
        if staff.id == actor.staff_id:
            raise Refused("own_account", _("Another manager has to change your own role."), status=409)
        if staff.role == Role.MANAGER.value and staff.enabled and _enabled_managers() <= 1:
            raise Refused("last_manager", _("This is the only enabled manager: make someone else a manager first."),
                          status=409)
        audit.record("staff.role_changed", actor, email=staff.email, staff_member=staff.id,
                     changes={"role": (staff.role, role)})
        staff.role = role
    return staff


def change_own_password(staff_id: int, current: str | None, new: str | None, repeated: str | None,
                        session_token: str | None, actor: Actor) -> Staff:
    """A staff member chooses their own password, proving the one they have; their other sessions end (a changed
    password is often a suspected one), the one they are using stays. Audited without either password."""
    current, new, repeated = current or "", new or "", repeated or ""
    with atomic():
        staff = _staff_or_refuse(staff_id)
        problems = {}
        if not staff.check_password(current):
            problems["current_password"] = _("That is not your current password.")
        if len(new) < MIN_PASSWORD_LENGTH:
            problems["new_password"] = _("The password needs at least %(count)s characters.", count=MIN_PASSWORD_LENGTH)
        elif len(new) > MAX_PASSWORD_LENGTH:
            problems["new_password"] = _("The password can have at most %(count)s characters.",
                                         count=MAX_PASSWORD_LENGTH)
        elif new == current:
            problems["new_password"] = _("Choose a password other than the one you have now.")
        elif new != repeated:
            problems["repeat_password"] = _("The two new passwords are not the same.")
        if problems:
            raise FieldErrors(problems)
        staff.set_password(new)
        staff.password_change_required = False
        staff.password_changed_at = utcnow()
        ended = end_other_sessions(staff.id, session_token, "password_changed")
        audit.record("staff.password_changed", actor, other_sessions_ended=ended)
    return staff
