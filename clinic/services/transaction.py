"""One transaction per action, with the write lock taken up front on SQLite."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from clinic.extensions import db

IMMEDIATE = "clinic_begin_immediate"


@dataclass(frozen=True)
class Actor:
    """Who acts and from where, passed from the view so services never read ``request``."""

    staff_id: int | None = None
    ip: str | None = None
    branch_id: int | None = None
    api_token: str | None = None  # the name of the integration API token the request came with


def configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE for write transactions.

    pysqlite's own transaction handling is switched off so that we emit BEGIN ourselves:
    a write transaction begun as DEFERRED that later tries to write can fail at once with
    "database is locked" (a lock upgrade ignores the busy timeout), whereas BEGIN IMMEDIATE
    simply queues behind the current writer.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = "IMMEDIATE" if connection.get_execution_options().get(IMMEDIATE) else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def atomic(*, keep_loaded: bool = False):
    """Run the block as one write transaction: commit everything, or roll back everything.

    Any read-only transaction already open in this session (Flask-Login loading the user,
    say) is ended first so that the write transaction starts fresh with its lock.

    ``keep_loaded``: after the commit, objects keep the values this transaction read and wrote
    (they are what was committed) instead of being read again on their next use; for an answer
    built from the action's own rows, such as the desk's redemption receipt. A rollback still
    forgets everything.
    """
    session = db.session()
    if session.in_transaction():
        session.rollback()
    session.connection(execution_options={IMMEDIATE: True})
    expire_on_commit = session.expire_on_commit
    try:
        yield session
        if keep_loaded:
            session.expire_on_commit = False
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.expire_on_commit = expire_on_commit


def insert_ignoring_duplicates(model, values: dict) -> bool:
    """INSERT … ON CONFLICT DO NOTHING in the current transaction; True when the row was inserted.

    The database decides: of two transactions inserting the same key, one inserts and the other
    (after waiting for the first to commit, on PostgreSQL) gets False, with no error to recover from.
    """
    module = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    # RETURNING rather than rowcount: an ORM-enabled INSERT reports no rowcount on PostgreSQL.
    statement = module.insert(model).values(**values).on_conflict_do_nothing()
    return db.session.execute(statement.returning(*model.__table__.primary_key.columns)).first() is not None
