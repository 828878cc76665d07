from __future__ import annotations

from datetime import datetime
from enum import Enum

from flask_login import UserMixin
from sqlalchemy import BigInteger, ForeignKey, String, false
from sqlalchemy.orm import relationship
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from clinic.extensions import db
from clinic.models._time import utcnow


class Role(str, Enum):
    FRONT_DESK = "front_desk"
    MANAGER = "manager"


class Staff(UserMixin, db.Model):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default=Role.FRONT_DESK.value)
    enabled: Mapped[bool] = mapped_column(default=True)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The language this person reads the portal in (clinic.i18n.LANGUAGES); None: the clinic's default.
    language: Mapped[str | None] = mapped_column(String(8))
    # Two-step login (clinic/services/two_step.py): the authenticator app's shared secret, once confirmed;
    # a new one waits in the pending column until the person has typed a code from it, so a half-done
    # enrolment never locks anyone out. Both sealed with the app's key (two_step_secrets.py): ~145 characters.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_pending_secret: Mapped[str | None] = mapped_column(String(255))
    two_step_enabled_at: Mapped[datetime | None] = mapped_column()
    # The time step (30 s) of the last code accepted: a code is refused at or before it, so a code seen over
    # someone's shoulder cannot be used again within its window.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    # A temporary password a manager gave (a new account, a reset): it only lets its holder choose their own.
    password_change_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    password_changed_at: Mapped[datetime | None] = mapped_column()

    branch = relationship("Branch")

    @property
    def two_step_on(self) -> bool:
        return self.totp_secret is not None

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:
        return self.enabled

    @property
    def is_manager(self) -> bool:
        return self.role == Role.MANAGER.value

    # The raw token of the login session being started or served (never stored: see StaffSession).
    session_token = None  # not a column: set by the session loader and at log in

    def get_id(self) -> str | None:
        """What Flask-Login keeps in the signed cookie: the session's token, not the staff id."""
        return self.session_token


class StaffSession(db.Model):
    """One login on one device, ended by logging out, by disabling the account or by a manager.

    The cookie carries a random token; only its hash is stored here, so a copy of the database
    does not let anyone in. Because every request looks the session up, ending it here ends it
    at once, even for a copy of the cookie that outlived the logout.
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    # logout / disabled / ended_by_manager / two_step_reset / idle
    ended_reason: Mapped[str | None] = mapped_column(String(24))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str] = mapped_column(String(200), default="")

    staff = relationship("Staff")


class RecoveryCode(db.Model):
    """A one-time code that stands in for the authenticator app (a lost or flat phone).

    Shown once, when two-step login is turned on; only its hash is kept, as for session tokens.
    """

    __tablename__ = "staff_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column()
