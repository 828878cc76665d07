"""The authenticator secrets of two-step login, sealed with a key that is not in the database.

A TOTP secret is what makes the codes: whoever reads it from a stolen database or backup, and has phished the
password, passes the second step. So the columns hold ``f1:`` + a Fernet token (AES-128-CBC with an HMAC, from
the ``cryptography`` package: nothing hand-rolled), and the key lives with the app: derived by HKDF from
``TWO_STEP_KEY`` when it is set, else from ``SECRET_KEY``, each with its own purpose label, so the same
SECRET_KEY never signs sessions and seals secrets with one key.

A secret that was sealed under another key (SECRET_KEY changed without a TWO_STEP_KEY, a backup restored on a
server with another key) cannot be opened: :func:`open_secret` answers None and two-step login refuses that
account, with "ask a manager to reset it", rather than letting anyone in or failing with a 500.

Secrets written before sealing existed are clear base32 (never starting ``f1:``): they keep working and are
sealed at their owner's next accepted code, or all at once by ``flask --app wsgi seal-two-step-secrets``.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

SEALED_PREFIX = "f1:"  # the scheme's version: a later one can be told apart, and read alongside
PURPOSE = b"clinic-portal two-step login secrets v1"


def _fernet() -> Fernet:
    material = current_app.config.get("TWO_STEP_KEY") or current_app.config["SECRET_KEY"]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def is_sealed(stored: str | None) -> bool:
    return stored is not None and stored.startswith(SEALED_PREFIX)


def seal(secret: str) -> str:
    """What the column holds for this base32 secret (a different text each time: Fernet's IV is random)."""
    return SEALED_PREFIX + _fernet().encrypt(secret.encode()).decode("ascii")


def open_secret(stored: str | None) -> str | None:
    """The base32 secret a column holds; None when there is none, or it was sealed under another key."""
    if stored is None:
        return None
    if not is_sealed(stored):
        return stored  # written before sealing: sealed at the next accepted code
    try:
        return _fernet().decrypt(stored[len(SEALED_PREFIX):].encode("ascii")).decode()
    except (InvalidToken, ValueError):
        return None
