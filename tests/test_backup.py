"""flask backup / flask restore: consistent copies of a live SQLite database, and refusals for everything else."""

import os
import sqlite3
import subprocess
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from flask_migrate import stamp
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Branch, Patient, Referral, Voucher
from clinic.services import backup as backup_service
from clinic.services import branches, redemption, vouchers
from clinic.services.patients import PatientDetails
from clinic.services.transaction import Actor
from tests.conftest import friend
from tests.liveserver import PROJECT_ROOT, VENV_BIN, gunicorn, migrate, server_environment

SQLITE_ONLY = pytest.mark.parametrize("app", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("app", [pytest.param("postgresql", marks=pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"), reason="needs TEST_DATABASE_URL"))], indirect=True)


def live_path() -> Path:
    return Path(db.engine.url.database)


def invoke(app, *args, input=None):
    return app.test_cli_runner().invoke(args=[str(arg) for arg in args], input=input)


def query(path: Path, sql: str):
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchone()[0]


def live_counts() -> dict:
    db.session.rollback()
    return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
            for model in (Patient, Referral, Voucher, Branch)}


def safety_copies() -> list[Path]:
    return sorted(live_path().parent.glob("*-before-restore-*"))


def backup_files(folder: Path) -> list[Path]:
    """Everything in the folder but the live database and its -wal and -shm files."""
    return sorted(path for path in folder.rglob("*") if not path.name.startswith(live_path().name))


def assert_whole(path: Path, referrers: int) -> int:
    """The invariants every committed redemption leaves behind; returns the number of referrals."""
    with closing(sqlite3.connect(path)) as connection:
        def one(sql):
            return connection.execute(sql).fetchone()[0]

        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        referrals = one("SELECT count(*) FROM referrals")
        assert one("SELECT count(*) FROM patients") == referrers + referrals  # each redemption enrols one friend
        assert one("SELECT count(*) FROM audit_events WHERE action = 'redemption' AND outcome = 'ok'") == referrals
        # Both sides paid for every referral, each voucher issued once in the audit log and promised by one reward.
        assert one("SELECT count(*) FROM referrals WHERE id NOT IN (SELECT referral_id FROM vouchers "
                   "GROUP BY referral_id HAVING count(*) = 2 AND count(DISTINCT beneficiary) = 2)") == 0
        vouchers_issued = one("SELECT count(*) FROM vouchers")
        assert vouchers_issued == 2 * referrals
        assert one("SELECT count(*) FROM audit_events WHERE action = 'voucher.issued' AND outcome = 'ok'") \
            == one("SELECT count(DISTINCT voucher_id) FROM audit_events WHERE action = 'voucher.issued'") \
            == vouchers_issued
        assert one("SELECT count(*) FROM rewards JOIN vouchers ON vouchers.id = rewards.voucher_id "
                   "AND vouchers.referral_id = rewards.referral_id WHERE rewards.status = 'issued'") == vouchers_issued
        # The yearly cap counters agree with the referrer vouchers they count.
        assert one("SELECT coalesce(sum(rewarded_count), 0) FROM referrer_year_totals") == referrals
        assert one("SELECT coalesce(sum(rewarded_value), 0) FROM referrer_year_totals") \
            == one("SELECT coalesce(sum(amount), 0) FROM vouchers WHERE beneficiary = 'referrer' AND kind = 'money'")
    return referrals


@pytest.fixture
def head(app) -> str:
    """The test schema recorded as the newest revision, as `flask db upgrade` leaves a real database."""
    stamp()
    return query(live_path(), "SELECT version_num FROM alembic_version")


@SQLITE_ONLY
def test_a_backup_taken_during_a_stream_of_redemptions_is_whole(app, make_patient, actor, tmp_path):
    codes = [make_patient()[0].personal_code for _ in range(3)]
    committed, errors = [], []
    stop = threading.Event()

    def desk(number):
        with app.app_context():
            try:
                for n in range(200):
                    if stop.is_set():
                        return
                    details = PatientDetails(full_name=f"Friend {number}-{n}", phone=f"139{number}{n:07d}")
                    committed.append(redemption.redeem_code(codes[number], details, actor).referral.id)
            except Exception as error:  # noqa: BLE001 - a crash is what the test must see
                errors.append(repr(error))
            finally:
                db.session.remove()

    def wait_for(count):
        deadline = time.monotonic() + 60
        while len(committed) < count and not errors and time.monotonic() < deadline:
            time.sleep(0.01)

    desks = [threading.Thread(target=desk, args=(number,)) for number in range(len(codes))]
    for thread in desks:
        thread.start()
    try:
        wait_for(6)
        result = invoke(app, "backup", tmp_path / "during.db")
        wait_for(len(committed) + 6)  # the stream carried on after the copy was taken
    finally:
        stop.set()
        for thread in desks:
            thread.join(timeout=60)

    assert errors == []
    assert result.exit_code == 0, result.output
    in_copy = assert_whole(tmp_path / "during.db", referrers=len(codes))
    in_live = assert_whole(live_path(), referrers=len(codes))
    assert 6 <= in_copy < in_live == len(committed)
    assert f"referrals {in_copy}, vouchers {2 * in_copy})" in result.output


@SQLITE_ONLY
def test_backup_says_what_it_wrote(app, head, referrer, actor, tmp_path):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    dest = tmp_path / "backups" / "clinic.db"
    dest.parent.mkdir()

    result = invoke(app, "backup", dest)

    assert result.exit_code == 0, result.output
    size = dest.stat().st_size
    assert f"Backed up to {dest} ({size:,} bytes, revision {head}: patients 2, referrals 1, vouchers 2)" \
        in result.output
    assert "integrity check" in result.output
    assert query(dest, "PRAGMA journal_mode") == "delete"  # one self-contained file
    assert sorted(path.name for path in dest.parent.iterdir()) == ["clinic.db"]  # no temporary file left behind


@SQLITE_ONLY
def test_restore_brings_back_the_backup_and_keeps_the_database_it_replaced(app, head, referrer, actor, tmp_path):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert invoke(app, "backup", tmp_path / "backup.db").exit_code == 0
    at_backup = live_counts()
    later = redemption.redeem_code(referrer.personal_code, friend("Later Friend", "13955556666"), actor)
    vouchers.spend_voucher(later.friend_voucher.code, actor)
    branches.create_branch("Made after the backup", "", actor)
    before_restore = live_counts()

    result = invoke(app, "restore", tmp_path / "backup.db", "--yes")

    assert result.exit_code == 0, result.output
    assert live_counts() == at_backup
    [safety] = safety_copies()
    assert f"Kept a safety copy of the current database: {safety}" in result.output
    assert query(safety, "SELECT count(*) FROM branches") == before_restore["branches"]
    assert query(safety, "SELECT count(*) FROM vouchers WHERE status = 'spent'") == 1
    assert query(safety, "PRAGMA integrity_check") == "ok"
    assert "db upgrade" not in result.output
    # The restored database works as the live one: redeeming again carries on from the backup.
    redemption.redeem_code(referrer.personal_code, friend("Later Friend", "13955556666"), actor)
    assert live_counts()["referrals"] == at_backup["referrals"] + 1


@SQLITE_ONLY
def test_restore_asks_first_and_changes_nothing_when_told_no(app, head, referrer, tmp_path):
    assert invoke(app, "backup", tmp_path / "backup.db").exit_code == 0
    branches.create_branch("Made after the backup", "", Actor())
    before = live_counts()

    result = invoke(app, "restore", tmp_path / "backup.db", input="n\n")

    assert result.exit_code != 0
    assert "Replace the current database with the backup?" in result.output
    assert "Nothing was restored" in result.output
    assert live_counts() == before
    assert safety_copies() == []


@SQLITE_ONLY
def test_restoring_an_older_revision_says_to_upgrade(app, head, tmp_path):
    assert invoke(app, "backup", tmp_path / "backup.db").exit_code == 0
    with closing(sqlite3.connect(tmp_path / "backup.db")) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = '005b014faeab'")

    result = invoke(app, "restore", tmp_path / "backup.db", "--yes")

    assert result.exit_code == 0, result.output
    assert "run `flask --app wsgi db upgrade`" in result.output


def existing_file(tmp_path):
    (tmp_path / "old.db").write_bytes(b"an older backup")
    return tmp_path / "old.db"


@SQLITE_ONLY
@pytest.mark.parametrize("dest, message", [
    (existing_file, "already exists: choose a new name, or add --force"),
    (lambda tmp_path: tmp_path, "is a directory"),
    (lambda tmp_path: tmp_path / "missing" / "backup.db", "does not exist"),
    (lambda tmp_path: existing_file(tmp_path) / "backup.db", "is a file, not a folder"),
    (lambda tmp_path: live_path(), "is the live database itself"),
])
def test_backup_refuses_a_bad_destination(app, tmp_path, dest, message):
    dest = dest(tmp_path)
    before = backup_files(tmp_path)

    result = invoke(app, "backup", dest)

    assert result.exit_code != 0
    assert message in result.output
    assert backup_files(tmp_path) == before
    if dest.name == "old.db":
        assert dest.read_bytes() == b"an older backup"


@SQLITE_ONLY
def test_backup_replaces_an_existing_file_only_with_force(app, tmp_path):
    dest = existing_file(tmp_path)
    result = invoke(app, "backup", dest, "--force")
    assert result.exit_code == 0, result.output
    assert query(dest, "PRAGMA integrity_check") == "ok"


def damaged_backup(tmp_path):
    """A real backup with one of its table pages overwritten: the header still says SQLite."""
    path = tmp_path / "damaged.db"
    with closing(sqlite3.connect(live_path())) as live, closing(sqlite3.connect(path)) as copy:
        live.backup(copy)
        page_size = copy.execute("PRAGMA page_size").fetchone()[0]
        root = copy.execute("SELECT rootpage FROM sqlite_master WHERE name = 'patients'").fetchone()[0]
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    return path


def plain_sqlite_file(tmp_path, *statements):
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as connection:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    return path


def backup_at_revision(tmp_path, revision):
    path = tmp_path / "backup.db"
    with closing(sqlite3.connect(live_path())) as live, closing(sqlite3.connect(path)) as copy:
        live.backup(copy)
        copy.execute("DELETE FROM alembic_version")
        if revision:
            copy.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        else:
            copy.execute("DROP TABLE alembic_version")
        copy.commit()
    return path


def empty_file(tmp_path):
    (tmp_path / "empty.db").touch()
    return tmp_path / "empty.db"


def text_file(tmp_path):
    (tmp_path / "notes.db").write_text("not a database at all\n" * 100)
    return tmp_path / "notes.db"


@SQLITE_ONLY
@pytest.mark.parametrize("src, message", [
    (lambda tmp_path: tmp_path / "missing.db", "does not exist"),
    (lambda tmp_path: tmp_path, "is a directory, not a backup file"),
    (text_file, "is not a SQLite database file"),
    (empty_file, "is not a SQLite database file"),
    (damaged_backup, "is damaged and was not restored"),
    (lambda tmp_path: plain_sqlite_file(tmp_path, "CREATE TABLE notes (body TEXT)"), "not a clinic database"),
    (lambda tmp_path: backup_at_revision(tmp_path, None), "records no schema revision"),
    (lambda tmp_path: backup_at_revision(tmp_path, "ffffffffffff"),
     "is at schema revision ffffffffffff, which this version of the app does not know"),
    (lambda tmp_path: live_path(), "is the live database itself"),
])
def test_restore_refuses_a_bad_backup_and_changes_nothing(app, head, referrer, tmp_path, src, message):
    src = src(tmp_path)
    before = live_counts()

    result = invoke(app, "restore", src, "--yes")

    assert result.exit_code != 0
    assert message in result.output
    assert live_counts() == before
    assert safety_copies() == []


@POSTGRESQL_ONLY
@pytest.mark.parametrize("command", ["backup", "restore"])
def test_postgresql_is_left_to_pg_dump_and_pg_restore(app, tmp_path, command):
    result = invoke(app, command, tmp_path / "clinic.db", "--yes" if command == "restore" else "--force")

    assert result.exit_code != 0
    assert "This database is PostgreSQL" in result.output
    assert 'pg_dump --format=custom --file=clinic.dump "$DATABASE_URL"' in result.output
    assert 'pg_restore --clean --if-exists --no-owner --dbname="$DATABASE_URL" clinic.dump' in result.output
    assert not (tmp_path / "clinic.db").exists()


@SQLITE_ONLY
def test_restore_refuses_while_a_process_of_the_app_holds_the_database(app, head, tmp_path):
    assert invoke(app, "backup", tmp_path / "backup.db").exit_code == 0
    branches.create_branch("Made after the backup", "", Actor())
    before = live_counts()
    backup_service.hold_while_serving(app)  # as gunicorn, `flask worker` and `flask deliver-webhooks` do
    try:
        refused = invoke(app, "restore", tmp_path / "backup.db", "--yes")
        assert refused.exit_code != 0 and "The app is running" in refused.output
        assert live_counts() == before and safety_copies() == []
    finally:
        while backup_service._HELD_WHILE_SERVING:
            os.close(backup_service._HELD_WHILE_SERVING.pop())
    assert invoke(app, "restore", tmp_path / "backup.db", "--yes").exit_code == 0
    assert live_counts()["branches"] == before["branches"] - 1


@SQLITE_ONLY
@pytest.mark.gunicorn
def test_restore_refuses_while_gunicorn_serves_and_works_once_it_stopped(app, tmp_path):
    """The real server (gunicorn.conf.py marks the database in use), and the real command in another process."""
    env = server_environment(f"sqlite:///{tmp_path / 'served.db'}", tmp_path)
    migrate(env)
    flask = [str(VENV_BIN / "flask"), "--app", "wsgi"]
    subprocess.run([*flask, "backup", str(tmp_path / "backup.db")], cwd=PROJECT_ROOT, env=env, check=True,
                   capture_output=True)
    with gunicorn(env, workers=2) as base_url:
        refused = subprocess.run([*flask, "restore", str(tmp_path / "backup.db"), "--yes"], cwd=PROJECT_ROOT,
                                 env=env, capture_output=True, text=True)
        assert refused.returncode != 0 and "The app is running" in refused.stderr, refused.stderr
        assert urllib.request.urlopen(f"{base_url}/healthz").status == 200
    restored = subprocess.run([*flask, "restore", str(tmp_path / "backup.db"), "--yes"], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
