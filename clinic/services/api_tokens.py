"""Bearer tokens for the integration API: created by a manager, shown once, stored as a hash, revocable.

Each token may do only what its scopes say, chosen when it is made: a HIS that reports visits and payments
needs no token that reads every patient's phone or spends vouchers, and a leaked token does only the harm its
scopes allow. clinic/api/scopes.py says which scope each operation needs.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import pgettext
from sqlalchemy import and_, or_, select, update

from clinic.extensions import db
from clinic.models import ApiToken, Role, Staff
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.patients import check_fields
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic, forget_saves

TOKEN_PREFIX = "clk_"  # says what the secret is when it turns up in a log or a config file
NAME_MAX = 80
MAX_TOKEN_LENGTH = 200
PREFIX_SHOWN = 12  # "clk_" and the first 8 random characters: enough to tell tokens apart
LAST_USED_EVERY = timedelta(minutes=1)

# What a token may do, in the words a clinic's IT person reads on the token page; a token holds some of them.
# Tokens made before scopes existed hold all of these (migration 20261124_f3b9c2d41e07).
SCOPES = {
    "patients:read": _l("Find patients and read their details, phone numbers included"),
    "patients:write": _l("Enrol patients, correct their details (with patients:read too) and issue new progress "
                         "links (with patients:read and vouchers:read too: the progress page shows the vouchers)"),
    "milestones:write": _l("Report referred friends' first visits and payments (pays the rewards due)"),
    "redemptions:write": _l("Check referral codes and redeem them for new patients"),
    "vouchers:read": _l("Look up vouchers by their code"),
    "vouchers:write": _l("Spend and void vouchers"),
    "cards:write": _l("Activate scratch cards, print card batches and download their PDFs (with the hidden codes)"),
}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenHolder:
    """Who an authenticated API request acts for: plain values, safe to keep for the whole request."""

    id: int
    name: str
    created_by_id: int | None
    scopes: frozenset[str]


def checked_scopes(chosen) -> list[str]:
    """The scopes chosen, known ones only, in the order of :data:`SCOPES`; at least one."""
    chosen = set(chosen or ())
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise ValueError(_("Unknown scope: %(names)s. The scopes are %(scopes)s.", names=", ".join(unknown),
                           scopes=", ".join(SCOPES)))
    if not chosen:
        raise ValueError(_("Choose at least one thing the token may do."))
    return [name for name in SCOPES if name in chosen]


def create_token(name: str | None, scopes, actor: Actor) -> tuple[ApiToken, str]:
    """A new token (256 random bits) named for what uses it, allowed what ``scopes`` say; returns it with the raw
    token, shown once. Raises :class:`FieldErrors` (``name``, ``scopes``) naming every problem."""
    values = check_fields({
        "name": lambda: clean_text(name, max_length=NAME_MAX, label=pgettext("API token", "Name"), required=True),
        "scopes": lambda: checked_scopes(scopes),
    })
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with atomic():
        token = ApiToken(name=values["name"], scopes=values["scopes"], token_hash=hash_token(raw),
                         prefix=raw[:PREFIX_SHOWN], created_by_id=actor.staff_id)
        db.session.add(token)
        db.session.flush()
        audit.record("api_token.created", actor, token=token.name, prefix=token.prefix, scopes=token.scopes)
    return token, raw


def revoke_token(token_id: int, actor: Actor) -> ApiToken:
    """The token stops working at once; revoking it again changes nothing."""
    with atomic():
        token = db.session.get(ApiToken, token_id)
        if token is None:
            raise Refused("not_found", _("No such API token."), status=404)
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            audit.record("api_token.revoked", actor, token=token.name, prefix=token.prefix)
    return token


def list_tokens() -> list[ApiToken]:
    """Active tokens first, newest first."""
    return list(db.session.scalars(select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())))


def authenticate(raw: str | None) -> TokenHolder | None:
    """The holder of an active token, or None. Notes the use, at most once a minute per token."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH or not raw.startswith(TOKEN_PREFIX):
        return None
    # A token works only while the manager who created it may still log in as a manager: disabling an account
    # (someone who left) or moving it to the front desk suspends their tokens too, and undoing that restores
    # them. Tokens made with the CLI (no creator) belong to whoever runs the server.
    token = db.session.scalar(select(ApiToken).outerjoin(Staff, Staff.id == ApiToken.created_by_id).where(
        ApiToken.token_hash == hash_token(raw), ApiToken.revoked_at.is_(None),
        or_(ApiToken.created_by_id.is_(None), and_(Staff.enabled.is_(True), Staff.role == Role.MANAGER.value))))
    if token is None:
        return None
    holder = TokenHolder(id=token.id, name=token.name, created_by_id=token.created_by_id,
                         scopes=frozenset(token.scopes))
    now = utcnow()
    if token.last_used_at is None or token.last_used_at <= now - LAST_USED_EVERY:
        with atomic():
            # Conditional: of several requests in the same minute, one writes.
            db.session.execute(update(ApiToken).where(
                ApiToken.id == holder.id,
                or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_EVERY))
                .values(last_used_at=now).execution_options(synchronize_session=False))
        forget_saves()  # bookkeeping, not what the request asked for: an error after it has still saved nothing
    return holder
