"""Invite page opens: counted per clinic day, referrer and way in, without the reader; written in batches by each
process; shown on the patient's progress page, the staff's patient page and the dashboard
(clinic/services/invite_opens.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import CardStatus, InviteOpen
from clinic.services import erasure, invite_opens
from clinic.services.clinic_settings import clinic_today
from clinic.services.invite_opens import CARD, PERSONAL, OpenCounter
from clinic.services.transaction import Actor
from tests.test_bad_input_properties import add_card

PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
WECHAT = PHONE + " MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN"


def rows() -> list[tuple]:
    db.session.rollback()  # a fresh snapshot: SQLite's would be the one the test's session began with
    found = [(row.day, row.patient_id, row.via, row.opens)
             for row in db.session.scalars(select(InviteOpen).order_by(InviteOpen.patient_id, InviteOpen.via))]
    db.session.rollback()
    return found


def open_page(browser, code: str, user_agent: str = PHONE, **kwargs):
    headers = {"User-Agent": user_agent, **kwargs.pop("headers", {})}
    return browser.get(f"/r/{code}", headers=headers, **kwargs)


def test_each_open_of_a_personal_code_or_a_card_counts_for_its_referrer(browser, referrer, make_patient):
    other, _ = make_patient(full_name="Zhao Min")
    card = add_card(CardStatus.ACTIVATED.value, owner_id=referrer.id)
    for _ in range(3):
        assert open_page(browser, referrer.personal_code).status_code == 200
    assert open_page(browser, card.code, WECHAT).status_code == 200
    assert open_page(browser, other.personal_code.lower()).status_code == 200  # any way the code is typed
    today = clinic_today()
    assert rows() == [(today, referrer.id, CARD, 1), (today, referrer.id, PERSONAL, 3), (today, other.id, PERSONAL, 1)]


@pytest.mark.parametrize("user_agent, headers, query", [
    ("facebookexternalhit/1.1", {}, ""),
    ("WhatsApp/2.23.20.0 A", {}, ""),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", {}, ""),
    ("TelegramBot (like TwitterBot)", {}, ""),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", {}, ""),
    ("curl/8.4.0", {}, ""),
    (PHONE, {"Sec-Purpose": "prefetch;prerender"}, ""),
    (PHONE, {"Purpose": "prefetch"}, ""),
    (PHONE, {}, "?lang=en"),  # the reader pressed the language switch: the same reader
])
def test_robots_previews_prefetches_and_the_language_switch_are_not_opens(browser, referrer, user_agent, headers,
                                                                          query):
    answer = browser.get(f"/r/{referrer.personal_code}{query}", headers={"User-Agent": user_agent, **headers})
    assert answer.status_code == 200
    assert rows() == []


def test_a_head_request_and_pages_that_invite_nobody_are_not_opens(app, browser, referrer):
    assert app.test_client().head(f"/r/{referrer.personal_code}", headers={"User-Agent": PHONE}).status_code == 200
    printed = add_card(CardStatus.PRINTED.value)
    assert open_page(browser, printed.code).status_code == 404  # not activated: invites nobody
    assert open_page(browser, "ZZZZ-ZZZZ").status_code == 404
    assert rows() == []


def test_an_erased_referrers_page_is_not_counted_and_their_counts_stay_anonymous(app, browser, referrer):
    assert open_page(browser, referrer.personal_code).status_code == 200
    code = referrer.personal_code
    erasure.erase_patient(referrer.id, "patient_request", Actor())
    assert open_page(browser, code).status_code == 404
    # The day's count stays (the dashboard's history is right); it names nobody: the patient row is erased.
    assert [opens for *_, opens in rows()] == [1]


@pytest.mark.app_settings(INVITE_OPENS_FLUSH_SECONDS=3600)
def test_a_process_holds_its_opens_and_writes_them_when_due_adding_to_the_days_row(app, browser, referrer):
    counter: OpenCounter = app.extensions[invite_opens.EXTENSION]
    for _ in range(4):
        open_page(browser, referrer.personal_code)
    assert rows() == []  # held: the page wrote nothing
    assert counter.write() == 4
    assert counter.write() == 0
    for _ in range(2):
        open_page(browser, referrer.personal_code)
    counter.write_at_exit()  # what gunicorn's worker_exit and the interpreter's exit do
    assert rows() == [(clinic_today(), referrer.id, PERSONAL, 6)]


@pytest.mark.app_settings(INVITE_OPENS_FLUSH_SECONDS=0.3)
def test_an_open_held_back_is_written_when_due_without_waiting_for_another_open(app, browser, referrer):
    """A quiet clinic: a friend opens the page twice and then nobody opens it again through this process for hours.
    The opens held back must reach the dashboard and the progress page once
    INVITE_OPENS_FLUSH_SECONDS have passed (README), not wait for this process's next open or its exit."""
    open_page(browser, referrer.personal_code)
    open_page(browser, referrer.personal_code)
    assert app.extensions[invite_opens.EXTENSION].due(0)  # at least the second is held back
    deadline = time.monotonic() + 10
    while rows() != [(clinic_today(), referrer.id, PERSONAL, 2)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows() == [(clinic_today(), referrer.id, PERSONAL, 2)]


def test_two_processes_writing_the_same_row_at_once_both_count(app, referrer):
    """Each gunicorn worker has its own counter; their upserts on one (day, referrer, way in) row must add up."""
    today = clinic_today()
    counters = [OpenCounter(app) for _ in range(4)]
    for number, counter in enumerate(counters, start=1):
        for _ in range(number * 10):
            counter.add(today, referrer.id, PERSONAL)
    start = threading.Barrier(len(counters))
    failures = []

    def write(counter):
        try:
            with app.app_context():
                start.wait()
                counter.write()
                db.session.remove()
        except Exception as error:  # reported below: an assertion in a thread would vanish
            failures.append(error)

    threads = [threading.Thread(target=write, args=(counter,)) for counter in counters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert rows() == [(today, referrer.id, PERSONAL, 100)]


def test_a_failed_write_keeps_the_opens_for_the_next_one(app, referrer, monkeypatch, caplog):
    counter = OpenCounter(app)
    today = clinic_today()
    counter.add(today, referrer.id, PERSONAL)
    counter.add(today, referrer.id, PERSONAL)

    def broken(_pending, _lock_wait_seconds=None):
        from sqlalchemy.exc import OperationalError
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(invite_opens, "add_to_rows", broken)
    assert counter.write() == 0
    assert "could not write 2 invite page opens" in caplog.text
    monkeypatch.undo()
    counter.add(today, referrer.id, PERSONAL)
    assert counter.write() == 3
    assert rows() == [(today, referrer.id, PERSONAL, 3)]


def test_what_a_process_holds_is_bounded(app, referrer, monkeypatch):
    monkeypatch.setattr(invite_opens, "MAX_PENDING", 2)
    counter = OpenCounter(app)
    today = clinic_today()
    for days_ago in range(5):
        counter.add(today - timedelta(days=days_ago), referrer.id, PERSONAL)
    counter.add(today, referrer.id, PERSONAL)  # a row already held still counts
    assert counter.write() == 3


def test_the_progress_page_tells_the_patient_how_often_their_page_was_opened(browser, make_patient):
    patient, token = make_patient(full_name="Wang Li")
    assert 'id="invite-opens"' not in browser.get(f"/p/{token}?lang=en").get_data(as_text=True)
    open_page(browser, patient.personal_code)
    assert "Your invite page has been opened 1 time so far." in browser.get(f"/p/{token}?lang=en").get_data(as_text=True)
    open_page(browser, patient.personal_code)
    page = browser.get(f"/p/{token}?lang=zh_CN").get_data(as_text=True)
    assert "您的邀请页面已被打开 2 次。" in page


def test_the_patient_page_shows_opens_ever_and_in_the_last_30_days(app, desk, referrer):
    today = clinic_today()
    db.session.add_all([InviteOpen(day=today - timedelta(days=30), patient_id=referrer.id, via=PERSONAL, opens=5),
                        InviteOpen(day=today - timedelta(days=29), patient_id=referrer.id, via=CARD, opens=2),
                        InviteOpen(day=today, patient_id=referrer.id, via=PERSONAL, opens=1)])
    db.session.commit()
    page = desk.get(f"/patients/{referrer.id}?lang=en").get_data(as_text=True)
    assert "Opened 8 times" in page
    assert "3 in the last 30 days" in page


def test_the_dashboard_counts_the_periods_opens_by_branch(app, manager, make_patient):
    from clinic.models import Branch
    north = Branch(name="North")
    db.session.add(north)
    db.session.commit()
    first, _ = make_patient(full_name="Wang Li")
    second, _ = make_patient(full_name="Zhao Min")
    second_id, north_id = second.id, north.id
    from clinic.models import Patient
    db.session.get(Patient, second_id).branch_id = north_id
    today = clinic_today()
    db.session.add_all([InviteOpen(day=today, patient_id=first.id, via=PERSONAL, opens=7),
                        InviteOpen(day=today, patient_id=second_id, via=CARD, opens=3),
                        InviteOpen(day=today - timedelta(days=400), patient_id=first.id, via=PERSONAL, opens=50)])
    db.session.commit()
    day = today.isoformat()
    page = manager.get(f"/admin/dashboard?from={day}&to={day}&lang=en").get_data(as_text=True)
    assert '<span class="stat-value" id="stat-opens-value">10</span>' in page
    assert "7 from posters and links, 3 from cards, of 2 referrers" in page
    page = manager.get(f"/admin/dashboard?from={day}&to={day}&branch={north_id}&lang=en").get_data(as_text=True)
    assert '<span class="stat-value" id="stat-opens-value">3</span>' in page
    assert "0 from posters and links, 3 from cards, of 1 referrer" in page


def test_the_database_refuses_nonsense_counts(app, referrer):
    from sqlalchemy.exc import IntegrityError
    for bad in ({"via": "poster", "opens": 1}, {"via": PERSONAL, "opens": 0}):
        db.session.add(InviteOpen(day=clinic_today(), patient_id=referrer.id, **bad))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()



def test_the_top_referrers_show_their_pages_opens_in_the_period(app, manager, referrer, make_patient):
    from clinic.services import redemption
    from tests.conftest import friend
    redemption.redeem_code(referrer.personal_code, friend(), Actor())
    today = clinic_today()
    db.session.add_all([InviteOpen(day=today, patient_id=referrer.id, via=PERSONAL, opens=9),
                        InviteOpen(day=today, patient_id=referrer.id, via=CARD, opens=2),
                        InviteOpen(day=today - timedelta(days=40), patient_id=referrer.id, via=PERSONAL, opens=70)])
    db.session.commit()
    day = today.isoformat()
    page = manager.get(f"/admin/dashboard?from={day}&to={day}&lang=en").get_data(as_text=True)
    row = page[page.index('<table class="top-referrers">'):]
    row = row[row.index("Wang Li"):]
    assert row[:row.index("</tr>")].endswith("<td>1</td><td>0</td><td>11</td>")


def test_the_patient_data_export_holds_their_invite_page_opens(app, browser, referrer, manager_user):
    import json

    from clinic.services import patient_data
    open_page(browser, referrer.personal_code)
    card = add_card(CardStatus.ACTIVATED.value, owner_id=referrer.id)
    open_page(browser, card.code)
    open_page(browser, card.code)
    _patient, text = patient_data.patient_data(referrer.id, Actor(staff_id=manager_user.id))
    today = clinic_today().isoformat()
    assert json.loads(text)["invite_page_opens"] == [{"day": today, "via": CARD, "opens": 2},
                                                     {"day": today, "via": PERSONAL, "opens": 1}]


@pytest.mark.app_settings(SQLITE_BUSY_TIMEOUT_MS=120_000)
def test_a_friends_page_never_queues_long_behind_another_writer(app, backend, browser, referrer):
    """On SQLite the writes queue on one lock: a page that would write its process's opens while another writer holds
    it (a card batch being saved) leaves them for its next try after 50 ms, where the queue allows two minutes."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL writers do not queue on one lock")
    from clinic.services.transaction import _WRITER_LOCKS
    lock = _WRITER_LOCKS[db.engine]
    taken, release, answers = threading.Event(), threading.Event(), []

    def long_writer():
        with lock.held():
            taken.set()
            release.wait(60)

    writer = threading.Thread(target=long_writer)
    writer.start()
    taken.wait()
    try:
        code = referrer.personal_code

        def friend_opens():
            with app.app_context():
                answers.append(open_page(browser, code).status_code)

        reader = threading.Thread(target=friend_opens)
        reader.start()
        reader.join(30)  # behind the writer it would wait the two minutes
        assert answers == [200]
        assert rows() == []
    finally:
        release.set()
        writer.join()
    timer = app.extensions[invite_opens.EXTENSION]._timer  # the held open's next try, once the lock is free
    timer.join(30)
    assert rows() == [(clinic_today(), referrer.id, PERSONAL, 1)]
    open_page(browser, referrer.personal_code)
    assert rows() == [(clinic_today(), referrer.id, PERSONAL, 2)]


def test_the_patients_export_has_each_patients_invite_page_opens(manager, referrer, make_patient):
    import csv
    import io
    other, _ = make_patient(full_name="Zhao Min")
    today = clinic_today()
    db.session.add_all([InviteOpen(day=today, patient_id=referrer.id, via=PERSONAL, opens=4),
                        InviteOpen(day=today - timedelta(days=3), patient_id=referrer.id, via=CARD, opens=1)])
    db.session.commit()
    day = today.isoformat()
    text = manager.get(f"/admin/exports/patients.csv?from={day}&to={day}").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert {row["full name"]: row["invite page opens"] for row in rows} == {"Wang Li": "5", "Zhao Min": "0"}


def test_staff_checking_the_link_from_the_patient_page_is_not_an_open(app, desk, referrer):
    """The patient page shows the invite link; a receptionist who clicks it is not a friend reached by a poster."""
    from tests.conftest import Browser
    assert desk.get(f"/r/{referrer.personal_code}", headers={"User-Agent": PHONE}).status_code == 200
    assert rows() == []
    open_page(Browser(app.test_client()), referrer.personal_code)  # a phone with no session: a friend
    assert rows() == [(clinic_today(), referrer.id, PERSONAL, 1)]
