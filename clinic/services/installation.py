"""Is this server set up right? What the clinic's IT person asks after an install, an upgrade or a move
(``flask --app wsgi check``).

Each part of the portal already says what it lacks at its own moment: printing at start-up and at the first PDF,
the database at ``/healthz``, two-step login at the code step, a webhook sender nowhere at all (deliveries just
wait). Found late, each is a bad morning: posters printed with a QR code that points at ``127.0.0.1``, patients'
"you earned a reward" messages stuck for a week because ``flask deliver-webhooks`` never started after a reboot,
a card batch waiting for an RQ worker that is not there. This module asks every such question at once and answers
each in a sentence that says what to do.

Findings are ``problem`` (something is broken or will be: the command exits 1), ``note`` (works, but check it is
what you meant) or ``ok``. Nothing here writes to the database.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from clinic.extensions import db
from clinic.models import BatchStatus, CardBatch, Staff, WebhookDelivery, WebhookEndpoint
from clinic.models._time import utcnow

PROBLEM, NOTE, OK = "problem", "note", "ok"
# A delivery or a batch this late is not waiting for its turn: nothing is there to take it.
OVERDUE = timedelta(minutes=10)
LOOPBACK_HOSTS = {"localhost", "localhost.localdomain"}


@dataclass(frozen=True)
class Finding:
    level: str  # PROBLEM, NOTE or OK
    topic: str
    text: str


def check_installation(config, now: datetime | None = None) -> list[Finding]:
    """Every finding about this server, database first (the later checks read it)."""
    now = now or utcnow()
    found = _database(config)
    if all(finding.level != PROBLEM for finding in found):
        found += _two_step(config) + _background_work(config, now)
    return found + _public_address(config) + _redis(config) + _printing_and_folders(config)


def _database(config) -> list[Finding]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask import current_app

    from clinic.services.transaction import check_database

    engine = db.engine.dialect.name
    head = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config()).get_current_head()
    try:
        with db.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
        if tuple(current) != (head,):  # asked first: an empty database fails every other question
            return [Finding(PROBLEM, "database", f"The database's schema is at "
                                                 f"{', '.join(current) or 'nothing (empty)'}, this release needs "
                                                 f"{head}: run `flask --app wsgi db upgrade` (after a backup).")]
        check_database()
    except SQLAlchemyError as error:
        return [Finding(PROBLEM, "database", f"The database ({engine}) does not answer or cannot be written: "
                                             f"{str(error).splitlines()[0][:300]}")]
    finally:
        db.session.rollback()
    return [Finding(OK, "database", f"The database ({engine}) answers, takes writes and is migrated ({head}).")]


def _two_step(config) -> list[Finding]:
    from clinic.services.two_step import accounts_with_unreadable_secrets

    unreadable = [staff.email for staff in accounts_with_unreadable_secrets()]
    if unreadable:
        return [Finding(PROBLEM, "two-step login",
                        f"This server's key cannot open the authenticator secret of {', '.join(unreadable)}: "
                        f"TWO_STEP_KEY (or SECRET_KEY when that is unset) changed. Put the old key back, or they "
                        f"log in with a recovery code and set two-step login up again.")]
    users = db.session.scalar(select(func.count()).select_from(Staff).where(Staff.totp_secret.is_not(None)))
    if users and not config.get("TWO_STEP_KEY"):
        return [Finding(NOTE, "two-step login",
                        f"{_count(users, 'account uses', 'accounts use')} two-step login, sealed with a key derived "
                        f"from SECRET_KEY: set TWO_STEP_KEY (keep it with the backups) so that a new SECRET_KEY "
                        f"does not break them.")]
    return []


def _background_work(config, now: datetime) -> list[Finding]:
    """Work the database says is waiting for a process that should be running: the webhook sender, the RQ worker."""
    found = []
    from clinic.services.webhook_sender import due

    overdue = db.session.execute(
        select(func.count(), func.min(WebhookDelivery.next_attempt_at))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id).where(*due(now - OVERDUE))).one()
    if overdue[0]:
        found.append(Finding(PROBLEM, "webhooks",
                             f"{_count(overdue[0], 'webhook delivery', 'webhook deliveries')} (patients' messages "
                             f"among them) waiting since {overdue[1]:%Y-%m-%d %H:%M} UTC: is "
                             f"`flask --app wsgi deliver-webhooks` running as a service? (Running in production, "
                             f"step 4)"))
    if config.get("REDIS_URL"):
        waiting = db.session.scalar(select(func.count()).select_from(CardBatch).where(
            CardBatch.status == BatchStatus.QUEUED.value, CardBatch.created_at < now - OVERDUE))
        if waiting:
            found.append(Finding(PROBLEM, "jobs", f"{_count(waiting, 'card batch', 'card batches')} queued for over "
                                                  f"{OVERDUE.seconds // 60} minutes: is `flask --app wsgi worker` "
                                                  f"running? (REDIS_URL is set, so jobs wait for it)"))
    db.session.rollback()
    return found


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _public_address(config) -> list[Finding]:
    """PUBLIC_BASE_URL is printed on paper (every QR code): a wrong one outlives the fix."""
    base = config.get("PUBLIC_BASE_URL") or ""
    parts = urlsplit(base)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return [Finding(PROBLEM, "public address", f"PUBLIC_BASE_URL ({base!r}) is not an http(s) address: QR "
                                                   f"codes and links would not open.")]
    if _is_local(host):
        return [Finding(NOTE, "public address",
                        f"PUBLIC_BASE_URL is {base}: patients' phones cannot reach it. Fine for a trial on this "
                        f"PC; set it to the clinic's public address before printing posters or cards (their QR "
                        f"codes keep the address for good).")]
    if parts.scheme != "https":
        return [Finding(NOTE, "public address", f"PUBLIC_BASE_URL is {base}, not https: patients' private links "
                                                f"travel in clear, and cookies are marked Secure only on requests that "
                                                f"reach the app over HTTPS.")]
    return [Finding(OK, "public address", f"QR codes and links point at {base}.")]


def _is_local(host: str) -> bool:
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified or address.is_link_local


def _redis(config) -> list[Finding]:
    url = config.get("REDIS_URL")
    if not url:
        return [Finding(NOTE, "redis", "REDIS_URL is not set: rate limits are counted by each worker process "
                                       "apart and background jobs run in the web process. Right for one "
                                       "server; several hosts need Redis.")]
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except RedisError as error:
        return [Finding(PROBLEM, "redis", f"Redis at REDIS_URL does not answer ({error}): rate limits and "
                                          f"background jobs fail.")]
    return [Finding(OK, "redis", "Redis answers: rate limits are shared by every worker and host.")]


def _printing_and_folders(config) -> list[Finding]:
    from clinic import folder_problems
    from clinic.services.printing import printing_problems

    problems = [Finding(PROBLEM, "printing", text) for text in printing_problems()]
    problems += [Finding(PROBLEM, "folders", text) for text in folder_problems(config)]
    return problems or [Finding(OK, "printing", "PDFs print fast (libharfbuzz-subset) with Chinese and emoji "
                                                "fonts; the upload, import and batch folders can be written.")]
