"""Absolute public URLs for printed QR codes and shared links (on PUBLIC_BASE_URL)."""

from __future__ import annotations

from flask import current_app

from clinic.services.clinic_settings import current_clinic


def public_base_url() -> str:
    return (current_clinic().public_base_url or current_app.config["PUBLIC_BASE_URL"]).rstrip("/")


def invite_url(code: str) -> str:
    return f"{public_base_url()}/r/{code}"


def progress_url(token: str) -> str:
    return f"{public_base_url()}/p/{token}"


def voucher_url(code: str) -> str:
    return f"{public_base_url()}/v/{code}"
