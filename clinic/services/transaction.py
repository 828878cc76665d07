"""One transaction per action, with the write lock taken up front on SQLite."""

from __future__ import annotations

import fcntl
import os
import select
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from sqlalchemy import event, insert, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, make_transient_to_detached

from clinic.extensions import db

IMMEDIATE = "clinic_begin_immediate"
# On SQLite: run the connection's statements each in its own implicit transaction, with no BEGIN (read_connection).
NO_BEGIN = "clinic_no_begin"
# session.info: the session was set to read outside a database transaction (read_only_session) and must not write.
_READ_ONLY = "transaction.read_only"
# session.info: a transaction reached its COMMIT in this request (may_have_saved).
_MAY_HAVE_SAVED = "transaction.may_have_saved"
# SQLite's words for a connection that cannot write, whatever the file's state now (configure_sqlite).
UNWRITABLE_SQLITE_ERRORS = ("readonly database", "disk I/O error")
# SQLite engines -> the lock their write transactions queue on (see SQLiteWriterLock).
_WRITER_LOCKS: "weakref.WeakKeyDictionary[Engine, SQLiteWriterLock]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Actor:
    """Who acts and from where, passed from the view so services never read ``request``."""

    staff_id: int | None = None
    ip: str | None = None
    branch_id: int | None = None
    api_token: str | None = None  # the name of the integration API token the request came with
    # The patient themself, through their private progress link (clinic/services/consents.py): no staff member.
    patient_link: bool = False
    # A rule of the clinic's acting by itself, named in the audit log (audit.RETENTION_RULE): no staff member asked.
    rule: str | None = None


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
        # Deleted and overwritten content is zeroed, not left in free space: an erased patient's name must not
        # stay readable in the file (clinic/services/erasure.py). Debian builds SQLite so; other builds may not.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    if engine.url.database and engine.url.database != ":memory:":
        _WRITER_LOCKS[engine] = SQLiteWriterLock(f"{engine.url.database}.writer-lock", busy_timeout_ms / 1000)

    @event.listens_for(engine, "handle_error")
    def _reconnect_when_unwritable(context):
        """A connection SQLite opened read-only, or whose file failed, is dropped from the pool with the others.

        SQLite opens a file it may not write (made immutable or read-only for a moment) read-only without a
        word, and such a connection stays read-only: kept in the pool, it refused every write ("attempt to write
        a readonly database", every login too) until a restart, long after the file was writable again.
        """
        if isinstance(context.original_exception, sqlite3.OperationalError) and any(
                words in str(context.original_exception) for words in UNWRITABLE_SQLITE_ERRORS):
            context.is_disconnect = True

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        options = connection.get_execution_options()
        if options.get(NO_BEGIN):
            return
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if options.get(IMMEDIATE) else 'DEFERRED'}")


def configure_postgresql(engine: Engine) -> None:
    """Connections the server closed while they sat in the pool are replaced before use, not failed on.

    A PostgreSQL restart, a failover or ``pg_terminate_backend`` ends every idle connection; the server says so on
    the connection (an error message, then end of file) and nobody reads it until the next request uses the
    connection and fails. Asking the socket whether anything is waiting costs one system call at checkout, where
    ``pool_pre_ping``'s round trip to the server cost a third of a one-query page's CPU time (bench.inprocess
    --only progress --backend postgresql). A connection that dies in the moment between is an error like any other
    (the desk's "press again"), after which the pool replaces all its older connections.
    """

    @event.listens_for(engine, "checkout")
    def _replace_if_closed_by_server(dbapi_connection, _record, _proxy):
        if dbapi_connection.closed or _has_unread_data(dbapi_connection.fileno()):
            raise DisconnectionError("the server closed this connection while it was idle in the pool")


def _has_unread_data(fd: int) -> bool:
    """True when the socket has something to read (or was closed): an idle connection's server never writes."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


@contextmanager
def read_connection():
    """A connection for a page that only reads, taken from the pool as cheaply as the database allows.

    No transaction on either database: each statement reads its own consistent snapshot, as it would at
    PostgreSQL's READ COMMITTED inside a transaction, so a transaction gave such a page nothing. On
    PostgreSQL its BEGIN and the ROLLBACK at the request's end were two more round trips to the server (on
    the one-query invite page, two thirds of the trips); on SQLite the BEGIN was a statement of its own
    (about 5 % of a progress page's CPU), and with no transaction open the closing rollback does nothing.
    The connection comes straight from the engine, not through the ORM session, whose transaction
    bookkeeping cost about as much again. A page whose statements must agree reads them in one statement
    (the progress query's EXISTS columns). Only for pages that never write: a write here would commit at
    once. A session that has already begun a transaction lends its connection instead.
    """
    if db.session.registry.has() and db.session().in_transaction():
        yield db.session.connection()
        return
    with db.engine.connect() as connection:
        connection.execution_options(**_no_transaction(connection.dialect.name))
        yield connection


def _no_transaction(dialect: str) -> dict:
    """The execution options under which a connection's statements run without a database transaction.

    On SQLite pysqlite's own transaction handling is off (configure_sqlite): with no BEGIN, each statement
    commits (or, for a read, ends) by itself. On PostgreSQL, autocommit.
    """
    return {NO_BEGIN: True} if dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"}


def read_only_session() -> None:
    """Let the ORM session read on a connection that opens no database transaction: for an action that only reads.

    What ``read_connection`` does for the public pages, for a staff action that reads through the ORM (every staff
    page opened with GET, the desk's code lookup before each redemption). Otherwise its transaction ends in a
    rollback, which on PostgreSQL costs a BEGIN and a ROLLBACK and makes psycopg drop every statement it had prepared
    on the connection (``DEALLOCATE ALL``), so the redemption that follows would find none of its statements
    prepared. Each statement reads its own snapshot, as at PostgreSQL's READ COMMITTED inside a transaction.

    A session already in a transaction is left as it is; ``atomic()`` after this begins a real transaction on a
    fresh connection, as always. A write outside ``atomic()`` (an ORM flush or INSERT/UPDATE/DELETE, or this
    module's INSERT helpers) raises ``WriteInReadOnlySession`` instead of committing statement by statement.
    """
    session = db.session()
    if session.in_transaction():
        return
    session.info[_READ_ONLY] = True
    session.connection(execution_options=_no_transaction(session.get_bind().dialect.name))


class WriteInReadOnlySession(RuntimeError):
    """A write in a session that reads outside a transaction (read_only_session): a bug in the caller.

    Each statement there commits by itself, so a write would be neither atomic nor rolled back at the request's end
    as an unfinished write used to be. Writes belong in ``atomic()``, which a read-only session may still enter.
    """


def _refuse_writes_when_read_only(session) -> None:
    """For this module's own INSERT helpers, which write on the session's connection without a flush."""
    if session.info.get(_READ_ONLY):
        raise WriteInReadOnlySession("this session only reads: write inside atomic()")


@event.listens_for(Session, "before_flush")
def _refuse_flush_when_read_only(session, _flush_context, _instances):
    _refuse_writes_when_read_only(session)


@event.listens_for(Session, "do_orm_execute")
def _refuse_dml_when_read_only(execute_state):
    if execute_state.is_insert or execute_state.is_update or execute_state.is_delete:
        _refuse_writes_when_read_only(execute_state.session)


class SQLiteWriterLock:
    """An OS file lock that SQLite write transactions take before ``BEGIN IMMEDIATE``, so they queue without sleeping.

    SQLite lets one writer in at a time and makes the others poll: a writer that finds the database
    locked sleeps 1, 2, 5, 10 … ms and tries again, and the CPU idles while it sleeps past the moment the
    lock came free. With two gunicorn workers redeeming, that polling, not the work, set the pace (about
    100 redemptions a second whatever the redemption cost). A blocked ``flock`` wakes as soon as the lock
    is released. SQLite still decides: the busy timeout stays for writers that do not take this lock (the
    migrations, another program); this only orders the writers that do.

    One open file per thread and process (locks on separate opens exclude each other, also within one
    process); reopened after a fork, since a forked child shares its parent's open file and lock.

    The wait is bounded, like SQLite's own busy timeout: a writer that cannot have the lock within
    ``wait_seconds`` (a transaction stuck behind another program's) raises :class:`DatabaseBusy` rather
    than keeping its worker, and the desk, waiting until gunicorn kills it.
    """

    # The longest sleep between two tries while another writer holds the lock: how late a waiter may notice.
    POLL_SECONDS = 0.001

    def __init__(self, path: str, wait_seconds: float = 15.0):
        self.path = path
        self.wait_seconds = wait_seconds
        self.local = threading.local()

    @contextmanager
    def held(self, wait_seconds: float | None = None):
        """The lock, waiting at most ``wait_seconds`` (this lock's own wait when None) before DatabaseBusy."""
        local = self.local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            opened = getattr(local, "file", None)
            if opened is None or opened.pid != os.getpid():
                local.file = opened = _LockFile(self.path)
            self._lock(opened.fd, self.wait_seconds if wait_seconds is None else wait_seconds)
        local.depth = depth + 1
        try:
            yield
        finally:
            local.depth -= 1
            if local.depth == 0:
                fcntl.flock(local.file.fd, fcntl.LOCK_UN)

    def _lock(self, fd: int, wait_seconds: float) -> None:
        """Take the lock at once when it is free (every write does: one system call), else try again every
        millisecond or so until ``wait_seconds`` have passed.

        A blocking ``flock`` cannot be given a time limit (a signal could interrupt it only on the main thread);
        short sleeps cost a waiter at most about a millisecond after the lock comes free, where SQLite's own
        back-off sleeps up to 100 ms.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + wait_seconds
        pause = self.POLL_SECONDS / 8
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(f"{self.path}: another writer held the lock for {wait_seconds:g} s")
            pause = min(pause * 2, self.POLL_SECONDS)


class DatabaseBusy(RuntimeError):
    """A write waited its time for another writer and gave up: nothing was written, the action may be tried again."""


class _LockFile:
    """One thread's open lock file; closed when the thread ends (its thread-local data goes with it).

    Opened read-only and created readable by all (it holds nothing; ``flock`` needs no write access): a file a
    command run as another user created first does not lock the app's own user out of every write.
    """

    def __init__(self, path: str):
        self.fd, self.pid = None, os.getpid()
        self.fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)

    def __del__(self):
        if self.fd is not None and self.pid == os.getpid():  # a forked child's copy is its parent's to close
            os.close(self.fd)


def check_database(lock_wait_ms: int = 1000) -> None:
    """Raise the database's own error unless it answers and, on SQLite, would take a write now (``/healthz``).

    SQLite opens a file it cannot write read-only without a word, and then reads fine: only a write tells. So on
    SQLite this takes the write lock (waiting ``lock_wait_ms`` at most) and writes nothing, then rolls back. A
    connection that failed is dropped from the pool (it may be the read-only one, or keep the short wait).
    """
    session = db.session()
    if session.in_transaction():
        session.rollback()
    connection = session.connection(execution_options=_no_transaction(session.get_bind().dialect.name))
    if connection.dialect.name != "sqlite":
        connection.exec_driver_sql("SELECT 1")
        return
    try:
        busy_timeout_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(lock_wait_ms)}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.exec_driver_sql("UPDATE clinics SET id = id WHERE 0")  # refused on a read-only connection
        connection.exec_driver_sql("ROLLBACK")
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except Exception:
        if not connection.invalidated:
            connection.invalidate()
        raise


def may_have_saved() -> bool:
    """True once this session committed a write transaction, or tried to, since ``forget_saves()``.

    What an error page may honestly say: "nothing was saved" only while this is False.
    """
    return db.session.registry.has() and db.session().info.get(_MAY_HAVE_SAVED, False)


def forget_saves() -> None:
    """At the start of a request: commits of an earlier one on the same session (tests reuse it) do not count."""
    if db.session.registry.has():
        db.session().info.pop(_MAY_HAVE_SAVED, None)


@contextmanager
def atomic(*, keep_loaded: bool = False, lock_wait_seconds: float | None = None):
    """Run the block as one write transaction: commit everything, or roll back everything.

    Any read-only transaction already open in this session (Flask-Login loading the user,
    say) is ended first so that the write transaction starts fresh with its lock.

    ``keep_loaded``: after the commit, objects keep the values this transaction read and wrote
    (they are what was committed) instead of being read again on their next use; for an answer
    built from the action's own rows, such as the desk's redemption receipt. A rollback still
    forgets everything.

    ``lock_wait_seconds``: on SQLite, how long to queue for the writer lock before DatabaseBusy (the lock's own
    wait, the busy timeout, when None); for a write that had rather be skipped than keep a page waiting.
    """
    session = db.session()
    if session.in_transaction():
        session.rollback()
    session.info.pop(_READ_ONLY, None)  # this one is a real transaction
    writer_lock = _WRITER_LOCKS.get(session.get_bind())
    with writer_lock.held(lock_wait_seconds) if writer_lock else nullcontext():
        session.connection(execution_options={IMMEDIATE: True})
        expire_on_commit = session.expire_on_commit
        try:
            yield session
            if keep_loaded:
                session.expire_on_commit = False
            session.info[_MAY_HAVE_SAVED] = True  # from here on an error cannot tell whether the COMMIT arrived
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.expire_on_commit = expire_on_commit


# (dialect, table) -> its INSERT … ON CONFLICT DO NOTHING RETURNING key, and (table, column left alone if taken,
# dialect) -> its INSERT … RETURNING * with the (attribute, column) pairs it returns:
# built once, since building a statement and its cache key costs SQLAlchemy about as much as running it.
_INSERTS_IGNORING_DUPLICATES: dict = {}
_INSERTS_RETURNING_ROW: dict = {}
_WRITTEN = "transaction.written"  # session.info: the objects insert_row wrote in the current transaction


def upsert_capable_insert(dialect: str, table):
    """The dialect's own INSERT for ``table`` (it has ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def insert_ignoring_duplicates(model, values: dict) -> bool:
    """INSERT … ON CONFLICT DO NOTHING in the current transaction; True when the row was inserted.

    The database decides: of two transactions inserting the same key, one inserts and the other
    (after waiting for the first to commit, on PostgreSQL) gets False, with no error to recover from.
    """
    return bool(insert_new_rows(model, [values]))


def insert_new_rows(model, rows: list[dict]) -> list:
    """:func:`insert_ignoring_duplicates` for several rows in one statement; returns the primary keys inserted."""
    session = db.session()
    _refuse_writes_when_read_only(session)
    dialect = session.get_bind().dialect.name
    statement = _INSERTS_IGNORING_DUPLICATES.get((dialect, model))
    if statement is None:
        table = model.__table__
        # A Core INSERT on the table with RETURNING: an ORM-enabled INSERT reports no rowcount on PostgreSQL,
        # and takes the ORM's bulk path, several times slower, for one row.
        statement = upsert_capable_insert(dialect, table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        _INSERTS_IGNORING_DUPLICATES[dialect, model] = statement
    # On the session's connection: the ORM's execution path costs more than the Core statement it wraps.
    return session.connection().execute(statement, rows if len(rows) > 1 else rows[0]).all()


def insert_row(instance):
    """Write a new ORM object with one INSERT … RETURNING, and put it in the session as if just loaded.

    For the rows of a busy action (a redemption writes a dozen): the unit of work's flush costs several
    times more than the INSERT itself. The object's column values are sent as they are, the columns'
    defaults fill the others, and every column comes back from the database, so the object reads like
    one loaded by a query (no pending changes, nothing expired). Relationships set on the object are
    kept as loaded values; their foreign key columns must be set too (nothing is synchronised here).
    Returns the object.

    Objects still pending in the session are flushed first, as a query would, so that the row may
    refer to them. If the transaction rolls back, the object leaves the session, as a flushed new
    object does: its id may be given again to another row.
    """
    return insert_rows([instance], match_on=None)[0]


def insert_row_unless_taken(instance):
    """:func:`insert_row`, unless another row already holds one of the object's unique values: then None.

    INSERT … ON CONFLICT DO NOTHING (every unique constraint of the table): the database checks a freshly
    drawn code, or a phone number someone may already have, in the same statement that writes the row, and a
    conflict is an answer (None) rather than a failed statement. The caller finds out which value was taken.
    """
    written = insert_rows([instance], match_on=None, unless_taken=True)
    return written[0] if written else None


def insert_rows(instances: list, *, match_on: str | None, unless_taken: bool = False) -> list:
    """:func:`insert_row` for several new objects of one model, all written by one multi-row INSERT … RETURNING.

    Every object must give the same columns. The database may return the rows in any order: ``match_on``
    names a column whose given values tell the objects apart (a voucher's code, a reward's beneficiary).
    Returns the objects, in the order given. ``unless_taken``: see :func:`insert_row_unless_taken`.
    """
    if not instances:
        return []
    session = db.session()
    _refuse_writes_when_read_only(session)
    if session.new or session.dirty:
        session.flush()
    mapper = inspect(instances[0]).mapper
    table = mapper.local_table
    dialect = session.get_bind().dialect.name if unless_taken else None
    written = _INSERTS_RETURNING_ROW.get((table, unless_taken, dialect))
    if written is None:
        columns = tuple((prop.key, prop.columns[0]) for prop in mapper.column_attrs)
        statement = upsert_capable_insert(dialect, table).on_conflict_do_nothing() if unless_taken else insert(table)
        written = _INSERTS_RETURNING_ROW[table, unless_taken, dialect] = (
            statement.returning(*(column for _key, column in columns)), columns)
    statement, columns = written
    parameters = [{column.key: given[key] for key, column in columns if key in given}
                  for given in (instance.__dict__ for instance in instances)]
    # On the session's connection: the ORM's execution path costs more than the Core statement it wraps.
    rows = session.connection().execute(statement, parameters if len(parameters) > 1 else parameters[0]).all()
    if unless_taken and not rows:
        return []
    if len(rows) != len(instances):
        raise RuntimeError(f"{table.name}: {len(instances)} rows written, {len(rows)} returned")
    if len(instances) > 1:
        position = next(index for index, (key, _column) in enumerate(columns) if key == match_on)
        by_value = {row[position]: row for row in rows}
        rows = [by_value[instance.__dict__[match_on]] for instance in instances]
    identity_map = session.identity_map
    written_now = session.info.setdefault(_WRITTEN, [])
    for instance, row in zip(instances, rows):
        # Written straight into the object's state: make_transient_to_detached then marks every value committed.
        instance.__dict__.update(zip((key for key, _column in columns), row))
        make_transient_to_detached(instance)
        # A copy left in the session for a row that no longer exists (the database was restored) gives way,
        # as it does to a flushed new object with the same id.
        stale = identity_map.get(inspect(instance).key)
        if stale is not None:
            session.expunge(stale)
        session.add(instance)
        written_now.append(instance)
    return instances


@event.listens_for(Session, "after_commit")
def _keep_written(session: Session) -> None:
    session.info.pop(_WRITTEN, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_written(session: Session, transaction) -> None:
    """Rolled back (a commit kept them, above): the rows are gone, so their objects leave the session."""
    if transaction.parent is None:
        for instance in session.info.pop(_WRITTEN, ()):
            if instance in session:
                session.expunge(instance)
