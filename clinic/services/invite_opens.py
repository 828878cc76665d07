"""How often each referrer's invite page is opened: the top of the referral funnel, counted without watching anyone.

A clinic prints posters and hands out cards and then sees only who comes to the desk. How many friends a poster
reached, and how many of those came, is what tells a good poster or a keen referrer from a forgotten one, and
what the patient is glad to see on their progress page ("your invite page was opened 12 times").

What is counted: a ``GET /r/<CODE>`` that shows a referrer's invite page, by clinic day, referrer and way in (their
code or a card of theirs). Not counted, since no friend is reading: a ``HEAD``, a browser's prefetch, a chat app's
or a search engine's robot fetching the link for its preview, the page again in another language (the reader
pressed the language switch), and a staff member's browser checking the link (it holds the portal's session cookie). The page may be kept a minute by the reader's browser (its Cache-Control), so
going back to it or opening the link again within that minute is not another open; a reload asks the server again
(browsers revalidate on reload) and counts. Nothing about the reader is kept: no address, no browser, no time.

Each web process adds its opens up in memory and writes them at most every ``INVITE_OPENS_FLUSH_SECONDS`` (10 by
default; 0 writes each at once) with one ``INSERT … ON CONFLICT DO UPDATE`` that adds to the day's row, so two
processes writing the same row both count. The invite page is the busiest of all and only reads; one write every
few seconds costs it nothing, and on SQLite it queues behind another writer for 50 ms at most, then leaves the
opens for later. Opens held back are written when due even if no other open comes (a timer thread of the process),
so a quiet clinic's dashboard is at most those seconds behind. What a process holds is written when gunicorn retires
it (gunicorn.conf.py, ``worker_exit``) and when it exits; a process killed outright loses at most those seconds of
opens. A failed write is logged and tried again later: a count is not worth a friend's error page.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from flask import Flask, current_app, request
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from clinic.extensions import db
from clinic.models import InviteOpen, Patient
from clinic.services.clinic_settings import clinic_today
from clinic.services.transaction import DatabaseBusy, atomic, upsert_capable_insert

log = logging.getLogger(__name__)

PERSONAL, CARD = "personal", "card"
EXTENSION = "invite_opens"
# Held back when writes keep failing: past this many (day, referrer, way in) rows, new opens are dropped.
MAX_PENDING = 10_000
RECENT_DAYS = 30
# On SQLite, how long an invite page queues for the writer lock to write its process's opens (see OpenCounter.write).
IN_PAGE_LOCK_WAIT_SECONDS = 0.05

# Link previews and crawlers that say who they are (Googlebot/2.1, TelegramBot (like TwitterBot), Slackbot-Link…,
# facebookexternalhit, WhatsApp/2.23 fetching a preview). Chat apps' own browsers (WeChat's MicroMessenger, …) are
# people, and so is a phone whose model name holds "bot" (CUBOT_X30). Substrings of the lower-cased User-Agent: a
# regular expression of the same alternatives cost 30 µs a page, this 1 µs.
ROBOT_MARKS = ("bot/", "bot ", "bot-", "bot;", "bot)", "crawl", "spider", "slurp", "preview", "facebookexternalhit",
               "whatsapp/", "embedly", "headlesschrome", "python-requests", "curl/", "wget/")


def is_a_reader() -> bool:
    """Whether this request is a person opening the invite page (see the module's docstring for who is not)."""
    environ = request.environ  # read directly: request.headers costs a few µs a header
    if environ["REQUEST_METHOD"] != "GET" or "lang" in request.args:
        return False
    purpose = (environ.get("HTTP_SEC_PURPOSE") or environ.get("HTTP_PURPOSE") or "").lower()
    if "prefetch" in purpose or "prerender" in purpose:
        return False
    # A staff browser (it holds the portal's session cookie; the public pages set none) checking the link from the
    # patient page or the desk: not a friend reached by a poster.
    if "HTTP_COOKIE" in environ and current_app.config["SESSION_COOKIE_NAME"] in request.cookies:
        return False
    agent = environ.get("HTTP_USER_AGENT", "").lower()
    return not (agent.endswith("bot") or any(mark in agent for mark in ROBOT_MARKS))


class OpenCounter:
    """One process's opens not yet written, for one app (one database)."""

    def __init__(self, app: Flask):
        self._app = weakref.ref(app)
        self._pending: Counter[tuple[date, int, str]] = Counter()
        self._lock = threading.Lock()
        self._last_write = time.monotonic()
        self._timer: threading.Timer | None = None

    def add(self, day: date, patient_id: int, via: str) -> None:
        with self._lock:
            key = (day, patient_id, via)
            if key in self._pending or len(self._pending) < MAX_PENDING:
                self._pending[key] += 1

    def due(self, every_seconds: float) -> bool:
        return bool(self._pending) and time.monotonic() - self._last_write >= every_seconds

    def write_when_due(self, every_seconds: float, lock_wait_seconds: float | None = None) -> None:
        """Write now if due, and make sure a timer writes what is still held once it is: opens must not wait for this
        process's next open (in a quiet clinic, hours) to reach the dashboard and the patient's progress page, nor
        stay held because the write now found SQLite's writer lock taken."""
        if self.due(every_seconds):
            self.write(lock_wait_seconds)
        with self._lock:
            if not self._pending or (self._timer is not None and self._timer.is_alive()):
                return
            wait = max(0.0, every_seconds - (time.monotonic() - self._last_write))
            self._timer = threading.Timer(wait, self._write_later)
            self._timer.daemon = True  # the exit writes what is left (write_all)
            self._timer.start()

    def _write_later(self) -> None:
        """The timer's write, in an app context (and so a database session) of its own."""
        try:
            self.write_at_exit()
        except Exception:  # a thread's error would only vanish; a count is not worth more
            log.exception("invite page opens not written")

    def write(self, lock_wait_seconds: float | None = None) -> int:
        """Write what is held, in one transaction (the caller is in the app's context); the opens written.

        ``lock_wait_seconds``: how long to queue behind another writer on SQLite (see ``atomic``) before keeping the
        opens for the next try; a friend's page waits that long at most, never behind a long write (a card batch).
        """
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._last_write = time.monotonic()
        if not pending:
            return 0
        try:
            add_to_rows(pending, lock_wait_seconds)
        except (SQLAlchemyError, DatabaseBusy, OSError):
            log.warning("could not write %d invite page opens; kept for the next try", sum(pending.values()),
                        exc_info=True)
            with self._lock:
                for key, opens in pending.items():
                    if key in self._pending or len(self._pending) < MAX_PENDING:
                        self._pending[key] += opens
            return 0
        return sum(pending.values())

    def write_at_exit(self) -> None:
        """What is held, from outside any request (exit, the timer): in an app context of its own."""
        app = self._app()
        if app is not None and self._pending:
            with app.app_context():
                self.write()


_COUNTERS: "weakref.WeakSet[OpenCounter]" = weakref.WeakSet()


def init_app(app: Flask) -> None:
    counter = OpenCounter(app)
    app.extensions[EXTENSION] = counter
    _COUNTERS.add(counter)


@atexit.register
def write_all() -> None:
    """Every counter's held opens, in this process (gunicorn's ``worker_exit``, and the interpreter's exit)."""
    for counter in list(_COUNTERS):
        try:
            counter.write_at_exit()
        except Exception:  # at exit there is no one left to tell but the log
            log.exception("invite page opens not written at exit")


def count_open(patient_id: int, via: str) -> None:
    """Count one open of ``patient_id``'s invite page, if a reader opened it; write the process's opens when due."""
    if not is_a_reader():
        return
    counter: OpenCounter = current_app.extensions[EXTENSION]
    counter.add(clinic_today(), patient_id, via)
    counter.write_when_due(current_app.config["INVITE_OPENS_FLUSH_SECONDS"], IN_PAGE_LOCK_WAIT_SECONDS)


def add_to_rows(pending: Counter, lock_wait_seconds: float | None = None) -> None:
    """Add ``{(day, patient_id, via): opens}`` to the days' rows in one transaction (also the demo's history)."""
    rows = [{"day": day, "patient_id": patient_id, "via": via, "opens": opens}
            for (day, patient_id, via), opens in sorted(pending.items())]  # one order: no deadlock between writers
    with atomic(lock_wait_seconds=lock_wait_seconds) as session:
        statement = upsert_capable_insert(session.get_bind().dialect.name, InviteOpen.__table__)
        # Rows of a referrer erased or gone meanwhile are skipped rather than failing the batch.
        known = set(session.scalars(select(Patient.id).where(
            Patient.id.in_({row["patient_id"] for row in rows}), Patient.erased_at.is_(None))))
        rows = [row for row in rows if row["patient_id"] in known]
        if rows:
            session.execute(statement.on_conflict_do_update(
                index_elements=["day", "patient_id", "via"],
                set_={"opens": InviteOpen.__table__.c.opens + statement.excluded.opens}), rows)


@dataclass(frozen=True)
class PatientOpens:
    total: int
    recent: int  # in the last RECENT_DAYS clinic days, today included


def opens_of(patient_id: int, today: date | None = None) -> PatientOpens:
    """How often the patient's invite page was opened, ever and lately (the staff's patient page)."""
    since = (today or clinic_today()) - timedelta(days=RECENT_DAYS - 1)
    total, recent = db.session.execute(select(
        func.coalesce(func.sum(InviteOpen.opens), 0),
        func.coalesce(func.sum(InviteOpen.opens).filter(InviteOpen.day >= since), 0),
    ).where(InviteOpen.patient_id == patient_id)).one()
    return PatientOpens(int(total), int(recent))


def total_opens_column(patient_id_column):
    """A scalar subquery: every open of a patient's invite page (the progress page's one statement)."""
    return (select(func.coalesce(func.sum(InviteOpen.opens), 0))
            .where(InviteOpen.patient_id == patient_id_column).scalar_subquery())


@dataclass(frozen=True)
class OpenFigures:
    opens: int
    personal: int
    card: int
    referrers: int  # how many referrers' pages were opened


def open_figures(first_day: date, last_day: date, branch_id: int | None = None) -> OpenFigures:
    """The dashboard's top of the funnel: opens in the clinic days ``first_day`` to ``last_day`` (the referrer's
    branch, when one is chosen: where the referrer was enrolled, as the posters they share are that branch's)."""
    query = select(
        func.coalesce(func.sum(InviteOpen.opens), 0),
        func.coalesce(func.sum(InviteOpen.opens).filter(InviteOpen.via == PERSONAL), 0),
        func.coalesce(func.sum(InviteOpen.opens).filter(InviteOpen.via == CARD), 0),
        func.count(func.distinct(InviteOpen.patient_id)),
    ).where(InviteOpen.day >= first_day, InviteOpen.day <= last_day)
    if branch_id is not None:
        query = query.join(Patient, Patient.id == InviteOpen.patient_id).where(Patient.branch_id == branch_id)
    return OpenFigures(*(int(value) for value in db.session.execute(query).one()))


def opens_by_patient(patient_ids: list[int], first_day: date, last_day: date) -> dict[int, int]:
    """Each of these patients' opens in the clinic days ``first_day`` to ``last_day`` (none: left out)."""
    if not patient_ids:
        return {}
    rows = db.session.execute(
        select(InviteOpen.patient_id, func.sum(InviteOpen.opens))
        .where(InviteOpen.patient_id.in_(patient_ids), InviteOpen.day >= first_day, InviteOpen.day <= last_day)
        .group_by(InviteOpen.patient_id)).all()
    return {patient_id: int(opens) for patient_id, opens in rows}
