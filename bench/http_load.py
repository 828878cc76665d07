"""The app under gunicorn and wrk (issue 5, "Scale path"): requests/second and p50/p99 latency.

    .venv/bin/python -m bench http                          # from bench/__main__.py, with its heading
    .venv/bin/python -m bench.http_load [--duration 8] [--warmup 2] [--backends sqlite,postgresql]

For each backend (SQLite, a WAL file; PostgreSQL on 127.0.0.1:5432) one gunicorn, started by
``tests/liveserver.py`` with the project's ``gunicorn.conf.py`` (2 sync workers, the rate limiter on
with limits it never reaches, no worker recycling), serves in turn, each warmed up and then measured
by ``wrk`` with 16 connections:

- ``GET /livez``: "ok" without the database, the framework's ceiling on this machine;
- ``GET /p/<token>``: a patient's progress page, cycling over the pages of 2,000 patients;
- ``GET /r/<CODE>``: the invite page behind a personal code, over the same patients;
- ``POST /desk/redeem``: a logged-in desk redeems a different referrer's code with a new friend on
  every request, as htmx sends the desk's form (session cookie, ``X-CSRFToken``, ``HX-Request``);
  the answer is the receipt with both vouchers.

Patients are enrolled with the app's own CSV import service (``import_patients``), which writes
exactly the rows of an enrolment. Afterwards the database must hold one new referral, two vouchers
and one distinct code per answered redemption.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.liveserver import fresh_postgresql_database, gunicorn, migrate, server_environment  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

WORKERS, THREADS, CONNECTIONS = 2, 2, 16
PAGE_PATIENTS = 2000
POSTGRESQL_URL = os.environ.get("BENCH_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
POSTGRESQL_DATABASE = "bench_http"
LUA_SCRIPT = Path(__file__).with_name("wrk_requests.lua")
NEVER_REFUSE = "1000000/minute"
SERVER_SETTINGS = {
    "RATELIMIT_ENABLED": "1",  # the limiter stays on, as in production; its limits are out of reach
    "RATELIMIT_LOGIN": NEVER_REFUSE,
    "RATELIMIT_CODE_ATTEMPTS": NEVER_REFUSE,
    "RATELIMIT_WRONG_CODES": NEVER_REFUSE,
    "RATELIMIT_PUBLIC_PAGES": NEVER_REFUSE,
    "GUNICORN_MAX_REQUESTS": "1000000",  # no worker restart in the middle of a measurement
}
DESK_EMAIL, DESK_PASSWORD = "desk@bench.example", "correct horse battery"
USER_AGENT = "clinic-bench"  # the same for the login and for wrk: Flask-Login ties the session to it
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
CLINIC = {"name": "Harbour Family Dental 港湾口腔", "phone": "+86 21 5555 0100", "currency": "CNY",
          "address": "88 Harbour Road, Shanghai"}
CAMPAIGN = {"name": "Bring a friend", "referrer_reward_kind": "money", "referrer_reward_amount": 20000,
            "referrer_reward_label": "", "friend_reward_kind": "service", "friend_reward_amount": 0,
            "friend_reward_label": "Free first consultation", "voucher_valid_days": 90}

# Targets of issue 5, as a fraction of the ceiling (GET /livez on the same server).
PAGE_TARGET, REDEMPTION_TARGET, REDEMPTION_P99_MS = 0.40, 0.20, 50.0


@dataclass
class Run:
    """One wrk run's figures (from the Lua script's done())."""

    label: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx_3xx: int
    socket_errors: int
    sent: int
    exhausted: int
    cpu_ms: float | None = None  # CPU per request of gunicorn, its database processes and wrk (see CpuMeter)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def from_wrk(cls, label: str, figures: dict) -> "Run":
        return cls(label=label, requests=figures["requests"], seconds=figures["duration_us"] / 1e6,
                   p50_ms=figures["p50_us"] / 1000, p99_ms=figures["p99_us"] / 1000, max_ms=figures["max_us"] / 1000,
                   non_2xx_3xx=figures["non_2xx_3xx"],
                   socket_errors=sum(figures[key] for key in ("connect_errors", "read_errors", "write_errors",
                                                             "timeouts")),
                   sent=figures["sent"], exhausted=figures["exhausted"])


@dataclass
class BackendResult:
    backend: str
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class CpuMeter:
    """CPU time spent serving a run: the gunicorn master and workers, the PostgreSQL backends of the
    bench's database, and wrk itself, read from /proc before and after.

    ``livez CPU / endpoint CPU`` is the ratio to the ceiling that the CPU alone would allow (all of it is
    spent on the same cores); a measured ratio well below it means the endpoint waits (a lock, the
    database's round trips) rather than computes. It does not make a busy or throttled machine's figures
    steady: other work makes each instruction slower, the heavier endpoints more (in session 6 livez's CPU
    per request moved from 0.86 to 1.41 ms between runs half an hour apart). The targets are judged on the
    measured ratio.
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, port: int, database: str | None):
        self.marker = f"BIND=127.0.0.1:{port}".encode() + b"\0"
        self.database = database

    def _server_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.marker in (entry / "environ").read_bytes():
                        pids.append(int(entry.name))
                except OSError:  # gone, or not ours to read
                    continue
        return pids

    def _database_pids(self) -> list[int]:
        if not self.database:
            return []
        from sqlalchemy import create_engine, text

        engine = create_engine(POSTGRESQL_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as connection:
                return list(connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :name "
                                                    "AND pid <> pg_backend_pid()"), {"name": self.database}).scalars())
        finally:
            engine.dispose()

    def _seconds(self, pids: list[int]) -> dict[int, float]:
        spent = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            spent[pid] = (int(fields[11]) + int(fields[12])) / self.TICK  # utime, stime
        return spent

    def start(self) -> None:
        self.before = self._seconds(self._server_pids() + self._database_pids())
        self.children_before = sum(os.times()[2:4])

    def stop(self, requests: int) -> float | None:
        """CPU milliseconds per request since start(); processes that started in between count from zero."""
        after = self._seconds(self._server_pids() + self._database_pids())
        spent = sum(seconds - self.before.get(pid, 0.0) for pid, seconds in after.items())
        spent += sum(os.times()[2:4]) - self.children_before  # wrk, waited for by subprocess.run
        return 1000 * spent / requests if requests else None


def wrk(base_url: str, lines: list[str], mode: str, seconds: float, workdir: Path,
        headers: dict[str, str] | None = None) -> dict:
    """Run wrk over ``lines`` (see wrk_requests.lua) and return the figures its script prints."""
    requests_file = workdir / "requests.txt"
    requests_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", str(LUA_SCRIPT)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command += [base_url, "--", str(requests_file), str(THREADS), mode]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            return json.loads(line.removeprefix("BENCH-JSON "))
    raise RuntimeError(f"wrk gave no figures (exit {completed.returncode}): {completed.stderr or completed.stdout}")


class Seeder:
    """The benchmark's data, written through the app's services in an app context of this process."""

    def __init__(self, database_url: str, env: dict[str, str]):
        os.environ.update({key: env[key] for key in ("SECRET_KEY", "BATCH_FOLDER", "IMPORT_FOLDER",
                                                      "PUBLIC_BASE_URL")})
        from clinic import create_app

        self.app = create_app({"SQLALCHEMY_DATABASE_URI": database_url})
        self.patients = 0
        self.friends = 0
        self.tokens: dict[str, str] = {}  # personal code -> progress token, of every patient enrolled here

    def clinic(self) -> None:
        from clinic.models import Role
        from clinic.services import clinic_settings
        from clinic.services.staff import create_staff
        from clinic.services.transaction import Actor

        with self.app.app_context():
            clinic_settings.update_clinic(CLINIC, Actor())
            clinic_settings.update_default_campaign(CAMPAIGN, Actor())
            create_staff(DESK_EMAIL, DESK_PASSWORD, Role.FRONT_DESK.value)

    def referrers(self, count: int) -> list[tuple[str, str]]:
        """``count`` newly enrolled patients (CSV import, 5,000 a file): (personal code, progress token)."""
        from clinic.extensions import db
        from clinic.services.importer import MAX_ROWS, import_patients
        from clinic.services.transaction import Actor

        enrolled = []
        with self.app.app_context():
            while len(enrolled) < count:
                rows = min(MAX_ROWS, count - len(enrolled))
                numbers = range(self.patients + 1, self.patients + rows + 1)
                self.patients += rows
                csv = "name,phone\r\n" + "".join(f"Patient {n},138{n:08d}\r\n" for n in numbers)
                result = import_patients(csv.encode(), Actor())
                enrolled += [(patient.personal_code, patient.progress_token) for patient in result.patients]
            db.session.remove()
        self.tokens.update(enrolled)
        return enrolled

    def tokens_of_referrers_with_friends(self, count: int) -> list[str]:
        """Progress tokens of up to ``count`` patients whose code a friend has redeemed (by the redemption run)."""
        from sqlalchemy import select

        from clinic.extensions import db
        from clinic.models import Patient, Referral

        with self.app.app_context():
            codes = db.session.scalars(select(Patient.personal_code).join(Referral, Referral.referrer_id == Patient.id)
                                       .distinct().limit(count)).all()
            db.session.remove()
        return [self.tokens[code] for code in codes if code in self.tokens]

    def redemption(self, code: str) -> str:
        """One desk form, as the desk's page posts it: a new friend and a fresh idempotency key."""
        self.friends += 1
        return "/desk/redeem\t" + urlencode({
            "code": code, "full_name": f"Friend {self.friends}", "phone": f"139{self.friends:08d}",
            "display_name": "", "external_id": "", "idempotency_key": secrets.token_urlsafe(24)})

    def redemption_counts(self) -> dict[str, int]:
        from sqlalchemy import distinct, func, select

        from clinic.extensions import db
        from clinic.models import Referral, Voucher

        with self.app.app_context():
            counts = {"referrals": db.session.scalar(select(func.count()).select_from(Referral)),
                      "codes": db.session.scalar(select(func.count(distinct(Referral.code_used)))),
                      "vouchers": db.session.scalar(select(func.count()).select_from(Voucher))}
            db.session.remove()
        return counts

    def close(self) -> None:
        from clinic.extensions import db

        with self.app.app_context():
            db.engine.dispose()


def desk_headers(base_url: str) -> dict[str, str]:
    """Log the desk user in as a browser would; the headers that make wrk's requests that browser's."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.addheaders = [("User-Agent", USER_AGENT)]

    def csrf_token(path: str) -> str:
        with browser.open(base_url + path) as page:
            return CSRF_META.search(page.read().decode()).group(1)

    form = urlencode({"email": DESK_EMAIL, "password": DESK_PASSWORD, "csrf_token": csrf_token("/login")})
    with browser.open(base_url + "/login", form.encode()) as answer:
        if not answer.url.endswith("/desk/"):
            raise RuntimeError(f"desk login failed: ended on {answer.url}")
    token = csrf_token("/desk/")
    return {"Cookie": "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar), "X-CSRFToken": token,
            "User-Agent": USER_AGENT, "HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"}


def check_page(base_url: str, path: str, expected: str, headers: dict | None = None, body: str | None = None) -> None:
    """One request before the load: the page must answer 200 with ``expected`` in it (no bogus fast 404s)."""
    request = urllib.request.Request(base_url + path, data=body.encode() if body else None, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
        if answer.status != 200 or expected not in text:
            raise RuntimeError(f"{path}: status {answer.status}, {expected!r} not in the page")


def measure_page(result: BackendResult, label: str, base_url: str, paths: list[str], seconds: float, warmup: float,
                 workdir: Path, meter: CpuMeter) -> Run:
    """GET ``paths`` over and over: a warm-up run, then the measured one."""
    wrk(base_url, paths, "cycle", warmup, workdir)
    meter.start()
    run = Run.from_wrk(label, wrk(base_url, paths, "cycle", seconds, workdir))
    run.cpu_ms = meter.stop(run.requests)
    if run.non_2xx_3xx or run.socket_errors:
        result.problems.append(f"{label}: {run.non_2xx_3xx} answers not 2xx/3xx, {run.socket_errors} socket errors "
                               f"in {run.requests:,} requests")
    add_run(result, run)
    return run


def add_run(result: BackendResult, run: Run) -> None:
    result.runs.append(run)
    print(f"  {result.backend:10} {run.label:22} {run.rps:8,.0f} req/s  p50 {run.p50_ms:6.1f} ms  "
          f"p99 {run.p99_ms:6.1f} ms", flush=True)


def settle(longest: float) -> str | None:
    """Wait (at most ``longest`` s) until the 1-minute load average says the CPUs are mostly idle again.

    The second backend used to start right after the first one's last run, at the load that run made itself
    (1.5–1.7 on 2 CPUs): its figures came out lower for a reason that has nothing to do with it. The load average
    decays with a one-minute time constant, so about 40 s of quiet halve it. Other work on the machine may keep it
    up: the wait ends at ``longest`` and the load is reported either way.
    """
    quiet = 0.25 * (os.cpu_count() or 1)
    started = time.monotonic()
    while os.getloadavg()[0] > quiet and time.monotonic() - started < longest:
        time.sleep(2)
    waited = time.monotonic() - started
    return f"waited {waited:.0f} s for the load to settle" if waited >= 1 else None


def bench_backend(backend: str, database_url: str, workdir: Path, seconds: float, warmup: float,
                  settle_seconds: float = 0) -> BackendResult:
    result = BackendResult(backend)
    if settle_seconds and (waited := settle(settle_seconds)):
        result.notes.append(waited)
    load = os.getloadavg()
    result.notes.append(f"load average at the start {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)"
                        + (f": BUSY, other work on these {os.cpu_count()} CPUs lowers every figure"
                           if load[0] > 0.5 * (os.cpu_count() or 1) else ""))
    env = server_environment(database_url, workdir, **SERVER_SETTINGS)
    migrate(env)
    seeder = Seeder(database_url, env)
    try:
        seeder.clinic()
        started = time.perf_counter()
        patients = seeder.referrers(PAGE_PATIENTS)
        result.notes.append(f"{PAGE_PATIENTS:,} patients enrolled in {time.perf_counter() - started:.1f} s")
        log = workdir / "gunicorn.log"
        with gunicorn(env, workers=WORKERS, log=log) as base_url:
            meter = CpuMeter(int(base_url.rsplit(":", 1)[1]),
                             None if backend == "sqlite" else make_url(database_url).database)
            code, token = patients[0]
            # The patient's own code, as the page shows it: whatever the wording or language around it.
            check_page(base_url, f"/p/{token}", f"{code[:4]}-{code[4:]}")
            check_page(base_url, f"/r/{code}", "recommends")
            ceiling = measure_page(result, "GET /livez (ceiling)", base_url, ["/livez"] * THREADS, seconds, warmup,
                                   workdir, meter)
            measure_page(result, "GET /p/<token>", base_url, [f"/p/{token}" for _, token in patients], seconds,
                         warmup, workdir, meter)
            measure_page(result, "GET /r/<CODE>", base_url, [f"/r/{code}" for code, _ in patients], seconds,
                         warmup, workdir, meter)
            bench_redemption(result, seeder, base_url, ceiling, seconds, warmup, workdir, meter)
            # The same page for patients whose code a friend has just redeemed: a friend, a reward and an
            # active voucher with its QR to show, an image of its own (the page above is a newly enrolled patient's).
            with_friends = seeder.tokens_of_referrers_with_friends(PAGE_PATIENTS)
            if with_friends:
                check_page(base_url, f"/p/{with_friends[0]}", '<img src="/v/')  # the voucher QR
                measure_page(result, "GET /p/<token> friend", base_url, [f"/p/{token}" for token in with_friends],
                             seconds, warmup, workdir, meter)
        errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line or "ERROR" in line]
        if errors:
            result.problems.append(f"gunicorn logged {len(errors)} errors, first: {errors[0][:200]} (log: {log})")
    finally:
        seeder.close()
    return result


def bench_redemption(result: BackendResult, seeder: Seeder, base_url: str, ceiling: Run, seconds: float,
                     warmup: float, workdir: Path, meter: CpuMeter) -> None:
    """Redemptions, each with an unused referrer's code; enough codes for the run, counted after it."""
    headers = desk_headers(base_url)
    first = seeder.referrers(1)[0][0]
    body = seeder.redemption(first).split("\t", 1)[1]
    check_page(base_url, "/desk/redeem", "both vouchers are issued", headers, body)
    # The warm-up gets codes for the ceiling's rate; the measured run for 3 times the warm-up's rate
    # (and the script reports any request that found no code left).
    warmup_lines = [seeder.redemption(code) for code, _ in seeder.referrers(int(ceiling.rps * warmup) + 100)]
    warm = Run.from_wrk("warm-up", wrk(base_url, warmup_lines, "once", warmup, workdir, headers))
    needed = int(min(ceiling.rps, 3 * warm.rps) * seconds) + 500
    lines = [seeder.redemption(code) for code, _ in seeder.referrers(needed)]
    before = settled_counts(seeder)
    meter.start()
    run = Run.from_wrk("POST /desk/redeem", wrk(base_url, lines, "once", seconds, workdir, headers))
    run.cpu_ms = meter.stop(run.requests)
    after = settled_counts(seeder)
    add_run(result, run)
    created = after["referrals"] - before["referrals"]
    answered = run.requests - run.non_2xx_3xx
    cut_off = run.sent - run.requests  # sent, but wrk stopped before the answer came
    check = (f"{run.label}: {answered:,} answered 2xx/3xx, {run.non_2xx_3xx} other answers, "
             f"{run.socket_errors} socket errors; {created:,} referrals created "
             f"(+{after['vouchers'] - before['vouchers']:,} vouchers); {run.sent:,} forms sent, "
             f"{cut_off} of them cut off by the end of the run")
    consistent = (answered <= created <= answered + cut_off and after["vouchers"] - before["vouchers"] == 2 * created
                  and after["codes"] == after["referrals"])
    if run.exhausted:
        result.problems.append(f"{run.label}: ran out of codes ({run.exhausted} requests without one): "
                               "seed more for this rate")
    if not consistent or run.non_2xx_3xx or run.socket_errors:
        result.problems.append("INCONSISTENT " + check)
    else:
        result.notes.append("OK " + check)


def settled_counts(seeder: Seeder) -> dict[str, int]:
    """The counts once the server is idle: requests wrk cut off at its end may still be answered."""
    counts = seeder.redemption_counts()
    while True:
        time.sleep(0.5)
        again = seeder.redemption_counts()
        if again == counts:
            return counts
        counts = again


def print_table(results: list[BackendResult]) -> bool:
    header = (f"{'backend':10} {'endpoint':22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'of ceiling':>10} "
              f"{'CPU ms':>7} {'CPU ratio':>9}  target")
    print(header)
    print("-" * (len(header) + 30))
    all_passed = True
    for result in results:
        ceiling = next((run for run in result.runs if run.label.startswith("GET /livez")), None)
        for run in result.runs:
            ratio = run.rps / ceiling.rps if ceiling else None
            verdict = ""
            if run.label.startswith(("GET /p/", "GET /r/")):
                passed = ratio is not None and ratio >= PAGE_TARGET
                verdict = f"{'PASS' if passed else 'FAIL'} (>= {PAGE_TARGET:.0%} of the ceiling)"
            elif run.label.startswith("POST"):
                passed = ratio is not None and ratio >= REDEMPTION_TARGET and run.p99_ms < REDEMPTION_P99_MS
                verdict = (f"{'PASS' if passed else 'FAIL'} (>= {REDEMPTION_TARGET:.0%} of the ceiling, "
                           f"p99 < {REDEMPTION_P99_MS:.0f} ms)")
            else:
                passed = True
            all_passed = all_passed and passed
            estimate = ceiling.cpu_ms / run.cpu_ms if ceiling and ceiling.cpu_ms and run.cpu_ms else None
            print(f"{result.backend:10} {run.label:22} {run.rps:8,.0f} {run.p50_ms:7.1f} {run.p99_ms:7.1f} "
                  f"{ratio:>10.1%} {_figure(run.cpu_ms, '7.2f')} {_figure(estimate, '9.1%')}  {verdict}"
                  + ("" if passed else "   <<<<<< FAIL"))
    return all_passed


def _figure(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else "?".rjust(width)


def versions() -> str:
    import importlib.metadata
    import sqlite3

    from sqlalchemy import create_engine, text

    parts = [f"{os.cpu_count()} CPUs", f"Python {sys.version.split()[0]}"]
    parts += [f"{name} {importlib.metadata.version(name)}" for name in ("flask", "gunicorn", "sqlalchemy", "psycopg")]
    parts.append(f"SQLite {sqlite3.sqlite_version}")
    try:
        engine = create_engine(POSTGRESQL_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as connection:
            parts.append("PostgreSQL " + connection.execute(text("SHOW server_version")).scalar().split()[0])
        engine.dispose()
    except Exception:  # reported where it matters, in the PostgreSQL run
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()
    parts.append(f"wrk {wrk_version[1] if len(wrk_version) > 1 else '?'}")
    return ", ".join(parts)


def bench_http(seconds: float = 8, warmup: float = 2, backends: tuple[str, ...] = ("sqlite", "postgresql"),
               settle_seconds: float = 90) -> bool:
    """Measure every endpoint on every backend, print the table and the checks; True when all pass."""
    if shutil.which("wrk") is None:
        print("  NOTE: wrk is not installed (Debian package wrk; `make bench` installs it): no HTTP figures")
        return False
    print(f"HTTP: gunicorn {WORKERS} sync workers, wrk {THREADS} threads x {CONNECTIONS} connections, "
          f"{warmup:g} s warm-up then {seconds:g} s per endpoint")
    print(f"  {versions()}")
    results = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-http-{backend}-") as folder:
            workdir = Path(folder)
            try:
                if backend == "sqlite":
                    url = f"sqlite:///{workdir / 'bench.db'}"
                else:
                    url = fresh_postgresql_database(POSTGRESQL_URL, POSTGRESQL_DATABASE)
                results.append(bench_backend(backend, url, workdir, seconds, warmup, settle_seconds))
            except Exception as error:  # a report: say what broke and go on with the other backend
                detail = getattr(error, "stderr", None) or b""
                detail = (detail.decode(errors="replace") if isinstance(detail, bytes) else detail).strip()
                results.append(BackendResult(backend, problems=[f"{type(error).__name__}: {error}"
                                                                + (f"\n{detail[-2000:]}" if detail else "")]))
    print()
    all_passed = print_table(results)
    print("  req/s over the whole run; p50/p99: wrk's latency percentiles; of ceiling: req/s / GET /livez's req/s")
    print("  CPU ms: CPU per request of gunicorn, the database's processes and wrk; CPU ratio: GET /livez's CPU ms")
    print("  / this one's, the ratio the CPU alone allows (well above 'of ceiling': the endpoint waits more than")
    print("  it works)")
    print()
    print("Checks:")
    for result in results:
        for note in result.notes:
            print(f"  {result.backend:10} {note}")
        for problem in result.problems:
            print(f"  {result.backend:10} FAIL: {problem}")
    return all_passed and not any(result.problems for result in results)


def main() -> int:
    global WORKERS
    parser = argparse.ArgumentParser(prog="python -m bench.http_load", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds measured per endpoint")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per endpoint")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"gunicorn sync workers (default {WORKERS}, as in the issue; production's default is 2 per CPU)")
    parser.add_argument("--settle", type=float, default=90,
                        help="before each backend, wait up to this many seconds for the load average to fall")
    parser.add_argument("--result", type=Path, help="write {\"passed\": true|false} here (for python -m bench)")
    options = parser.parse_args()
    passed = bench_http(options.duration, options.warmup, tuple(options.backends.split(",")), options.settle)
    if options.result:
        options.result.write_text(json.dumps({"passed": passed}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
