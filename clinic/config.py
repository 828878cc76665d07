"""Settings read from the environment, with defaults that are safe for a single clinic PC."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url


def _secret_key(instance_path: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into ``instance/``.

    A generated key survives restarts (sessions stay valid) and is never committed.
    """
    from_env = os.environ.get("SECRET_KEY")
    if from_env:
        return from_env
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        instance_path.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _served_over_https(override: str) -> bool:
    if os.environ.get(override) in ("0", "1"):
        return os.environ[override] == "1"
    return os.environ.get("PUBLIC_BASE_URL", "").lower().startswith("https://")


def load_config(instance_path: Path) -> dict:
    instance_path.mkdir(parents=True, exist_ok=True)
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{instance_path / 'clinic.db'}"
    if database_url.startswith("postgres://"):  # the form Heroku-style hosts hand out
        database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Seals two-step login secrets (clinic/services/two_step_secrets.py); unset: derived from SECRET_KEY.
        "TWO_STEP_KEY": os.environ.get("TWO_STEP_KEY") or None,
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        "UPLOAD_FOLDER": str(instance_path / "uploads"),
        "BATCH_FOLDER": os.environ.get("BATCH_FOLDER") or str(instance_path / "batches"),
        # CSV imports between preview and confirm; shared by every worker, like BATCH_FOLDER.
        "IMPORT_FOLDER": os.environ.get("IMPORT_FOLDER") or str(instance_path / "imports"),
        # Any request body: a form, an API call. The routes that take a file raise it for themselves (imports.preview,
        # admin.settings), so that the form can say what is wrong with the file next to it.
        "MAX_CONTENT_LENGTH": 1024 * 1024 + 64 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure cookies whenever the portal is served over HTTPS (SESSION_COOKIE_SECURE=0/1 overrides).
        "SESSION_COOKIE_SECURE": _served_over_https("SESSION_COOKIE_SECURE"),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": _served_over_https("SESSION_COOKIE_SECURE"),
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,  # a desk PC stays logged in all day; the token lives with the session
        "SQLITE_BUSY_TIMEOUT_MS": int(os.environ.get("SQLITE_BUSY_TIMEOUT_MS", "15000")),
        # PostgreSQL: how long a statement waits for a lock held by another, and how long any one statement may
        # run (0: no limit), before it fails and the desk is told "busy, press again" (README "Running in
        # production"). Both well under GUNICORN_TIMEOUT, so a held lock never leaves a worker stuck until killed.
        "DATABASE_LOCK_TIMEOUT_MS": int(os.environ.get("DATABASE_LOCK_TIMEOUT_MS", "5000")),
        "DATABASE_STATEMENT_TIMEOUT_MS": int(os.environ.get("DATABASE_STATEMENT_TIMEOUT_MS", "20000")),
        # PostgreSQL: how long opening a connection may take. Without it a database host gone silent (a network
        # fault, not a refusal) held each request for the system's TCP timeout, minutes, past GUNICORN_TIMEOUT.
        "DATABASE_CONNECT_TIMEOUT_S": int(os.environ.get("DATABASE_CONNECT_TIMEOUT_S", "10")),
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        # With REDIS_URL, background jobs (card batches) go to this RQ queue for `flask worker`.
        "JOB_QUEUE": os.environ.get("JOB_QUEUE", "clinic-jobs"),
        "JOB_TIMEOUT_SECONDS": int(os.environ.get("JOB_TIMEOUT_SECONDS", "1800")),
        # Webhooks (README "Webhooks"). Receivers on loopback or private addresses are refused unless
        # WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 (an on-premise HIS); link-local and cloud metadata ones always.
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": os.environ.get("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "0") == "1",
        # Send right after the commit that queued an event (a job); `flask deliver-webhooks` retries.
        "WEBHOOK_SEND_AFTER_COMMIT": os.environ.get("WEBHOOK_SEND_AFTER_COMMIT", "1") != "0",
        "WEBHOOK_TIMEOUT_SECONDS": float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "5")),
        "WEBHOOK_MAX_ATTEMPTS": int(os.environ.get("WEBHOOK_MAX_ATTEMPTS", "8")),
        "WEBHOOK_RETRY_BASE_SECONDS": int(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "30")),
        "WEBHOOK_RETRY_MAX_SECONDS": int(os.environ.get("WEBHOOK_RETRY_MAX_SECONDS", "3600")),
        "WEBHOOK_POLL_SECONDS": float(os.environ.get("WEBHOOK_POLL_SECONDS", "5")),
        # Invite page opens (clinic/services/invite_opens.py) are written by each process at most this often.
        "INVITE_OPENS_FLUSH_SECONDS": float(os.environ.get("INVITE_OPENS_FLUSH_SECONDS", "10")),
        # A staff login lasts this long at most (logging out, or a manager, ends it sooner).
        "STAFF_SESSION_HOURS": int(os.environ.get("STAFF_SESSION_HOURS", "24")),
        # How many reverse proxies in front of the app add X-Forwarded-For/-Proto (0: none, the
        # client connects directly). Too high lets a client pick its own address; too low makes
        # every client look like the proxy, so all of them share one rate limit.
        "TRUSTED_PROXY_HOPS": int(os.environ.get("TRUSTED_PROXY_HOPS", "0")),
        **rate_limit_settings(),
    }


def rate_limit_settings() -> dict:
    """Rate limits (clinic/web/limits.py): shared storage in Redis when there is one, else per process."""
    redis_url = os.environ.get("REDIS_URL")
    return {
        "RATELIMIT_ENABLED": os.environ.get("RATELIMIT_ENABLED", "1") != "0",
        "RATELIMIT_STORAGE_URI": redis_url or "clinic-memory://",  # clinic/web/limits.py: no timer thread
        "RATELIMIT_KEY_PREFIX": os.environ.get("RATELIMIT_KEY_PREFIX", "clinic-limits"),
        # Redis down does not stop the desk: RouteLimiter counts in the process meanwhile and logs it.
        "RATELIMIT_STRATEGY": "sliding-window-counter",  # two counters per key, smooth at window edges
        # Per client address and, for staff, per account. See clinic/web/limits.py for what each covers.
        "RATELIMIT_LOGIN": os.environ.get("RATELIMIT_LOGIN", "10/minute;50/hour"),
        # Failed logins per account (the typed address, whether or not it has an account), from all addresses
        # together: enough to stop a botnet guessing, short enough that it cannot lock a colleague out for long.
        "RATELIMIT_LOGIN_ACCOUNT": os.environ.get("RATELIMIT_LOGIN_ACCOUNT", "10 per 15 minutes"),
        "RATELIMIT_CODE_ATTEMPTS": os.environ.get("RATELIMIT_CODE_ATTEMPTS", "120/minute;2000/hour"),
        "RATELIMIT_WRONG_CODES": os.environ.get("RATELIMIT_WRONG_CODES", "20/minute;200/hour"),
        "RATELIMIT_PUBLIC_PAGES": os.environ.get("RATELIMIT_PUBLIC_PAGES", "60/minute;600/hour"),
        # The invite page's "Call me back" form, per client address (clinic/web/limits.py).
        "RATELIMIT_CALL_BACKS": os.environ.get("RATELIMIT_CALL_BACKS", "5/hour"),
        # The integration API, per token: every request, and the unknown or mistyped codes among them.
        "RATELIMIT_API": os.environ.get("RATELIMIT_API", "600/minute"),
        "RATELIMIT_API_WRONG_CODES": os.environ.get("RATELIMIT_API_WRONG_CODES", "60/minute;600/hour"),
    }


def database_engine_options(config) -> dict:
    """SQLAlchemy engine options for the configured database (after any test settings were applied).

    PostgreSQL connections start with ``lock_timeout`` and ``statement_timeout`` (``flask db upgrade`` lifts the
    statement timeout for its own transaction, migrations/env.py); options already in the URL's ``options`` stay.
    Every engine keeps statements' parameters (names, phone numbers, codes) out of the exceptions it raises, and so
    out of the logs that record them.
    """
    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "postgresql":
        return {"hide_parameters": True}
    options = " ".join(filter(None, (url.query.get("options"),
                                     f"-c lock_timeout={int(config['DATABASE_LOCK_TIMEOUT_MS'])}",
                                     f"-c statement_timeout={int(config['DATABASE_STATEMENT_TIMEOUT_MS'])}")))
    connect_args = {"options": options}
    if "connect_timeout" not in url.query:  # one in the URL wins
        connect_args["connect_timeout"] = int(config["DATABASE_CONNECT_TIMEOUT_S"])
    return {"hide_parameters": True, "connect_args": connect_args}
