"""The HTTP benchmark's requests in one process, without HTTP: CPU time and statements per request.

    .venv/bin/python -m bench.inprocess [--requests 300] [--only redeem] [--backend sqlite|postgresql]

(``friend`` is the progress page of a referrer a friend has come for, which the HTTP benchmark also measures.)

Steadier than the HTTP figures on a shared machine (it counts this process's CPU time, not the wall
clock), so it is the one to compare two versions of a change with; py-spy or cProfile can wrap it
(``py-spy record -f raw -o out.txt -- .venv/bin/python -m bench.inprocess --only progress``).
The data and the requests are the HTTP benchmark's (``bench/http_load.py``): 2,000 newly imported
patients, their progress and invite pages, and desk redemptions as htmx sends them, each with a new
code, friend and idempotency key. Run it on both versions in turn, several times: single runs vary by ±5 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.http_load import (CSRF_META, DESK_EMAIL, DESK_PASSWORD, PAGE_PATIENTS, POSTGRESQL_URL,  # noqa: E402
                             SERVER_SETTINGS, USER_AGENT, Seeder)
from tests.liveserver import fresh_postgresql_database, migrate, server_environment  # noqa: E402


ENDPOINTS = ("livez", "progress", "invite", "redeem", "friend")


def argument_parser(prog: str, description: str, requests: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--requests", type=int, default=requests, help="measured requests per endpoint")
    parser.add_argument("--only", choices=ENDPOINTS)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    return parser


def prepare(options: argparse.Namespace):
    """The seeded app and one callable per endpoint (request number -> answer); and the statement counter.

    Shared with bench/instructions.py, which counts the same requests' instructions under callgrind.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    url = (f"sqlite:///{workdir / 'bench.db'}" if options.backend == "sqlite"
           else fresh_postgresql_database(POSTGRESQL_URL, "bench_inprocess"))
    env = server_environment(url, workdir, **SERVER_SETTINGS)
    migrate(env)
    os.environ.update({key: value for key, value in env.items() if key.startswith("RATELIMIT")})
    seeder = Seeder(url, env)
    seeder.clinic()
    patients = seeder.referrers(PAGE_PATIENTS)
    codes = iter(code for code, _ in seeder.referrers(options.requests + 50))
    app = seeder.app

    from sqlalchemy import event

    from clinic.extensions import db

    statements = [0]
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.__setitem__(0, statements[0] + 1))
    anonymous, desk = app.test_client(), app.test_client()
    desk.environ_base["HTTP_USER_AGENT"] = USER_AGENT
    token = CSRF_META.search(desk.get("/login").get_data(as_text=True)).group(1)
    desk.post("/login", data={"email": DESK_EMAIL, "password": DESK_PASSWORD, "csrf_token": token})
    desk_token = CSRF_META.search(desk.get("/desk/").get_data(as_text=True)).group(1)

    def post_redemption(code: str):
        form = dict(parse_qsl(seeder.redemption(code).split("\t", 1)[1]))
        return desk.post("/desk/redeem", data=form, headers={"X-CSRFToken": desk_token, "HX-Request": "true"})

    def redeem(_: int):
        return post_redemption(next(codes))

    # "friend": the progress page of referrers whose code a friend redeemed (a friend, a reward, a voucher QR).
    befriended = []
    if options.only in (None, "friend"):
        for code, token in seeder.referrers(50):
            post_redemption(code)
            befriended.append(token)

    endpoints = {
        "livez": lambda i: anonymous.get("/livez"),
        "progress": lambda i: anonymous.get(f"/p/{patients[i % len(patients)][1]}"),
        "invite": lambda i: anonymous.get(f"/r/{patients[i % len(patients)][0]}"),
        "redeem": redeem,
        "friend": lambda i: anonymous.get(f"/p/{befriended[i % len(befriended)]}"),
    }
    return seeder, {name: request for name, request in endpoints.items() if options.only in (None, name)}, statements


def warmup(name: str) -> int:
    """Requests made before measuring: the first ones build caches, compile templates, open connections."""
    return 20 if name != "redeem" else 10


def main() -> int:
    options = argument_parser("python -m bench.inprocess", __doc__.splitlines()[0], 300).parse_args()
    seeder, endpoints, statements = prepare(options)
    for name, request in endpoints.items():
        for number in range(warmup(name)):
            request(number)
        statements[0] = 0
        started = time.process_time()
        for number in range(options.requests):
            answer = request(warmup(name) + number)
            if answer.status_code != 200:
                raise SystemExit(f"{name}: answered {answer.status_code}")
        per_request = (time.process_time() - started) / options.requests * 1000
        print(f"{name:10} {per_request:6.2f} ms CPU  {statements[0] / options.requests:5.1f} statements  "
              f"{len(answer.data):,} bytes", flush=True)
    seeder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
