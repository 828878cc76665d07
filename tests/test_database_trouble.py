"""What the desk sees when the database is locked, gone, full or read-only: a 503 that says so, beside the form."""

from __future__ import annotations

import html
import sqlite3
import threading
import time

import psycopg
import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from clinic.extensions import db
from clinic.models import Referral
from clinic.services import redemption
from clinic.services.database_trouble import database_trouble
from clinic.services.transaction import _WRITER_LOCKS
from tests.conftest import PASSWORD, counts
from tests.test_web_desk import FRIEND_FORM, form_key

SHORT_WAITS = pytest.mark.app_settings(SQLITE_BUSY_TIMEOUT_MS=300, DATABASE_LOCK_TIMEOUT_MS=300)
BUSY = "The database is busy or out of reach: nothing was saved. Press again in a moment."


def friend_form(desk, referrer) -> dict:
    lookup = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    return {**FRIEND_FORM, "code": referrer.personal_code, "idempotency_key": form_key(lookup)}


def held_write_lock(backend: str):
    """Another program's write transaction, holding the lock a redemption needs; ``release()`` ends it.

    It ends by itself after a few seconds too, so that a request with no time limit of its own waits that long
    and then goes through (the test then fails on its 200) instead of waiting for this test for ever.
    """
    db.session.rollback()  # the test's own reads hold no lock the other program would wait for
    if backend == "sqlite":
        other = sqlite3.connect(db.engine.url.database, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        end = lambda: (other.execute("ROLLBACK"), other.close())  # noqa: E731
    else:
        engine = create_engine(db.engine.url, connect_args={"options": "-c lock_timeout=5000"})
        connection = engine.connect()
        connection.execute(text("LOCK TABLE vouchers, patients IN ACCESS EXCLUSIVE MODE"))
        end = lambda: (connection.rollback(), connection.close(), engine.dispose())  # noqa: E731
    ended = threading.Lock()

    def release():
        if ended.acquire(blocking=False):
            end()

    threading.Timer(3, release).start()
    return release


def assert_busy_beside_the_form(response):
    """503 with Retry-After, the message htmx puts above the panel (HX-Retarget), and no panel to replace the form."""
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert response.headers["Retry-After"] == "5"
    assert response.headers["HX-Retarget"] == "#request-error" and response.headers["HX-Reswap"] == "innerHTML"
    assert 'role="alert"' in body and BUSY in body
    assert "desk-panel" not in body, "the friend's form and its idempotency key stay on the page"


@SHORT_WAITS
def test_a_held_lock_makes_a_redemption_answer_busy_in_moments_and_the_same_form_then_works(app, desk, referrer,
                                                                                              backend):
    form = friend_form(desk, referrer)
    before = counts()
    release = held_write_lock(backend)
    try:
        response = desk.post("/desk/redeem", form, htmx=True)
    finally:
        release()
    assert_busy_beside_the_form(response)
    assert counts() == before
    again = desk.post("/desk/redeem", form, htmx=True)  # pressed again: the same idempotency key
    assert again.status_code == 200 and "both vouchers are issued" in again.get_data(as_text=True)
    assert db.session.scalar(select(Referral.id)) is not None


@SHORT_WAITS
def test_postgresql_connections_carry_the_configured_lock_and_statement_timeouts(app, backend):
    if backend != "postgresql":
        pytest.skip("PostgreSQL settings")
    assert db.session.execute(text("SHOW lock_timeout")).scalar() == "300ms"
    assert db.session.execute(text("SHOW statement_timeout")).scalar() == "20s"


def test_the_sqlite_writer_queue_gives_up_like_the_busy_timeout(app, desk, referrer, backend):
    """Writers queued on the lock file with no time limit: one stuck writer held every desk until gunicorn's kill."""
    if backend != "sqlite":
        pytest.skip("SQLite's writer lock")
    form = friend_form(desk, referrer)
    lock = _WRITER_LOCKS[db.engine]
    lock.wait_seconds = 0.3
    holding, done = threading.Event(), threading.Event()

    def another_writer():
        with lock.held():
            holding.set()
            done.wait(10)

    writer = threading.Thread(target=another_writer)
    writer.start()
    holding.wait(5)
    try:
        response = desk.post("/desk/redeem", form, htmx=True)
    finally:
        done.set()
        writer.join()
    assert_busy_beside_the_form(response)


def test_the_desk_keeps_a_place_for_errors_above_its_panel(desk):
    page = desk.get("/desk/").get_data(as_text=True)
    assert page.count('id="request-error"') == 1
    assert page.index('id="request-error"') < page.index('<section id="desk-panel"')


def test_an_error_after_the_redemption_was_saved_does_not_say_nothing_was_saved(desk, referrer, monkeypatch):
    form = friend_form(desk, referrer)

    def gone(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr("clinic.web.desk.remember_fresh_progress_token", gone)
    response = desk.post("/desk/redeem", form, htmx=True)
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "this may have been saved" in body and "nothing was saved" not in body
    assert db.session.scalar(select(Referral.id)) is not None
    monkeypatch.undo()
    again = desk.post("/desk/redeem", form, htmx=True)
    assert "already done" in again.get_data(as_text=True)


@pytest.mark.parametrize("htmx", [True, False])
def test_a_500_after_a_commit_does_not_claim_nothing_was_changed(desk, referrer, monkeypatch, htmx):
    form = friend_form(desk, referrer)

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug after the redemption")

    monkeypatch.setattr("clinic.web.desk.remember_fresh_progress_token", broken)
    response = desk.post("/desk/redeem", form, htmx=htmx)
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "It may have been saved" in body and "Nothing was changed" not in body
    assert response.headers.get("HX-Retarget") == ("#request-error" if htmx else None)


def test_a_500_before_anything_was_saved_still_says_so(desk, monkeypatch):
    def broken(raw):
        raise RuntimeError("a bug in the lookup")

    monkeypatch.setattr("clinic.services.desk.identify_code", broken)
    body = desk.post("/desk/lookup", {"code": "ABCD2345"}, htmx=True).get_data(as_text=True)
    assert "Nothing was changed" in body


@pytest.mark.parametrize("message, expected", [
    ("database or disk is full", "The server's disk is full: nothing was saved. Tell the manager"),
    ("attempt to write a readonly database", "The server cannot write to its database"),
    ("disk I/O error", "The server cannot write to its database"),
])
def test_a_full_disk_or_an_unwritable_database_tells_staff_to_fetch_the_manager(desk, referrer, monkeypatch,
                                                                               message, expected):
    form = friend_form(desk, referrer)

    def refused(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError(message))

    monkeypatch.setattr(redemption, "redeem_code", refused)
    response = desk.post("/desk/redeem", form, htmx=True)
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert expected in html.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize("driver_error, expected", [
    (sqlite3.OperationalError("no such table: vouchers"), None),  # a migration not applied: a fault, 500
    (sqlite3.OperationalError("no such column: vouchers.label"), None),
    (sqlite3.OperationalError("unable to open database file"), "unavailable"),  # the disk went away
    (psycopg.errors.lookup("XX000")("internal error"), None),
    (psycopg.errors.lookup("08006")("connection failure"), "unavailable"),
    (psycopg.errors.lookup("57P01")("terminating connection due to administrator command"), "unavailable"),
    (psycopg.errors.lookup("53300")("too many connections"), "unavailable"),
    (psycopg.OperationalError("connection refused"), "unavailable"),  # no server answered: no SQLSTATE
])
def test_only_an_unreachable_database_is_a_moment_to_wait_not_a_statement_it_refused(driver_error, expected):
    assert database_trouble(OperationalError("SELECT", {}, driver_error)) == expected


def test_a_database_error_page_is_translated(desk, app, monkeypatch, desk_user):
    from clinic.services.staff import set_language

    set_language(desk_user.id, "zh_CN")

    def refused(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr("clinic.services.desk.identify_code", refused)
    response = desk.post("/desk/lookup", {"code": "ABCD2345"})
    assert response.status_code == 503
    assert "数据库繁忙或无法连接：没有保存任何内容。请稍后再按一次。" in response.get_data(as_text=True)


def read_only_connections(engine, switch: list) -> None:
    """While ``switch[0]``, new SQLite connections open the file read-only, as SQLite does when it cannot write it."""

    @event.listens_for(engine, "do_connect")
    def _read_only(_dialect, _record, cargs, cparams):
        if switch[0]:
            cargs[:] = [f"file:{engine.url.database}?mode=ro"]
            cparams["uri"] = True


def test_after_the_database_was_read_only_once_logins_work_again_without_a_restart(app, browser, desk_user, backend):
    if backend != "sqlite":
        pytest.skip("SQLite opens a file it cannot write read-only")
    read_only = [True]
    read_only_connections(db.engine, read_only)
    db.engine.dispose()
    assert browser.get("/healthz").status_code == 503
    assert browser.get("/healthz").get_json() == {"status": "error", "database": "not_writable"}
    assert browser.post("/login", {"email": desk_user.email, "password": PASSWORD}).status_code == 503
    read_only[0] = False  # the file is writable again (chattr -i): no restart, no dispose
    # A connection opened read-only after the last refusal (the error page's own reads) may refuse one more write;
    # that refusal drops it with every other older connection. Before, they all stayed read-only until a restart.
    logins = [browser.post("/login", {"email": desk_user.email, "password": PASSWORD}).status_code for _ in range(2)]
    assert 303 in logins, logins
    assert browser.get("/healthz").get_json() == {"status": "ok"}
    db.engine.dispose()  # for the fixture's own clean-up, which may be handed any connection left in the pool


def test_healthz_on_sqlite_says_503_while_another_program_holds_the_write_lock(app, browser, backend):
    if backend != "sqlite":
        pytest.skip("SQLite's write check")
    release = held_write_lock(backend)
    try:
        response = browser.get("/healthz")
    finally:
        release()
    assert response.status_code == 503
    assert browser.get("/healthz").get_json() == {"status": "ok"}
    assert db.session.execute(text("PRAGMA busy_timeout")).scalar() == app.config["SQLITE_BUSY_TIMEOUT_MS"]


def test_postgresql_connections_ended_by_the_server_are_replaced_before_use(app, browser, backend):
    """pg_terminate_backend (a restart, a failover) under the desk: the next page gets a new connection, not a 500."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL's pool")
    assert browser.get("/healthz").status_code == 200
    with db.engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    with create_engine(db.engine.url).connect() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    time.sleep(0.2)  # the server's goodbye reaches the idle connection's socket
    for _ in range(3):
        assert browser.get("/healthz").status_code == 200


def test_a_failed_statement_keeps_its_parameters_out_of_the_error_and_so_out_of_the_logs(app):
    """SQLAlchemy writes a statement's parameters into its exceptions unless told not to: a phone number would then
    be in every log line that records the error (the errors handler, a database warning)."""
    phone = "13812345678"
    with pytest.raises(DBAPIError) as raised:
        db.session.execute(text("SELECT id FROM no_such_table WHERE phone = :phone"), {"phone": phone})
    db.session.rollback()
    assert "no_such_table" in str(raised.value) and phone not in str(raised.value)
    assert "hidden due to hide_parameters" in str(raised.value)


def test_postgresql_connections_give_up_opening_after_a_timeout():
    """A database host gone silent held each request for the system's TCP timeout (minutes); a URL's own wins."""
    from clinic.config import database_engine_options

    settings = {"DATABASE_LOCK_TIMEOUT_MS": 5000, "DATABASE_STATEMENT_TIMEOUT_MS": 20000,
                "DATABASE_CONNECT_TIMEOUT_S": 10}
    options = database_engine_options({**settings, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://db.example/c"})
    assert options["connect_args"]["connect_timeout"] == 10
    assert "-c lock_timeout=5000" in options["connect_args"]["options"]
    own = database_engine_options({**settings,
                                   "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://db.example/c?connect_timeout=3"})
    assert "connect_timeout" not in own["connect_args"]  # psycopg takes the URL's 3
    assert "connect_args" not in database_engine_options({**settings, "SQLALCHEMY_DATABASE_URI": "sqlite:///x.db"})
