from __future__ import annotations

from datetime import datetime
from enum import Enum

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
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
    # Part of the login session id: bumping it ends every session of this user at once.
    session_version: Mapped[int] = mapped_column(default=1)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    branch = relationship("Branch")

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

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"
