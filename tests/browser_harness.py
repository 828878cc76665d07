"""The real-browser harness: one served clinic per language, Debian's Chromium, and a watch on every page.

A *site* is the real app under gunicorn (tests/liveserver.py, with the project's gunicorn.conf.py) on a
fresh SQLite database made by the real migrations, with two staff accounts seeded before it starts.
The Chinese site is a Chinese clinic: its default language is ``zh_CN``. Each pytest-xdist worker
starts its own sites (own ports, own databases) on first use and keeps them for the session.

Every browser context is watched: console errors, uncaught page errors and Content-Security-Policy
violations (the ``securitypolicyviolation`` event, reported by an init script, and Chromium's own
console message) are collected, and the journey fails when there is any.

The session's Chromium (``chromium``) and sites (``sites``, and ``site``: one test per language) are fixtures
shared by every test marked ``browser`` (tests/conftest.py loads this module as a plugin): the journeys and the
accessibility checks run against the same servers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clinic import create_app
from clinic.extensions import db
from clinic.models import Role
from clinic.services import clinic_settings
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.redemption import redeem_code
from clinic.services.rewards import campaign_in_force
from clinic.services.staff import create_staff
from clinic.services.transaction import Actor
from clinic.services.urls import invite_url, progress_url, voucher_url
from tests.liveserver import PROJECT_ROOT, gunicorn, migrate, server_environment

LANGUAGES = ("en", "zh_CN")
PASSWORD = "correct horse battery"
MANAGER = "manager@example.com"
DESK = "desk@example.com"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESK_VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/130.0 Mobile Safari/537.36"}
# How each clinic looks in the README's pictures; the set-up journey changes it to other values (and
# the journeys that take those pictures put it back, since the journeys run in any order).
CLINIC_LOOKS = {
    "en": {"name": "Riverside Dental", "brand_colour": "#1d4ed8", "phone": "021 5555 0100"},
    "zh_CN": {"name": "康宁口腔诊所", "brand_colour": "#b91c1c", "phone": "021 5555 0100"},
}
# The address printed in links and QR codes (what patients' phones would reach); the journeys open the
# same paths on the test server (Site.local), and the desk is "scanned" the printed URL.
PUBLIC_ADDRESSES = {"en": "https://riverside-dental.example", "zh_CN": "https://kangning.example"}
# What each clinic's people are called and what its campaign pays, in its own language.
PEOPLE = {
    "en": {"referrer": ("Lucy Walker", "Lucy W."), "friend": ("Tom Baker", "Tom")},
    "zh_CN": {"referrer": ("王小明", "王小明"), "friend": ("李华", "李华")},
}
CAMPAIGNS = {
    "en": {"name": "Bring a friend", "referrer_amount": "200", "friend_label": "1 bed-day waived"},
    "zh_CN": {"name": "老带新", "referrer_amount": "200", "friend_label": "减免床位费1天"},
}
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
README_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
# The README's pictures (UPDATE_SCREENSHOTS=1): journey screenshot -> docs/screenshots/<name>-<lang>.png
README_PICTURES = {"redeem-done": "desk-redeemed", "invite-phone": "invite-phone", "progress-phone": "progress-phone"}

# Reported by every page of a watched context: Chromium also logs a violation to the console, but the
# event says which directive and what was blocked, for pages that swallow console output too.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("Content Security Policy violation: " + event.violatedDirective + " blocked " +
                (event.blockedURI || "inline") + " at " + event.sourceFile + ":" + event.lineNumber);
});
"""


@dataclass
class Site:
    """One served clinic: its language, its address, and the app object used to seed it directly."""

    language: str
    base_url: str
    app: object
    log: Path

    def local(self, absolute: str) -> str:
        """The page a printed link leads to, on this server."""
        parts = urlsplit(absolute)
        return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")

    @contextmanager
    def database(self):
        """An application context on the served database (for seeding and for checking what was stored)."""
        with self.app.app_context():
            try:
                yield db.session
            finally:
                db.session.remove()


def migrated_database(workdir: Path) -> Path:
    """An empty database made by the real migrations (`flask db upgrade`), to be copied for each site."""
    path = workdir / "migrated.db"
    migrate(server_environment(f"sqlite:///{path}", workdir / "migrations"))
    return path


def copy_database(source: Path, target: Path) -> None:
    """SQLite's own backup: a consistent copy, whatever the journal mode left beside the file."""
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)


@contextmanager
def serve_site(language: str, workdir: Path, migrated: Path):
    """A fresh clinic in ``language`` under gunicorn on a free port of 127.0.0.1, stopped on exit."""
    database = workdir / "clinic.db"
    env = server_environment(f"sqlite:///{database}", workdir, GUNICORN_ACCESS_LOG="-")
    copy_database(migrated, database)
    database_url = env["DATABASE_URL"]
    with APP_SET_UP:
        app = _seeded_app(language, workdir, env, database_url)
    log = workdir / "gunicorn.log"
    try:
        with gunicorn(env, workers=2, log=log) as base_url:
            site = Site(language, base_url, app, log)
            yield site
    finally:
        with app.app_context():
            db.engine.dispose()


# Sites start in threads, but their apps are built one at a time: CPython 3.11's compiler is not thread-safe
# (werkzeug compiles each URL rule; two at once fail with "AST constructor recursion depth mismatch").
APP_SET_UP = threading.Lock()


def _seeded_app(language: str, workdir: Path, env: dict[str, str], database_url: str):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "browser-seeding",
                      "BATCH_FOLDER": env["BATCH_FOLDER"], "IMPORT_FOLDER": env["IMPORT_FOLDER"],
                      "UPLOAD_FOLDER": str(workdir / "uploads"), "PUBLIC_BASE_URL": env["PUBLIC_BASE_URL"]})
    with app.app_context():
        create_staff(MANAGER, PASSWORD, Role.MANAGER.value)
        create_staff(DESK, PASSWORD, Role.FRONT_DESK.value)
        # A clinic in its own language: staff who chose none read the portal in it.
        clinic_settings.update_clinic({**CLINIC_LOOKS[language], "language": language,
                                       "public_base_url": PUBLIC_ADDRESSES[language]}, Actor())
        db.session.remove()
    return app


class Sites:
    """This test process's sites, started together on first use from one migrated database, and
    stopped together at the end."""

    def __init__(self, workdir: Path, languages):
        self._workdir = workdir
        self._languages = list(languages)
        self._running: dict[str, tuple] = {}  # language -> (its context manager, its site)

    def __call__(self, language: str) -> Site:
        if language not in self._running:
            others = [other for other in self._languages if other != language and other not in self._running]
            self._start([language, *others])
        return self._running[language][1]

    def _start(self, languages: list[str]) -> None:
        migrated = self._workdir / "migrated.db"
        if not migrated.exists():
            migrated = migrated_database(self._workdir)

        def start(language: str):
            manager = serve_site(language, self._workdir / language, migrated)
            return manager, manager.__enter__()

        with ThreadPoolExecutor(len(languages)) as pool:
            futures = {language: pool.submit(start, language) for language in languages}
        failures = []
        for language, future in futures.items():
            try:
                self._running[language] = future.result()
            except Exception as error:  # the other sites are stopped below, then the first failure raised
                failures.append(error)
        if failures:
            self.close()
            raise failures[0]

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self._running))) as pool:
            for manager, _ in self._running.values():
                pool.submit(manager.__exit__, None, None, None)
        self._running.clear()


@dataclass
class Watch:
    """What went wrong in a browser context's pages: console errors, page errors, CSP violations."""

    problems: list[str] = field(default_factory=list)

    def attach(self, context) -> None:
        context.add_init_script(CSP_LISTENER)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.problems.append(f"page error: {error.error}"))

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" or "Content Security Policy" in text or "Content-Security-Policy" in text:
            where = message.page.url if message.page else "?"
            self.problems.append(f"console {message.type} on {where}: {text}")


class Journey:
    """One journey's browser contexts, its screenshots, and the check that no page misbehaved."""

    def __init__(self, browser, site: Site, name: str):
        self.browser = browser
        self.site = site
        self.name = name
        self.language = site.language
        self.watch = Watch()
        self._contexts = []
        self.folder = SCREENSHOTS / site.language
        self.folder.mkdir(parents=True, exist_ok=True)

    def context(self, phone: bool = False):
        options = dict(PHONE) if phone else {"viewport": DESK_VIEWPORT}
        context = self.browser.new_context(base_url=self.site.base_url, locale="zh-CN" if self.language != "en" else "en-GB",
                                           **options)
        context.set_default_timeout(15_000)
        self.watch.attach(context)
        self._contexts.append(context)
        return context

    def staff_page(self, email: str):
        """A desk PC's browser, logged in through the log-in page."""
        page = self.context().new_page()
        log_in(page, email)
        return page

    def shot(self, page, step: str) -> Path:
        """The whole page, taken by growing the viewport to the page's height and back.

        Playwright's ``full_page=True`` leaves this Chromium hit-testing at the wrong place: the next
        click lands on the element under the button, and a form is never submitted.
        """
        path = self.folder / f"{self.name}-{step}.png"
        viewport = page.viewport_size
        height = page.evaluate("() => document.documentElement.scrollHeight")
        page.set_viewport_size({"width": viewport["width"], "height": max(height, viewport["height"])})
        try:
            page.screenshot(path=str(path))
        finally:
            page.set_viewport_size(viewport)
        picture = README_PICTURES.get(f"{self.name}-{step}")
        if picture and os.environ.get("UPDATE_SCREENSHOTS") == "1":
            README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, README_SCREENSHOTS / f"{picture}-{self.language}.png")
        return path

    def close(self) -> list[str]:
        for context in self._contexts:
            context.close()
        return self.watch.problems


def watched(journey: Journey, tolerated: tuple[str, ...] = ()):
    """A journey fixture's body: the journey for the test, then its browsers closed, and the test failed when a
    page reported a problem (console error, page error, CSP violation) other than one containing a ``tolerated`` text."""
    yield journey
    problems = [problem for problem in journey.close() if not any(text in problem for text in tolerated)]
    if problems:
        pytest.fail("The browser reported problems:\n" + "\n".join(problems), pytrace=False)


def log_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    if urlsplit(page.url).path == "/login":
        raise AssertionError(f"log-in as {email} failed: still on {page.url}")


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def sites(request, tmp_path_factory):
    # Only the languages this run has browser tests for (`-k zh_CN` starts one site).
    def language(item) -> str | None:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("site") if callspec and item.get_closest_marker("browser") else None

    wanted = {language(item) for item in request.session.items}
    sites = Sites(tmp_path_factory.mktemp("browser-sites"), [language for language in LANGUAGES if language in wanted])
    yield sites
    sites.close()


@pytest.fixture(params=LANGUAGES)
def site(request, sites):
    return sites(request.param)


_phones = itertools.count(1)


def new_phone() -> str:
    """A mobile number no other patient of this run has (the desk refuses a friend who is already a patient)."""
    return f"139{os.getpid() % 10000:04d}{next(_phones):04d}"


def restore_look(site: Site) -> None:
    """The clinic's name, brand colour and phone as in the README's pictures."""
    with site.database():
        clinic_settings.update_clinic(CLINIC_LOOKS[site.language], Actor())


def ensure_campaign(site: Site) -> None:
    """The campaign journey 1 sets up, when this site has none running yet (the journeys run in any order)."""
    terms = CAMPAIGNS[site.language]
    with site.database():
        if campaign_in_force(for_cards=False) is not None:
            return
        clinic_settings.update_default_campaign({
            "name": terms["name"],
            "referrer_reward_kind": "money", "referrer_reward_amount": int(terms["referrer_amount"]) * 100,
            "referrer_reward_label": "",
            "friend_reward_kind": "service", "friend_reward_amount": 0, "friend_reward_label": terms["friend_label"],
            "voucher_valid_days": 90,
        }, Actor())


@dataclass
class Enrolled:
    patient_id: int
    code: str
    invite_url: str
    progress_url: str


def enrol(site: Site, who: str = "referrer") -> Enrolled:
    """A patient enrolled at the desk (as journey 2 does in the browser)."""
    restore_look(site)
    full_name, display_name = PEOPLE[site.language][who]
    with site.database():
        patient, token = enrol_patient(PatientDetails(full_name=full_name, display_name=display_name,
                                                      phone=new_phone(), name_on_posters=True), Actor())
        return Enrolled(patient.id, patient.personal_code, invite_url(patient.personal_code), progress_url(token))


@dataclass
class Redeemed:
    referrer: Enrolled
    friend_name: str
    referrer_voucher_code: str
    voucher_url: str


def redeem(site: Site) -> Redeemed:
    """A referrer whose friend was redeemed at the desk (as journey 4 does in the browser)."""
    ensure_campaign(site)
    referrer = enrol(site)
    full_name, display_name = PEOPLE[site.language]["friend"]
    with site.database():
        result = redeem_code(referrer.code, PatientDetails(full_name=full_name, display_name=display_name,
                                                           phone=new_phone()), Actor())
        code = result.referrer_voucher.code
        return Redeemed(referrer, display_name, code, voucher_url(code))
