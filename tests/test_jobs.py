"""Background jobs: on the RQ queue when Redis is configured, on a thread of the web process otherwise."""

from __future__ import annotations

import secrets

import pytest
import redis
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import BatchStatus, Card, CardBatch
from clinic.services import jobs

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def queued(app):
    """The app configured with Redis and a queue of this test's own; the queue is emptied afterwards."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    app.config.update(REDIS_URL=REDIS_URL, JOB_QUEUE=f"clinic-test-{secrets.token_hex(6)}")
    yield app
    queue = jobs.job_queue(app)
    queue.delete(delete_jobs=True)
    app.config.update(REDIS_URL=None)


def test_with_redis_a_batch_waits_in_the_queue_until_a_worker_runs_it(queued, manager):
    response = manager.post("/cards/batches", {"size": "12", "design": "minimal"})
    assert response.status_code == 303
    jobs.wait_for_all()  # nothing runs in the web process: the batch is still queued
    batch = db.session.scalar(select(CardBatch))
    assert batch.status == BatchStatus.QUEUED.value
    assert jobs.job_queue(queued).count == 1

    assert jobs.run_worker(queued, burst=True)
    db.session.rollback()
    batch = db.session.scalar(select(CardBatch).execution_options(populate_existing=True))
    assert batch.status == BatchStatus.DONE.value
    assert db.session.scalar(select(func.count()).select_from(Card)) == 12
    assert jobs.job_queue(queued).count == 0


def test_without_redis_the_batch_runs_on_a_thread_of_the_web_process(app, manager):
    assert not app.config["REDIS_URL"]
    assert manager.post("/cards/batches", {"size": "5", "design": "minimal"}).status_code == 303
    jobs.wait_for_all()
    db.session.rollback()
    assert db.session.scalar(select(CardBatch.status)) == BatchStatus.DONE.value


@pytest.fixture
def redis_out_of_reach(app):
    """The app configured with a Redis nobody listens on (port 1)."""
    app.config.update(REDIS_URL="redis://127.0.0.1:1/0")
    yield app
    app.config.update(REDIS_URL=None)


def test_with_redis_out_of_reach_the_batch_fails_with_the_reason_and_can_be_tried_again(redis_out_of_reach, manager):
    """Not a 500 and a batch queued for good (no worker would ever claim it, and only a failed one can be retried)."""
    response = manager.post("/cards/batches", {"size": "4", "design": "minimal"})
    assert response.status_code == 303
    page = manager.get(response.headers["Location"]).get_data(as_text=True)
    assert "the job queue is out of reach" in page
    batch = db.session.scalar(select(CardBatch))
    assert batch.status == BatchStatus.FAILED.value and "ConnectionError" in batch.error
    assert db.session.scalar(select(func.count()).select_from(Card)) == 0

    redis_out_of_reach.config.update(REDIS_URL=None)  # Redis is back (here: the in-process runner)
    retried = manager.post(f"/cards/batches/{batch.id}/retry", {})
    assert retried.status_code == 303
    jobs.wait_for_all()
    db.session.rollback()
    assert db.session.scalar(select(CardBatch.status)) == BatchStatus.DONE.value
    assert db.session.scalar(select(func.count()).select_from(Card)) == 4

