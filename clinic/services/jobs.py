"""Background jobs: long work (a batch of thousands of cards) never runs in the request.

Jobs run on one worker thread per web process, each inside its own application context.
The job's state lives in the database, not in the thread, so that a worker recycled or killed
mid-job is noticed (a stale heartbeat) and the work can be retried.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from flask import Flask, current_app

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


def _run(app: Flask, work: Callable, args: tuple) -> None:
    with app.app_context():
        try:
            work(*args)
        finally:
            db.session.remove()


def submit(work: Callable, *args) -> Future:
    """Run ``work(*args)`` in the background, in an application context of this app."""
    app = current_app._get_current_object()
    future = _pool().submit(_run, app, work, args)
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


def wait_for_all(timeout: float = 120) -> None:
    """Block until every job submitted so far has finished (for tests and the CLI)."""
    for future in list(_pending):
        future.result(timeout=timeout)
