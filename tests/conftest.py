"""Fixtures and factories. Every test gets a fresh app and database.

Tests run on SQLite (a real file in WAL mode) and, when TEST_DATABASE_URL is set, once more
on PostgreSQL: the ``app`` fixture is parametrised over the available backends.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from itertools import count

import pytest
from flask import has_app_context
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from clinic import create_app
from clinic.extensions import db
from clinic.models import (
    AuditEvent,
    Branch,
    Campaign,
    FormSubmission,
    OutboxEvent,
    FriendLead,
    Patient,
    Referral,
    ReviewRequest,
    Reward,
    Role,
    Tier,
    VisitFeedback,
    Voucher,
)
from clinic.services import clinic_settings, jobs, webhooks
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.staff import create_staff
from clinic.services.transaction import Actor

# browser_harness: the real-browser tests' Chromium and served sites, shared by every test marked `browser`.
pytest_plugins = ["tests.api_error_coverage", "tests.browser_harness"]

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
PASSWORD = "correct horse battery"
CAMPAIGN = {
    "name": "Bring a friend",
    "referrer_reward_kind": "money", "referrer_reward_amount": 20000, "referrer_reward_label": "",
    "friend_reward_kind": "service", "friend_reward_amount": 0, "friend_reward_label": "1 bed-day waived",
    "voucher_valid_days": 90,
}


def _database_url(backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return _worker_postgresql_url()


@functools.cache
def _worker_postgresql_url() -> str:
    """TEST_DATABASE_URL, or under pytest-xdist a database of this worker's own next to it.

    Each test drops and creates every table, so two workers must never share a database.
    """
    url = make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url.render_as_string(hide_password=False)
    own = url.set(database=f"{url.database}_{worker}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                    {"name": own.database}).scalar()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{own.database}"'))
    engine.dispose()
    return own.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path):
    marker = request.node.get_closest_marker("app_settings")
    app = create_app({
        "TESTING": True,
        "RATELIMIT_ENABLED": False,  # tests/test_limits.py turns it on where limits are the subject
        "INVITE_OPENS_FLUSH_SECONDS": 0,  # each open written at once (tests/test_invite_opens.py tries the batches)
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": _database_url(request.param, tmp_path),
        "UPLOAD_FOLDER": str(tmp_path / "uploads"),
        "BATCH_FOLDER": str(tmp_path / "batches"),
        "IMPORT_FOLDER": str(tmp_path / "imports"),
        "PUBLIC_BASE_URL": "https://clinic.test",
        **(marker.kwargs if marker else {}),
    })
    # Files the app writes at run time (the demo's logins) go to the test's folder, not the project's instance/.
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        db.drop_all()
        db.create_all()
        clinic_settings.update_clinic({"name": "Test Clinic", "currency": "CNY"}, Actor())
        clinic_settings.update_default_campaign(CAMPAIGN, Actor())
        yield app
        jobs.wait_for_all()  # no background job may outlive its test's database
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def backend(app) -> str:
    return db.engine.dialect.name


@pytest.fixture
def make_staff(app):
    numbers = count(1)

    def make(role: str = Role.FRONT_DESK.value, email: str | None = None, password: str = PASSWORD):
        return create_staff(email or f"staff{next(numbers)}@example.com", password, role)

    return make


@pytest.fixture
def enable_two_step(app):
    """``enable_two_step(staff) -> (pyotp.TOTP, recovery codes)``: two-step login turned on through the service.

    The confirming code is the current step's, so it is used up: a login's code is ``next_code(totp)``.
    """
    import pyotp

    from clinic.services import two_step

    def enable(staff):
        totp = pyotp.TOTP(two_step.start_enrolment(staff.id, Actor()))
        return totp, two_step.confirm_enrolment(staff.id, totp.now(), Actor())

    return enable


def next_code(totp, steps: int = 1) -> str:
    """The authenticator's code ``steps`` x 30 s from now (pyotp's ``at``: no sleeping); one step ahead is
    still accepted, and is later than the step the enrolment used."""
    import time

    return totp.at(time.time() + 30 * steps)


@pytest.fixture
def desk_user(make_staff):
    return make_staff(Role.FRONT_DESK.value, "desk@example.com")


@pytest.fixture
def manager_user(make_staff):
    return make_staff(Role.MANAGER.value, "manager@example.com")


@pytest.fixture
def actor(desk_user) -> Actor:
    return Actor(staff_id=desk_user.id, ip="127.0.0.1")


@pytest.fixture
def make_patient(app):
    """``make_patient(full_name=..., phone=...)`` -> (patient, progress token), through the service."""
    numbers = count(1)

    def make(full_name: str | None = None, phone: str | None = "auto", external_id: str | None = None,
             display_name: str = "", name_on_posters: bool = False, messages: str | None = None,
             language: str = "zh_CN"):
        """``messages="sms"``/``"wechat"``: the patient agreed to messages by that channel, in ``language``."""
        number = next(numbers)
        if phone == "auto":
            phone = f"1380000{number:04d}"
        details = PatientDetails(full_name=full_name or f"Patient {number}", display_name=display_name,
                                 phone=phone, external_id=external_id, name_on_posters=name_on_posters,
                                 preferred_channel=messages or "none", preferred_language=language,
                                 notification_consent=messages is not None)
        return enrol_patient(details, Actor())

    return make


@pytest.fixture
def give_feedback(app):
    """``give_feedback(token, score, now=None, call_me=False)`` -> the answer: a patient's "How was your visit?"
    answer through the service, and for a detractor with ``call_me`` their wish to be called."""
    from clinic.services import feedback

    def give(token: str, score: int, now=None, call_me: bool = False):
        given = feedback.record_answer(token, score, now=now)
        return feedback.request_callback(token, now=now) if call_me else given

    return give


@pytest.fixture
def gateway(app):
    """An SMS gateway subscribed to patients' messages; nothing is posted to it unless a test sends (it never does)."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE_NETWORKS=True, WEBHOOK_SEND_AFTER_COMMIT=False)
    return webhooks.register_endpoint(webhooks.EndpointRules.from_form(
        url="http://127.0.0.1:9/sms", events=["notification.requested"], description="SMS gateway"), Actor())


def messages_sent(template: str | None = None) -> list[dict]:
    """The ``notification.requested`` events written so far (of one template), oldest first."""
    events = db.session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "notification.requested")
                                .order_by(OutboxEvent.id)).all()
    db.session.rollback()
    return [event.payload for event in events if template is None or event.payload["template"] == template]


@pytest.fixture
def make_lead(app):
    """``make_lead(referrer, name=..., phone=...)`` -> the friend's call-back request, through the service (as the
    invite page's form sends it)."""
    from clinic.services import invitations, leads

    numbers = count(1)

    def make(referrer, name: str = "Lucy", phone: str | None = None):
        phone = phone or f"1397777{next(numbers):04d}"
        leads.request_call_back(invitations.invitation(referrer.personal_code), name, phone, "yes", "")
        return db.session.scalar(select(FriendLead).where(FriendLead.referrer_id == referrer.id,
                                                          FriendLead.phone == phone))

    return make


@pytest.fixture
def referrer(make_patient):
    patient, _token = make_patient(full_name="Wang Li", phone="13811112222", external_id="MRN-1")
    return patient


def friend(full_name: str = "Chen Jie", phone: str | None = "13933334444", external_id: str | None = None):
    return PatientDetails(full_name=full_name, phone=phone, external_id=external_id)


def counts() -> dict:
    """Row counts and states of everything an action could change, to prove that nothing did."""
    tables = {"patients": Patient, "referrals": Referral, "vouchers": Voucher, "friend_leads": FriendLead,
              "form_submissions": FormSubmission, "rewards": Reward, "branches": Branch, "tiers": Tier,
              "campaigns": Campaign, "reviews": ReviewRequest}
    result = {name: db.session.scalar(select(func.count()).select_from(model)) for name, model in tables.items()}
    result["audit_ok"] = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                           .where(AuditEvent.outcome == "ok"))
    result["spent"] = db.session.scalar(select(func.count()).select_from(Voucher).where(Voucher.status != "active"))
    result["reviews_decided"] = db.session.scalar(select(func.count()).select_from(ReviewRequest)
                                                  .where(ReviewRequest.status != "pending"))
    result["referrals_reversed"] = db.session.scalar(select(func.count()).select_from(Referral)
                                                     .where(Referral.status != "active"))
    result["referrals_visited"] = db.session.scalar(select(func.count()).select_from(Referral)
                                                    .where(Referral.visited_at.is_not(None)))
    result["campaign_edits"] = db.session.scalar(select(func.max(Campaign.updated_at)))
    result["visit_feedback"] = db.session.scalar(select(func.count()).select_from(VisitFeedback))
    result["feedback_calls"] = db.session.scalar(select(func.count()).select_from(VisitFeedback).where(
        VisitFeedback.callback_requested_at.is_not(None) | VisitFeedback.followed_up_at.is_not(None)))
    db.session.rollback()
    return result


class Browser:
    """The test client as a person's browser: it reads the CSRF token from the page like app.js does.

    Each request runs in an empty ``contextvars`` context, so it gets its own application
    context and database session, as it would in a server, instead of sharing the test's.
    """

    CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')

    def __init__(self, client):
        self.client = client

    @staticmethod
    def _isolated(call, *args, **kwargs):
        response = contextvars.Context().run(call, *args, **kwargs)
        if has_app_context():
            db.session.rollback()  # the test's own session then sees what the request committed
        return response

    def csrf_token(self) -> str:
        page = self._isolated(self.client.get, "/login", follow_redirects=True).get_data(as_text=True)
        match = self.CSRF_META.search(page)
        assert match, "no CSRF token on the page"
        return match.group(1)

    def get(self, url: str, htmx: bool = False, **kwargs):
        headers = kwargs.pop("headers", {})
        if htmx:
            headers["HX-Request"] = "true"
        return self._isolated(self.client.get, url, headers=headers, **kwargs)

    def post(self, url: str, data: dict | None = None, htmx: bool = False, csrf: bool = True, **kwargs):
        headers = kwargs.pop("headers", {})
        if htmx:
            headers["HX-Request"] = "true"
        if csrf:
            headers["X-CSRFToken"] = self.csrf_token()
        return self._isolated(self.client.post, url, data=data or {}, headers=headers, **kwargs)

    def login(self, email: str, password: str = PASSWORD):
        response = self.post("/login", {"email": email, "password": password})
        assert response.status_code == 303, response.get_data(as_text=True)
        return response


@pytest.fixture
def browser(app):
    return Browser(app.test_client())


@pytest.fixture
def desk(browser, desk_user):
    browser.login(desk_user.email)
    return browser


@pytest.fixture
def manager(app, manager_user):
    browser = Browser(app.test_client())
    browser.login(manager_user.email)
    return browser
