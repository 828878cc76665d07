"""Exactly once, everywhere: the real app under gunicorn (4 sync workers), the same form fired at once.

Every desk logs in over HTTP beforehand and fetches its form as the browser does (the lookup
panel, with its CSRF token and idempotency key). Each request gets a connection opened in
advance; a barrier then releases all the threads together, so the workers really handle the
same code at the same moment. The answers are counted (one winner, every other a clear 409,
never a 5xx) and the database is audited: effects, vouchers and audit rows must add up.

Runs on SQLite (a file in WAL mode) and, when TEST_DATABASE_URL is set, on PostgreSQL: one
test per backend, one server for all its scenarios, each scenario reporting its own failure.
A negative control (tests/race_app.py) proves that the harness really fires at once: a naive
check-then-write endpoint must pay more than once when fired at once, and once when not.
Every volley prints its figures (``pytest -rP`` shows them).
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from clinic import create_app
from clinic.extensions import db
from clinic.models import (
    AuditEvent,
    CampaignMonthCount,
    Card,
    FormSubmission,
    Patient,
    Referral,
    ReferrerYearTotal,
    ReviewRequest,
    Reward,
    Role,
    Voucher,
)
from clinic.models._time import utcnow
from clinic.services import cards, clinic_settings, redemption, rewards
from clinic.services.clinic_settings import clinic_local
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.staff import create_staff
from clinic.services.transaction import Actor
from tests.conftest import BACKENDS, CAMPAIGN, PASSWORD
from tests.liveserver import gunicorn, migrate, server_environment

pytestmark = pytest.mark.gunicorn

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SERVER_WORKERS = 4
DESKS = 50  # logged-in browser sessions, shared by the scenarios
DESK_STAFF = 5  # members of staff behind them (each desk logs in on its own)
# The negative control's endpoint and audit action, see tests/race_app.py.
NAIVE_SPEND_PATH = "/race/naive-spend"
NAIVE_SPEND_ACTION = "race.naive_spend"

_numbers = itertools.count(1)


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer at all (see ``error``)
    body: str = ""
    error: str | None = None
    set_cookies: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """The refusal's reason (``data-reason`` on the desk panel's alert), if any."""
        found = re.search(r'data-reason="([^"]+)"', self.body)
        return found.group(1) if found else None

    def receipt_voucher_ids(self) -> list[int]:
        """The vouchers a redemption receipt shows (the recent-redemptions list after it is left out)."""
        receipt = self.body.split("</section>", 1)[0]
        return sorted(int(number) for number in re.findall(r'id="voucher-(\d+)"', receipt))


class _HiddenFields(HTMLParser):
    """The hidden inputs of the first form posting to ``action``: what a browser sends unseen."""

    def __init__(self, action: str):
        super().__init__()
        self.action = action
        self.inside = False
        self.fields: dict[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = self.fields is None and (attrs.get("action") or "") == self.action
            if self.inside:
                self.fields = {}
        elif tag == "input" and self.inside and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def hidden_fields(page: str, action: str) -> dict[str, str]:
    parser = _HiddenFields(action)
    parser.feed(page)
    assert parser.fields is not None, f"no form posting to {action!r} on the page:\n{page[:2000]}"
    return parser.fields


@dataclass
class Shot:
    """One request, ready to go: sent on a connection opened before the barrier."""

    desk: "Desk"
    path: str
    body: str
    headers: dict[str, str]


class Desk:
    """One member of staff's browser: its own session cookie and CSRF token.

    gunicorn's sync workers close every connection after one answer, so each request
    opens its own, as a browser would.
    """

    CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')

    def __init__(self, base_url: str, email: str, cookies: dict[str, str] | None = None, csrf: str = ""):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.email = email
        self.cookies = dict(cookies or {})
        self.csrf = csrf

    def at(self, base_url: str) -> Desk:
        """The same browser session against another server on the same database."""
        return Desk(base_url, self.email, self.cookies, self.csrf)

    def connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=90)
        connection.connect()
        return connection

    def headers(self, *, htmx: bool, form: bool) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}
        if form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if htmx:
            headers["HX-Request"] = "true"  # what htmx adds, with the token from the page's <meta> (app.js)
        if self.csrf:
            headers["X-CSRFToken"] = self.csrf
        return headers

    def request(self, method: str, path: str, fields: dict | None = None, *, htmx: bool = False) -> Answer:
        body = urlencode(fields) if fields is not None else None
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=self.headers(htmx=htmx, form=body is not None))
            answer = read_answer(connection)
            for header in answer.set_cookies:
                for name, morsel in SimpleCookie(header).items():
                    if morsel.value:
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
        finally:
            connection.close()
        return answer

    def log_in(self) -> None:
        page = self.request("GET", "/login")
        answer = self.request("POST", "/login", {**hidden_fields(page.body, ""), "email": self.email,
                                                 "password": PASSWORD})
        assert answer.status == 303, f"{self.email} could not log in: {answer.status} {answer.body[:500]}"
        desk_page = self.request("GET", "/desk/")
        assert desk_page.status == 200, f"{self.email}: the desk answered {desk_page.status}"
        self.csrf = self.CSRF_META.search(desk_page.body).group(1)

    def form_after_lookup(self, code: str, action: str) -> dict[str, str]:
        """Type ``code`` in the desk's code field; the hidden fields of the form the panel then offers."""
        panel = self.request("POST", "/desk/lookup", {"code": code}, htmx=True)
        assert panel.status == 200, f"looking up {code} answered {panel.status}: {panel.reason or panel.body[:500]}"
        return hidden_fields(panel.body, action)

    def shot(self, path: str, fields: dict[str, str]) -> Shot:
        return Shot(self, path, urlencode(fields), self.headers(htmx=True, form=True))


def read_answer(connection: http.client.HTTPConnection) -> Answer:
    response = connection.getresponse()
    return Answer(response.status, response.read().decode("utf-8", "replace"),
                  set_cookies=response.headers.get_all("Set-Cookie") or [])


@dataclass
class Volley:
    answers: list[Answer]
    spread_ms: float  # between the first and the last request leaving its thread
    took_s: float
    at_once: bool = True

    @property
    def statuses(self) -> Counter:
        return Counter(answer.status for answer in self.answers)

    @property
    def reasons(self) -> Counter:
        return Counter(answer.reason or "no reason shown" for answer in self.answers if answer.status != 200)

    def winners(self) -> list[int]:
        return [index for index, answer in enumerate(self.answers) if answer.status == 200]

    def describe(self) -> str:
        how = f"sent within {self.spread_ms:.1f} ms" if self.at_once else "sent one after another"
        statuses = ", ".join(f"{status}×{n}" for status, n in sorted(self.statuses.items(), key=str))
        reasons = ", ".join(f"{reason}×{n}" for reason, n in sorted(self.reasons.items(), key=str))
        errors = Counter(answer.error for answer in self.answers if answer.error)
        return (f"{len(self.answers)} requests {how}, answered in {self.took_s:.2f} s: {statuses}"
                + (f" (refusals: {reasons})" if reasons else "")
                + (f"; transport errors: {dict(errors)}" if errors else ""))


def fire(shots: list[Shot], *, at_once: bool = True) -> Volley:
    """Send every shot at the same moment (or, for the control, strictly one after another)."""
    connections = [shot.desk.connect() for shot in shots]
    answers: list[Answer | None] = [None] * len(shots)
    sent_at = [0.0] * len(shots)
    barrier = threading.Barrier(len(shots))

    def send(index: int) -> None:
        shot, connection = shots[index], connections[index]
        try:
            if at_once:
                barrier.wait(timeout=60)
            sent_at[index] = time.monotonic()
            connection.request("POST", shot.path, body=shot.body, headers=shot.headers)
            answers[index] = read_answer(connection)
        except Exception as error:  # noqa: BLE001 - a dropped connection is an outcome the test must see
            answers[index] = Answer(None, error=repr(error))
        finally:
            connection.close()

    started = time.monotonic()
    if at_once:
        threads = [threading.Thread(target=send, args=(index,)) for index in range(len(shots))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    else:
        for index in range(len(shots)):
            send(index)
    took = time.monotonic() - started
    answers = [answer or Answer(None, error="no answer within 120 s") for answer in answers]
    return Volley(answers, (max(sent_at) - min(sent_at)) * 1000, took, at_once)


def in_parallel(work, items: list) -> list:
    """Preparation (log-ins, lookups) eight at a time: only the volley itself needs to be at once."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(work, items))


@dataclass
class Mark:
    """The highest ids before a volley: whatever the volley did has larger ones."""

    audit: int
    voucher: int
    referral: int
    patient: int


@dataclass
class Effects:
    events: list[AuditEvent]
    vouchers: list[Voucher]
    referrals: list[Referral]
    patients: list[Patient]

    @property
    def ledger(self) -> Counter:
        """Audit events by action and outcome, refusals also by reason: ``redemption:refused:quota_full``."""
        return Counter(f"{event.action}:{event.outcome}" + (f":{event.reason}" if event.reason else "")
                       for event in self.events)

    def audited(self, action: str) -> list[AuditEvent]:
        return [event for event in self.events if event.action == action and event.outcome == "ok"]

    def describe(self) -> str:
        return (f"new rows: {len(self.patients)} patients, {len(self.referrals)} referrals, "
                f"{len(self.vouchers)} vouchers; audit: {dict(sorted(self.ledger.items()))}")


def take_mark() -> Mark:
    return Mark(*(db.session.scalar(select(func.coalesce(func.max(model.id), 0)))
                  for model in (AuditEvent, Voucher, Referral, Patient)))


def effects_since(mark: Mark) -> Effects:
    db.session.rollback()  # a fresh snapshot: see what the server committed
    return Effects(
        events=list(db.session.scalars(select(AuditEvent).where(AuditEvent.id > mark.audit).order_by(AuditEvent.id))),
        vouchers=list(db.session.scalars(select(Voucher).where(Voucher.id > mark.voucher).order_by(Voucher.id))),
        referrals=list(db.session.scalars(select(Referral).where(Referral.id > mark.referral)
                                          .order_by(Referral.id))),
        patients=list(db.session.scalars(select(Patient).where(Patient.id > mark.patient).order_by(Patient.id))),
    )


@dataclass
class Site:
    """One backend: its database, the real app under gunicorn, and logged-in desks."""

    backend: str
    env: dict[str, str]
    app: Flask
    desks: list[Desk]
    workdir: Path
    log: Path
    staff_ids: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def context(self):
        """The test's own view of the database (seeding and checking), through the real services."""
        with self.app.app_context():
            try:
                yield
            finally:
                db.session.remove()

    def log_tail(self, log: Path | None = None) -> str:
        text = (log or self.log).read_text(errors="replace")
        return text[-6000:]

    @contextmanager
    def campaign_rules(self, **values):
        """Set caps or quotas on the default campaign for one scenario, then put them back."""
        with self.context():
            campaign = clinic_settings.default_campaign()
            campaign_id, before = campaign.id, {name: getattr(campaign, name) for name in values}
            clinic_settings.update_campaign(campaign_id, values, Actor())
        try:
            yield campaign_id
        finally:
            with self.context():
                clinic_settings.update_campaign(campaign_id, before, Actor())


def expect_answers(site: Site, volley: Volley, expected: dict[int, int], reasons: dict[str, int] | None = None,
                   log: Path | None = None) -> None:
    """Exactly the expected status codes; any 5xx or dropped connection fails with the server's log."""
    broken = [answer for answer in volley.answers if answer.status is None or answer.status >= 500]
    assert not broken, (f"{len(broken)} requests broke: {volley.describe()}\n"
                        f"first body: {broken[0].body[:1000] or broken[0].error}\n"
                        f"server log (tail):\n{site.log_tail(log)}")
    assert volley.statuses == Counter(expected), f"expected {expected}, got {volley.describe()}"
    if reasons is not None:
        assert volley.reasons == Counter(reasons), f"expected refusals {reasons}, got {volley.describe()}"


def details(name: str = "Race Friend") -> dict[str, str]:
    """A new person's details as the desk types them in (every phone is new in this database)."""
    number = next(_numbers)
    return {"full_name": f"{name} {number}", "phone": f"139{number:08d}", "display_name": "", "external_id": ""}


def new_referrer() -> Patient:
    fields = details("Race Referrer")
    patient, _token = enrol_patient(PatientDetails(full_name=fields["full_name"], phone=fields["phone"]), Actor())
    return patient


def redeem_directly(code: str) -> redemption.RedemptionResult:
    """A redemption through the service, to set the scene (a used cap slot, a voucher to spend)."""
    fields = details("Earlier Friend")
    return redemption.redeem_code(code, PatientDetails(full_name=fields["full_name"], phone=fields["phone"]),
                                  Actor())


def places_used_this_month(campaign_id: int) -> int:
    month = clinic_local(utcnow()).strftime("%Y-%m")
    return db.session.scalar(select(CampaignMonthCount.used).where(
        CampaignMonthCount.campaign_id == campaign_id, CampaignMonthCount.month == month)) or 0


def redemption_shots(desks: list[Desk], code: str) -> tuple[list[Shot], list[dict]]:
    """Each desk looks the code up and fills the friend form with a different new friend."""
    friends = [details() for _ in desks]

    def prepare(pair):
        desk, friend = pair
        return desk.shot("/desk/redeem", {**desk.form_after_lookup(code, "/desk/redeem"), **friend})

    return in_parallel(prepare, list(zip(desks, friends))), friends


def spend_shots(desks: list[Desk], code: str) -> list[Shot]:
    return in_parallel(lambda desk: desk.shot("/desk/spend", desk.form_after_lookup(code, "/desk/spend")), desks)


def empty_postgresql_database(base_url: str, name: str) -> str:
    """Database ``name`` next to ``base_url``'s: created once, then emptied for every run; returns its URL.

    Emptying the schema takes milliseconds, whereas dropping a database forces a checkpoint,
    which takes seconds on a machine busy with other tests.
    """
    url = make_url(base_url).set(drivername="postgresql+psycopg")
    server = create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        if connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).scalar():
            # A server left over from an interrupted run would hold locks on the old tables.
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                               {"name": name})
        else:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    own = url.set(database=name)
    database = create_engine(own, isolation_level="AUTOCOMMIT")
    with database.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    database.dispose()
    return own.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def site(request, tmp_path):
    backend = request.param
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'race.db'}"
    else:
        # Each pytest-xdist worker has its own (tests/conftest.py does the same for the other tests).
        database_url = empty_postgresql_database(os.environ["TEST_DATABASE_URL"], f"race_desk_{WORKER}")
    app = None
    try:
        # The rate limiter would rightly refuse fifty attempts from one address: this module tests exactly-once.
        env = server_environment(database_url, tmp_path, RATELIMIT_ENABLED="0")
        migrate(env)
        app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "race-seeding",
                          "BATCH_FOLDER": env["BATCH_FOLDER"], "IMPORT_FOLDER": env["IMPORT_FOLDER"],
                          "UPLOAD_FOLDER": str(tmp_path / "uploads"), "PUBLIC_BASE_URL": env["PUBLIC_BASE_URL"]})
        with app.app_context():
            clinic_settings.update_clinic({"name": "Race Clinic", "currency": "CNY"}, Actor())
            clinic_settings.update_default_campaign(CAMPAIGN, Actor())
            staff = [create_staff(f"desk{number}@example.com", PASSWORD, Role.FRONT_DESK.value)
                     for number in range(1, DESK_STAFF + 1)]
            staff_ids = {member.email: member.id for member in staff}
            db.session.remove()
        log = tmp_path / "gunicorn.log"
        with gunicorn(env, workers=SERVER_WORKERS, log=log) as base_url:
            emails = list(staff_ids)
            desks = [Desk(base_url, emails[number % len(emails)]) for number in range(DESKS)]
            in_parallel(Desk.log_in, desks)
            yield Site(backend, env, app, desks, tmp_path, log, staff_ids)
    finally:
        if app is not None:
            with app.app_context():
                db.engine.dispose()


def fifty_desks_redeeming_one_scratch_card_register_one_friend_and_pay_once(site: Site):
    with site.context():
        referrer = new_referrer()
        batch = cards.print_personal_card(referrer.id, "classic", Actor())
        card = db.session.scalar(select(Card).where(Card.batch_id == batch.id))
        card_id, code = card.id, card.code
    shots, friends = redemption_shots(site.desks, code)
    with site.context():
        mark = take_mark()

    volley = fire(shots)
    print(f"{site.backend}: {volley.describe()}")

    expect_answers(site, volley, {200: 1, 409: 49}, {"already_redeemed": 49})
    with site.context():
        effects = effects_since(mark)
        card = db.session.get(Card, card_id)
        assert card.status == "redeemed", f"card is {card.status}; {effects.describe()}"
        assert [r.card_id for r in effects.referrals] == [card_id], effects.describe()
        referral = effects.referrals[0]
        winner = friends[volley.winners()[0]]
        assert [(p.full_name, p.phone) for p in effects.patients] == [(winner["full_name"], winner["phone"])], \
            f"the friend registered is not the one whose desk was told so; {effects.describe()}"
        assert sorted(v.beneficiary for v in effects.vouchers) == ["friend", "referrer"], effects.describe()
        assert {v.referral_id for v in effects.vouchers} == {referral.id}
        assert volley.answers[volley.winners()[0]].receipt_voucher_ids() == [v.id for v in effects.vouchers]
        ledger = effects.ledger
        assert (ledger["redemption:ok"], ledger["voucher.issued:ok"], ledger["redemption:refused:already_redeemed"]) \
            == (1, 2, 49), effects.describe()
        assert [e.referral_id for e in effects.audited("redemption")] == [referral.id]
        assert sorted(e.voucher_id for e in effects.audited("voucher.issued")) == [v.id for v in effects.vouchers]


def fifty_desks_spending_one_voucher_spend_it_once(site: Site):
    with site.context():
        voucher_id = redeem_directly(new_referrer().personal_code).friend_voucher.id
        code = db.session.get(Voucher, voucher_id).code
    shots = spend_shots(site.desks, code)
    with site.context():
        mark = take_mark()

    volley = fire(shots)
    print(f"{site.backend}: {volley.describe()}")

    expect_answers(site, volley, {200: 1, 409: 49}, {"already_spent": 49})
    winner = volley.answers[volley.winners()[0]]
    assert "Spent. Take the voucher off the bill." in winner.body
    with site.context():
        effects = effects_since(mark)
        voucher = db.session.get(Voucher, voucher_id)
        assert voucher.status == "spent"
        assert voucher.spent_by_id == site.staff_ids[shots[volley.winners()[0]].desk.email], \
            "the spend is recorded against another desk than the one told 'Spent'"
        assert not effects.vouchers and not effects.referrals and not effects.patients, effects.describe()
        ledger = effects.ledger
        assert (ledger["voucher.spent:ok"], ledger["voucher.spend:refused:already_spent"]) == (1, 49), \
            effects.describe()
        assert [e.voucher_id for e in effects.audited("voucher.spent")] == [voucher_id]


def twenty_friends_at_a_referrers_last_capped_place_pay_the_referrer_once(site: Site):
    """Over the cap the friend is still registered and paid; only the referrer's reward waits for review."""
    with site.context():
        referrer = new_referrer()
        referrer_id, code = referrer.id, referrer.personal_code
    with site.campaign_rules(cap_referrals_per_year=2):
        with site.context():
            redeem_directly(code)  # one of the two places is used: one is left
        shots, friends = redemption_shots(site.desks[:20], code)
        with site.context():
            mark = take_mark()

        volley = fire(shots)
        print(f"{site.backend}: {volley.describe()}")

    expect_answers(site, volley, {200: 20})
    both_paid = [a for a in volley.answers if "both vouchers are issued" in a.body]
    held = [a for a in volley.answers if "sent for manager approval: yearly cap reached" in a.body]
    assert (len(both_paid), len(held)) == (1, 19), f"receipts: {len(both_paid)} fully paid, {len(held)} held"
    with site.context():
        effects = effects_since(mark)
        assert sorted(p.phone for p in effects.patients) == sorted(f["phone"] for f in friends), effects.describe()
        assert {r.referrer_id for r in effects.referrals} == {referrer_id} and len(effects.referrals) == 20
        by_side = Counter(v.beneficiary for v in effects.vouchers)
        assert by_side == {"friend": 20, "referrer": 1}, f"vouchers {dict(by_side)}; {effects.describe()}"
        referral_ids = [r.id for r in effects.referrals]
        statuses = Counter(db.session.execute(select(Reward.beneficiary, Reward.status)
                                              .where(Reward.referral_id.in_(referral_ids))).all())
        assert statuses == {("friend", "issued"): 20, ("referrer", "issued"): 1, ("referrer", "review"): 19}, statuses
        reviews = db.session.scalars(select(ReviewRequest).where(ReviewRequest.referrer_id == referrer_id)).all()
        assert Counter((r.kind, r.status) for r in reviews) == {("over_cap", "pending"): 19}
        assert db.session.scalar(select(ReferrerYearTotal.rewarded_count)
                                 .where(ReferrerYearTotal.referrer_id == referrer_id)) == 2
        ledger = effects.ledger
        assert (ledger["redemption:ok"], ledger["voucher.issued:ok"], ledger["reward.held_for_review:ok"]) \
            == (20, 21, 19), effects.describe()
        assert not [key for key in ledger if key.startswith("redemption:refused")], effects.describe()
        assert sorted(e.referral_id for e in effects.audited("redemption")) == referral_ids
        assert sorted(e.voucher_id for e in effects.audited("voucher.issued")) == [v.id for v in effects.vouchers]


def twenty_friends_for_the_last_place_in_the_monthly_quota_register_one(site: Site):
    with site.context():
        code = new_referrer().personal_code
        used = places_used_this_month(clinic_settings.default_campaign().id)
    with site.campaign_rules(friend_monthly_quota=used + 2):
        with site.context():
            redeem_directly(code)
            assert rewards.quota_left(clinic_settings.default_campaign()) == 1, "the scene: one place left"
        shots, friends = redemption_shots(site.desks[:20], code)
        with site.context():
            mark = take_mark()

        volley = fire(shots)
        print(f"{site.backend}: {volley.describe()}")

        with site.context():
            assert rewards.quota_left(clinic_settings.default_campaign()) == 0
    expect_answers(site, volley, {200: 1, 409: 19}, {"quota_full": 19})
    with site.context():
        effects = effects_since(mark)
        winner = friends[volley.winners()[0]]
        assert [p.phone for p in effects.patients] == [winner["phone"]], effects.describe()
        assert len(effects.referrals) == 1 and len(effects.vouchers) == 2, effects.describe()
        ledger = effects.ledger
        assert (ledger["redemption:ok"], ledger["voucher.issued:ok"], ledger["redemption:refused:quota_full"]) \
            == (1, 2, 19), effects.describe()


def ten_replays_of_one_redemption_form_redeem_once_and_answer_alike(site: Site):
    with site.context():
        code = new_referrer().personal_code
    desk = site.desks[0]
    form = {**desk.form_after_lookup(code, "/desk/redeem"), **details()}
    shots = [desk.shot("/desk/redeem", form) for _ in range(10)]
    with site.context():
        mark = take_mark()

    volley = fire(shots)
    print(f"{site.backend}: {volley.describe()}")

    expect_answers(site, volley, {200: 10})
    first = [a for a in volley.answers if "is registered and both vouchers are issued" in a.body]
    replays = [a for a in volley.answers if "This redemption was already done" in a.body]
    assert (len(first), len(replays)) == (1, 9), f"{len(first)} first answers, {len(replays)} replay answers"
    with site.context():
        effects = effects_since(mark)
        assert [p.phone for p in effects.patients] == [form["phone"]], effects.describe()
        assert len(effects.referrals) == 1 and len(effects.vouchers) == 2, effects.describe()
        shown = {tuple(a.receipt_voucher_ids()) for a in volley.answers}
        assert shown == {tuple(v.id for v in effects.vouchers)}, f"the answers show different vouchers: {shown}"
        assert db.session.get(FormSubmission, form["idempotency_key"]).result_id == effects.referrals[0].id
        ledger = effects.ledger
        assert (ledger["redemption:ok"], ledger["voucher.issued:ok"]) == (1, 2), effects.describe()
        assert not [key for key in ledger if ":refused" in key], effects.describe()


def ten_replays_of_one_spend_form_spend_once_and_answer_alike(site: Site):
    with site.context():
        voucher_id = redeem_directly(new_referrer().personal_code).friend_voucher.id
        code = db.session.get(Voucher, voucher_id).code
    desk = site.desks[0]
    form = desk.form_after_lookup(code, "/desk/spend")
    shots = [desk.shot("/desk/spend", form) for _ in range(10)]
    with site.context():
        mark = take_mark()

    volley = fire(shots)
    print(f"{site.backend}: {volley.describe()}")

    expect_answers(site, volley, {200: 10})
    spent = [a for a in volley.answers if "Spent. Take the voucher off the bill." in a.body]
    replays = [a for a in volley.answers if "Already marked spent by this form" in a.body]
    assert (len(spent), len(replays)) == (1, 9), f"{len(spent)} 'Spent' answers, {len(replays)} replay answers"
    with site.context():
        effects = effects_since(mark)
        assert db.session.get(Voucher, voucher_id).status == "spent"
        ledger = effects.ledger
        assert ledger["voucher.spent:ok"] == 1 and not [key for key in ledger if ":refused" in key], \
            effects.describe()


def the_harness_sees_a_naive_check_then_write_pay_more_than_once(site: Site):
    """The negative control: if this passes, the volleys above really arrive at the same moment."""
    with site.context():
        codes = [db.session.get(Voucher, redeem_directly(new_referrer().personal_code).friend_voucher.id).code
                 for _ in range(2)]
    log = site.workdir / "gunicorn-naive.log"
    with gunicorn(site.env, workers=SERVER_WORKERS, app="tests.race_app:app", log=log) as base_url:
        desks = [desk.at(base_url) for desk in site.desks]
        with site.context():
            mark = take_mark()
        one_by_one = fire([desk.shot(NAIVE_SPEND_PATH, {"code": codes[0]}) for desk in desks], at_once=False)
        print(f"{site.backend}: {one_by_one.describe()}")
        at_once = fire([desk.shot(NAIVE_SPEND_PATH, {"code": codes[1]}) for desk in desks])
        print(f"{site.backend}: {at_once.describe()}")

    expect_answers(site, one_by_one, {200: 1, 409: 49}, log=log)
    broken = [a for a in at_once.answers if a.status is None or a.status >= 500]
    assert not broken, f"{at_once.describe()}\nserver log (tail):\n{site.log_tail(log)}"
    assert len(at_once.winners()) > 1, (
        f"the naive endpoint paid only once: the harness did not fire at once. {at_once.describe()}")
    with site.context():
        naive_spends = Counter(e.voucher_id for e in effects_since(mark).audited(NAIVE_SPEND_ACTION))
        ids = {code: db.session.scalar(select(Voucher.id).where(Voucher.code == code)) for code in codes}
    assert naive_spends == {ids[codes[0]]: 1, ids[codes[1]]: len(at_once.winners())}, \
        f"the database should show every 'spent' answer as an effect: {naive_spends}; {at_once.describe()}"


SCENARIOS = (
    the_harness_sees_a_naive_check_then_write_pay_more_than_once,
    fifty_desks_redeeming_one_scratch_card_register_one_friend_and_pay_once,
    fifty_desks_spending_one_voucher_spend_it_once,
    twenty_friends_at_a_referrers_last_capped_place_pay_the_referrer_once,
    twenty_friends_for_the_last_place_in_the_monthly_quota_register_one,
    ten_replays_of_one_redemption_form_redeem_once_and_answer_alike,
    ten_replays_of_one_spend_form_spend_once_and_answer_alike,
)


def test_every_effect_happens_exactly_once_when_the_same_form_arrives_at_once(site):
    """Every scenario runs against one server per backend and reports on its own.

    One test per backend rather than one per scenario: pytest-xdist spreads tests over its
    workers, and scenarios of one backend on two workers would each start a server, migrate
    and log fifty desks in, for nothing.
    """
    failures = []
    for scenario in SCENARIOS:
        try:
            scenario(site)
        except AssertionError as failure:
            failures.append(f"--- {scenario.__name__}:\n{failure}")
    assert not failures, (f"{len(failures)} of {len(SCENARIOS)} scenarios failed on {site.backend}:\n"
                          + "\n".join(failures))
