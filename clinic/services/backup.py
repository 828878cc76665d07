"""Backing up and restoring the SQLite database, safely while the app runs.

A plain file copy of a live SQLite database can catch a write half-done, and misses whatever
still sits in the ``-wal`` file. SQLite's online backup API instead copies one consistent
snapshot (in WAL mode the app's writers carry on meanwhile). Every copy is written to a temporary
file next to its destination, checked, and only then renamed into place, so a destination is
never a half-written or damaged file.

PostgreSQL has ``pg_dump`` and ``pg_restore`` for this; we say how to use them rather than
imitate them.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from flask import Flask, current_app

from clinic.extensions import db
from clinic.models._time import utcnow
from clinic.services.errors import Refused

COUNTED_TABLES = ("patients", "referrals", "vouchers")
CLINIC_TABLES = {"patients", "referrals", "vouchers", "audit_events"}
SQLITE_HEADER = b"SQLite format 3\x00"

POSTGRESQL_HELP = """This database is PostgreSQL ({address}): use PostgreSQL's own tools.
Back up (safe while the app runs, one consistent snapshot):
    pg_dump --format=custom --file=clinic.dump "$DATABASE_URL"
Restore (stop the app first; replaces every table):
    pg_restore --clean --if-exists --no-owner --dbname="$DATABASE_URL" clinic.dump
$DATABASE_URL is the database's postgresql:// address, with its password."""


@dataclass(frozen=True)
class DatabaseSummary:
    """What a database file holds, as an admin checks it: where, how big, which schema, how much."""

    path: Path
    size: int
    revision: str | None
    counts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        counted = ", ".join(f"{table} {number}" for table, number in self.counts.items())
        return f"{self.path} ({self.size:,} bytes, revision {self.revision or 'unknown'}: {counted})"


@dataclass(frozen=True)
class RestoreResult:
    restored: DatabaseSummary  # the live database as it now is
    safety_copy: DatabaseSummary  # the live database as it was
    safety_copy_problems: list[str]  # the old live database was already damaged: kept anyway
    head: str  # the newest revision this code knows; the restored one may be older

    @property
    def needs_upgrade(self) -> bool:
        return self.restored.revision != self.head


def live_database_path() -> Path:
    """The live SQLite file, or a refusal that says what to do instead."""
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        address = url.set(drivername="postgresql").render_as_string(hide_password=True)
        raise Refused("use_pg_dump", POSTGRESQL_HELP.format(address=address))
    if url.get_backend_name() != "sqlite":
        raise Refused("unsupported_database", f"Backups of {url.get_backend_name()} databases are not supported.")
    if not url.database or url.database == ":memory:":
        raise Refused("no_database_file", "This database lives in memory: there is no file to back up.")
    return Path(url.database).resolve()


def backup_database(dest: Path, *, overwrite: bool = False) -> DatabaseSummary:
    """Copy the live database to ``dest`` as one consistent, checked, self-contained file."""
    live = live_database_path()
    dest = _destination(dest, live, overwrite)
    with closing(_connect_live(live)) as source:
        summary, _problems = _copy_database(source, dest, keep_if_damaged=False)
    return summary


# Beside the live database: every long-running process of the app (gunicorn, the job worker, the webhook sender) holds
# a shared lock on it while it lives; a restore takes it exclusively. The kernel drops a lock with its process, so a
# crashed server never leaves the restore locked out.
IN_USE_SUFFIX = ".in-use"
_HELD_WHILE_SERVING: list[int] = []


def _in_use_lock_file(live: Path) -> int:
    # Read-only and readable by all, like the writer lock (services/transaction.py): flock needs no write access.
    return os.open(f"{live}{IN_USE_SUFFIX}", os.O_RDONLY | os.O_CREAT, 0o644)


def hold_while_serving(app: Flask) -> None:
    """Mark the SQLite database as in use for as long as this process lives, so that `flask restore` refuses.

    Called by the processes that write at any moment: gunicorn's master (its workers inherit the lock), `flask
    worker` and `flask deliver-webhooks`. Waits while a restore runs. Nothing to do for PostgreSQL.
    """
    with app.app_context():
        url = db.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return
        live = Path(url.database).resolve()
    fd = _in_use_lock_file(live)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD_WHILE_SERVING.append(fd)


@contextmanager
def _nothing_else_running(live: Path) -> Iterator[None]:
    """Hold the database for the restore alone; refuse while the app runs (its writes would be lost or torn)."""
    fd = _in_use_lock_file(live)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused("app_running", "The app is running and writing to this database (the web server, the job "
                                         "worker or the webhook sender): stop it first, e.g. `systemctl stop "
                                         "clinic-web clinic-worker clinic-webhooks`. Nothing was restored.") from None
        yield
    finally:
        os.close(fd)


def restore_database(src: Path, confirm: Callable[[DatabaseSummary, DatabaseSummary], bool]) -> RestoreResult | None:
    """Replace the live database with the backup ``src``, after keeping a safety copy of it.

    ``src`` must be an undamaged clinic database at a revision this code knows (an older one is
    fine: ``flask db upgrade`` then brings it up to date), and the app must be stopped
    (:func:`hold_while_serving`). ``confirm(backup, live)`` is asked before anything changes; when
    it says no, nothing does and None is returned.
    """
    live = live_database_path()
    src = _backup_file(src, live)
    known, head = _known_revisions()
    with _nothing_else_running(live), closing(_connect_read_only(src)) as candidate:
        backup = _checked_backup(candidate, src, known)
        with closing(_connect_live(live)) as target:
            current = _summarise(target, live)
            if not confirm(backup, current):
                return None
            try:
                safety, problems = _copy_database(target, _safety_copy_path(live), keep_if_damaged=True)
            except Refused as refusal:
                raise Refused("no_safety_copy", f"{refusal.message} Without a safety copy of the live database "
                                                f"nothing was restored. If the live database is beyond copying, "
                                                f"stop the app, move {live} (and any -wal and -shm files beside "
                                                f"it) away and copy {src} in its place.") from None
            try:
                candidate.backup(target)
            except sqlite3.Error as error:
                raise Refused("restore_failed", f"Could not copy {src} into {live} ({error}); the database is as it "
                                                f"was, and a copy of it is at {safety.path}.") from None
            restored = _summarise(target, live)
    db.engine.dispose()  # no pooled connection of this process may keep a view of the old file
    return RestoreResult(restored, safety, problems, head)


def _destination(dest: Path, live: Path, overwrite: bool) -> Path:
    dest = dest.expanduser().absolute()
    if dest.resolve() == live:
        raise Refused("dest_is_live", f"{dest} is the live database itself: choose another file.")
    if dest.is_dir():
        raise Refused("dest_is_directory",
                      f"{dest} is a directory: give the backup's file name, e.g. {dest / 'clinic.db'}.")
    if dest.exists() and not overwrite:
        raise Refused("dest_exists", f"{dest} already exists: choose a new name, or add --force to replace it.")
    if not dest.parent.exists():
        raise Refused("dest_folder_missing", f"The folder {dest.parent} does not exist.")
    if not dest.parent.is_dir():
        raise Refused("dest_folder_not_a_folder", f"{dest.parent} is a file, not a folder.")
    return dest


def _backup_file(src: Path, live: Path) -> Path:
    src = src.expanduser().absolute()
    if not src.exists():
        raise Refused("src_missing", f"{src} does not exist.")
    if src.is_dir():
        raise Refused("src_is_directory", f"{src} is a directory, not a backup file.")
    if src.resolve() == live:
        raise Refused("src_is_live", f"{src} is the live database itself.")
    try:
        with src.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        raise Refused("src_unreadable", f"Cannot read {src}: {error.strerror}.") from None
    if header != SQLITE_HEADER:
        raise Refused("not_sqlite", f"{src} is not a SQLite database file.")
    return src


def _checked_backup(candidate: sqlite3.Connection, src: Path, known_revisions: set[str]) -> DatabaseSummary:
    problems = _integrity_problems(candidate)
    if problems:
        raise Refused("src_damaged", f"{src} is damaged and was not restored: {'; '.join(problems[:5])}")
    tables = _tables(candidate)
    if not CLINIC_TABLES <= tables:
        raise Refused("not_a_clinic_database", f"{src} is a SQLite database but not a clinic database "
                                               f"(it has no {', '.join(sorted(CLINIC_TABLES - tables))} table).")
    summary = _summarise(candidate, src)
    if summary.revision is None:
        raise Refused("unknown_revision", f"{src} records no schema revision (no alembic_version table), so it "
                                          "cannot be checked against this version of the app.")
    if summary.revision not in known_revisions:
        raise Refused("unknown_revision", f"{src} is at schema revision {summary.revision}, which this version of "
                                          "the app does not know (a newer version made it?): restore it with the "
                                          "version that made it.")
    return summary


def _copy_database(source: sqlite3.Connection, dest: Path, *,
                   keep_if_damaged: bool) -> tuple[DatabaseSummary, list[str]]:
    """Back ``source`` up into a temporary file beside ``dest``, check it, and rename it to ``dest``."""
    try:
        handle, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    except OSError as error:
        raise Refused("dest_not_writable", f"Cannot write to {dest.parent}: {error.strerror}.") from None
    os.close(handle)
    partial = Path(name)
    try:
        with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            source.backup(copy)  # all pages in one step: a single consistent snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            problems = _integrity_problems(copy)
            if problems and not keep_if_damaged:
                raise Refused("copy_damaged", f"The copy failed its integrity check, so {dest} was not written: "
                                              f"{'; '.join(problems[:5])}")
            summary = _summarise(copy, partial)
        _flush_to_disk(partial)
        os.replace(partial, dest)
        _flush_to_disk(dest.parent)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, (sqlite3.Error, OSError)):
            raise Refused("copy_failed", f"Could not write {dest}: {error}.") from None
        raise
    return DatabaseSummary(dest, dest.stat().st_size, summary.revision, summary.counts), problems


def _safety_copy_path(live: Path) -> Path:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    candidate = live.with_name(f"{live.stem}-before-restore-{stamp}{live.suffix}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = live.with_name(f"{live.stem}-before-restore-{stamp}-{number}{live.suffix}")
    return candidate


def _connect_live(path: Path) -> sqlite3.Connection:
    """A connection of its own to the live file, waiting for the app's writers as the app does."""
    timeout = current_app.config["SQLITE_BUSY_TIMEOUT_MS"] / 1000
    return sqlite3.connect(path, timeout=timeout, isolation_level=None)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise Refused("src_unreadable", f"Cannot open {path}: {error}.") from None


def _integrity_problems(connection: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` and ``foreign_key_check`` find wrong; empty when all is well."""
    try:
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if problems == ["ok"]:
            problems = []
        problems += [f"a row of {table} (rowid {rowid}) points at a missing {parent}"
                     for table, rowid, parent, _key in connection.execute("PRAGMA foreign_key_check")]
    except sqlite3.DatabaseError as error:
        return [str(error)]
    return problems


def _tables(connection: sqlite3.Connection) -> set[str]:
    return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _summarise(connection: sqlite3.Connection, path: Path) -> DatabaseSummary:
    """Revision and row counts; left out where a damaged file cannot tell them."""
    revision, counts = None, {}
    try:
        tables = _tables(connection)
        if "alembic_version" in tables:
            revision = ",".join(row[0] for row in connection.execute("SELECT version_num FROM alembic_version")) or None
        for table in COUNTED_TABLES:
            if table in tables:
                counts[table] = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        pass
    return DatabaseSummary(path, path.stat().st_size, revision, counts)


def _known_revisions() -> tuple[set[str], str]:
    scripts = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())
    return {script.revision for script in scripts.walk_revisions()}, scripts.get_current_head()


def _flush_to_disk(path: Path) -> None:
    """fsync a file, or a folder after a rename, so that the backup survives a power cut."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
