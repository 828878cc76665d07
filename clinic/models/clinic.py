from __future__ import annotations

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db


class Clinic(db.Model):
    """The clinic this installation serves: one row, edited on the settings page."""

    __tablename__ = "clinics"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str] = mapped_column(String(40), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    logo_filename: Mapped[str | None] = mapped_column(String(80))
    brand_colour: Mapped[str] = mapped_column(String(7), default="#0f766e")
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    # The clinic's default language (clinic.i18n.LANGUAGES): patient pages, printed PDFs, staff who chose none.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    public_base_url: Mapped[str | None] = mapped_column(String(200))
    # Managers change rewards, void vouchers and export phone numbers: when on, a manager without two-step login
    # is sent to set it up before any other staff page (clinic/web/access.py). Desk staff are not affected.
    managers_need_two_step: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Erase patients' personal data after this many months without activity (clinic/services/retention.py); NULL: off.
    retention_months: Mapped[int | None]
