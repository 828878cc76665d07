"""Staff accounts: creation from the command line, log in, and the session loader."""

from __future__ import annotations

from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Role, Staff
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic

MIN_PASSWORD_LENGTH = 10


def normalize_email(email: str | None) -> str:
    return (email or "").strip().lower()


def create_staff(email: str, password: str, role: str, actor: Actor | None = None) -> Staff:
    email = normalize_email(email)
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise Refused("validation_error", "Give a valid email address.", field="email")
    if role not in {r.value for r in Role}:
        raise Refused("validation_error", f"Role must be one of: {', '.join(r.value for r in Role)}.", field="role")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused("validation_error", f"The password needs at least {MIN_PASSWORD_LENGTH} characters.",
                      field="password")
    with atomic():
        if db.session.scalar(select(Staff.id).where(func.lower(Staff.email) == email)) is not None:
            raise Refused("exists", f"{email} already has an account.", field="email", status=409)
        staff = Staff(email=email, role=role)
        staff.set_password(password)
        db.session.add(staff)
        db.session.flush()
        audit.record("staff.created", actor or Actor(), email=email, role=role, staff_member=staff.id)
    return staff


def authenticate(email: str | None, password: str | None, actor: Actor) -> Staff | None:
    """The enabled staff member with these credentials, or None. Both outcomes are audited."""
    email = normalize_email(email)
    staff = db.session.scalar(select(Staff).where(Staff.email == email))
    if staff is None or not staff.enabled or not staff.check_password(password or ""):
        audit.record_refusal("login", actor, "bad_credentials", email=email[:254])
        return None
    with atomic():
        audit.record("login", Actor(staff_id=staff.id, ip=actor.ip))
    return db.session.get(Staff, staff.id)


def record_logout(actor: Actor) -> None:
    with atomic():
        audit.record("logout", actor)


def load_session_user(session_id: str) -> Staff | None:
    """Flask-Login's loader: the id carries a version, so bumping it ends old sessions."""
    staff_id, _, version = (session_id or "").partition(":")
    if not staff_id.isdigit() or not version.isdigit():
        return None
    staff = db.session.get(Staff, int(staff_id))
    if staff is None or not staff.enabled or staff.session_version != int(version):
        return None
    return staff
