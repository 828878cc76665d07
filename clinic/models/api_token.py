from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clinic.extensions import db
from clinic.models._time import utcnow


class ApiToken(db.Model):
    """A bearer token for the integration API (/api/v1), e.g. for the clinic's own HIS.

    The raw token is shown once when it is created; only its sha256 is stored, so a copy of the
    database lets nobody in. ``prefix`` is its first characters, to tell tokens apart on the page.
    ``scopes`` are what it may do (clinic/services/api_tokens.py ``SCOPES``), fixed when it is made.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))  # None: made with the CLI
    # Refreshed at most once a minute per token, so that the API does not write on every request.
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    created_by = relationship("Staff")

    @property
    def active(self) -> bool:
        return self.revoked_at is None
