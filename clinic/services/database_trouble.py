"""What a failed database call means for whoever asked: wait a moment, or fetch the manager.

A held lock, a statement stopped by its time limit, a connection the server dropped, a full disk or a
database file that cannot be written are not bugs of the request: they answer 503 with words that say
what to do (clinic/web/errors.py), not the 500 "something went wrong" page.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, OperationalError

from clinic.services.transaction import UNWRITABLE_SQLITE_ERRORS, DatabaseBusy

# Try again in a moment: another writer holds what this one needs, or the server is out of reach.
UNAVAILABLE = "unavailable"
# Nothing can be saved until someone frees space on the server's disk.
DISK_FULL = "disk_full"
# Nothing can be saved until someone makes the database writable again (or replaces a failing disk).
NOT_WRITABLE = "not_writable"

# PostgreSQL's error codes (SQLSTATE) by what they mean here.
_SQLSTATES = {
    "55P03": UNAVAILABLE,  # lock_not_available: lock_timeout passed
    "57014": UNAVAILABLE,  # query_canceled: statement_timeout passed
    "40P01": UNAVAILABLE,  # deadlock_detected
    "40001": UNAVAILABLE,  # serialization_failure
    "53100": DISK_FULL,  # disk_full
    "25006": NOT_WRITABLE,  # read_only_sql_transaction: a standby, or default_transaction_read_only
}
# The server is shutting down, restarting, or has no connection to spare: out of reach for a moment.
_SERVER_GOING_AWAY = ("57P01", "57P02", "57P03", "53300")
# SQLite's words for the same, in its error messages.
_SQLITE_WORDS = (("database is locked", UNAVAILABLE), ("database table is locked", UNAVAILABLE),
                 ("disk is full", DISK_FULL), *((words, NOT_WRITABLE) for words in UNWRITABLE_SQLITE_ERRORS))


def database_trouble(error: BaseException) -> str | None:
    """UNAVAILABLE, DISK_FULL or NOT_WRITABLE when ``error`` is the database's refusal, else None (a bug: 500)."""
    if isinstance(error, DatabaseBusy):
        return UNAVAILABLE
    if not isinstance(error, DBAPIError):
        return None
    kind = _SQLSTATES.get(getattr(error.orig, "sqlstate", None) or "")
    if kind:
        return kind
    message = str(error.orig)
    kind = next((kind for words, kind in _SQLITE_WORDS if words in message), None)
    if kind:
        return kind
    if error.connection_invalidated or isinstance(error, OperationalError) and _out_of_reach(error.orig):
        return UNAVAILABLE  # the connection was lost or could not be made
    return None


def _out_of_reach(driver_error: BaseException) -> bool:
    """The database could not be reached, as opposed to a statement it refused as wrong.

    Both are OperationalErrors: SQLite raises one for "no such table" (a migration not applied) too, which is a
    fault to fix and log as a 500, not a moment to wait for.
    """
    if isinstance(driver_error, sqlite3.Error):
        return "unable to open database file" in str(driver_error)
    sqlstate = getattr(driver_error, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GOING_AWAY
