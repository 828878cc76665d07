"""The real app under gunicorn on 127.0.0.1, for the race tests and the HTTP benchmark.

The database is created by the real migrations (``flask db upgrade``), the server is started
with the project's own ``gunicorn.conf.py``, and it is stopped (and its port freed) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_postgresql_database(base_url: str, name: str) -> str:
    """Drop and create database ``name`` next to ``base_url``'s; returns its URL."""
    url = make_url(base_url).set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def server_environment(database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment a served app needs: its database, a fixed secret and private folders."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url,
        "SECRET_KEY": "live-server-secret",
        "BATCH_FOLDER": str(workdir / "batches"),
        "IMPORT_FOLDER": str(workdir / "imports"),
        "PUBLIC_BASE_URL": "http://127.0.0.1",
        "PYTHONWARNINGS": "ignore",
    })
    env.pop("REDIS_URL", None)  # only when a caller asks for it
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    """Create the schema with the real migrations, as `make run` does."""
    subprocess.run([str(VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT, env=env,
                   check=True, capture_output=True)


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 4, app: str = "wsgi:app", log: Path | None = None):
    """Serve ``app`` with ``workers`` sync workers; yields the base URL once /livez answers."""
    port = free_port()
    env = dict(env, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(workers))
    output = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", app], cwd=PROJECT_ROOT,
                               env=env, stdout=output, stderr=output, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base_url, process)
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            output.close()


def _wait_until_up(base_url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{base_url}/livez", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer on {base_url} within {timeout} s")
