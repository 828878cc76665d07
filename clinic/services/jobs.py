"""Background jobs: long work (a batch of thousands of cards) never runs in the request.

With ``REDIS_URL`` set, jobs go to an RQ queue in Redis and run in a separate worker process
(``flask --app wsgi worker``): web workers stay free, a job survives the web worker that queued
it being recycled, and several hosts can share the work. Without Redis (one clinic PC), jobs run
on one thread per web process, each inside its own application context.

Either way the job's state lives in the database, not in the queue, so that a worker killed
mid-job is noticed (a stale heartbeat) and the work can be retried from the batch page.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Callable

from flask import Flask, current_app, has_app_context

from clinic.extensions import db

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future] = set()


def _pool() -> ThreadPoolExecutor:
    """Created on first use, so that each forked gunicorn worker gets its own thread."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-job")
        return _executor


def _run(app: Flask, work: Callable, args: tuple):
    with app.app_context():
        try:
            return work(*args)
        finally:
            db.session.remove()


def submit(work: Callable, *args) -> None:
    """Run ``work(*args)`` in the background: on the RQ queue when there is Redis, else on a thread.

    ``work`` must be a module-level function and ``args`` plain values (ids), because an RQ job
    is stored in Redis and run by another process.
    """
    app = current_app._get_current_object()
    if app.config.get("REDIS_URL"):
        job_queue(app).enqueue(run_queued_job, work, *args, job_timeout=app.config["JOB_TIMEOUT_SECONDS"])
        return
    future = _pool().submit(_run, app, work, args)
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def job_queue(app: Flask):
    from redis import Redis
    from rq import Queue

    return Queue(app.config["JOB_QUEUE"], connection=Redis.from_url(app.config["REDIS_URL"]))


def run_queued_job(work: Callable, *args):
    """What the RQ worker runs: the job inside an application context (the worker's own app)."""
    app = current_app._get_current_object() if has_app_context() else _worker_app()
    return _run(app, work, args)


@cache
def _worker_app() -> Flask:
    from clinic import create_app

    return create_app()


def run_worker(app: Flask, burst: bool = False) -> bool:
    """Process queued jobs until stopped (or, with ``burst``, until the queue is empty).

    A SimpleWorker runs each job in this process, inside this app's context, instead of forking a
    child per job: a forked child would inherit the parent's database connections.
    """
    from rq import SimpleWorker

    queue = job_queue(app)
    worker = SimpleWorker([queue], connection=queue.connection)
    return worker.work(burst=burst, with_scheduler=False)


def wait_for_all(timeout: float = 120) -> None:
    """Block until every job submitted so far has finished (for tests and the CLI)."""
    for future in list(_pending):
        future.result(timeout=timeout)
