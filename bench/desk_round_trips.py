"""What a desk sends PostgreSQL for one patient: the desk page, then the redemption, counted by kind.

    .venv/bin/python -m bench.desk_round_trips [--pairs 200]

At a real desk a redemption follows a page of the desk (after the previous patient, after a log-in); the HTTP
benchmark redeems without one. psycopg prepares a statement the fifth time a connection runs it, and forgets every
prepared statement at each ROLLBACK (``DEALLOCATE ALL``): so whether the page before ends in a ROLLBACK decides
whether the redemption's statements reach the server prepared (parsed and planned once) or as new text. This counts,
per page + redemption, the transaction commands psycopg sends and whether each statement ran prepared, by wrapping
two psycopg internals (``PrepareManager.get`` and ``Connection._exec_command``): a measuring tool, not app code.
The data are the HTTP benchmark's (``bench/http_load.py``); each redemption a new code, friend and key.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.http_load import (CSRF_META, DESK_EMAIL, DESK_PASSWORD, POSTGRESQL_URL, SERVER_SETTINGS,  # noqa: E402
                             USER_AGENT, Seeder)
from tests.liveserver import fresh_postgresql_database, migrate, server_environment  # noqa: E402


def count_round_trips(counts: Counter) -> None:
    """Count into ``counts`` every transaction command psycopg sends and how each statement runs."""
    import psycopg
    from psycopg._preparing import Prepare, PrepareManager

    how = {Prepare.NO: "statements sent as text", Prepare.SHOULD: "statements prepared now",
           Prepare.YES: "statements run prepared"}
    decide, send_command = PrepareManager.get, psycopg.Connection._exec_command

    def counted_decision(self, query, prepare=None):
        decision = decide(self, query, prepare)
        counts[how[decision[0]]] += 1
        return decision

    def counted_command(self, command, *args, **kwargs):
        text = command.decode() if isinstance(command, bytes) else command.as_string(self)
        counts[" ".join(text.split()[:2]) if text.upper().startswith("DEALLOCATE") else text.split()[0]] += 1
        return (yield from send_command(self, command, *args, **kwargs))

    PrepareManager.get, psycopg.Connection._exec_command = counted_decision, counted_command


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.desk_round_trips", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="desk pages + redemptions measured")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    url = fresh_postgresql_database(POSTGRESQL_URL, "bench_desk_round_trips")
    env = server_environment(url, workdir, **SERVER_SETTINGS)
    migrate(env)
    os.environ.update({key: value for key, value in env.items() if key.startswith("RATELIMIT")})
    seeder = Seeder(url, env)
    seeder.clinic()
    codes = iter(code for code, _ in seeder.referrers(options.pairs + 20))
    desk = seeder.app.test_client()
    desk.environ_base["HTTP_USER_AGENT"] = USER_AGENT
    token = CSRF_META.search(desk.get("/login").get_data(as_text=True)).group(1)
    desk.post("/login", data={"email": DESK_EMAIL, "password": DESK_PASSWORD, "csrf_token": token})
    desk_token = CSRF_META.search(desk.get("/desk/").get_data(as_text=True)).group(1)

    def desk_page_then_redemption():
        assert desk.get("/desk/").status_code == 200
        form = dict(parse_qsl(seeder.redemption(next(codes)).split("\t", 1)[1]))
        answer = desk.post("/desk/redeem", data=form, headers={"X-CSRFToken": desk_token, "HX-Request": "true"})
        if answer.status_code != 200:
            raise SystemExit(f"redemption answered {answer.status_code}")

    counts: Counter = Counter()
    count_round_trips(counts)
    for _ in range(20):  # past psycopg's prepare threshold
        desk_page_then_redemption()
    counts.clear()
    started = time.process_time()
    for _ in range(options.pairs):
        desk_page_then_redemption()
    cpu = (time.process_time() - started) / options.pairs * 1000
    print(f"per desk page + redemption ({options.pairs}; {cpu:.2f} ms client CPU): "
          + ", ".join(f"{kind} {count / options.pairs:.1f}" for kind, count in sorted(counts.items())))
    seeder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
