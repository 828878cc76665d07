"""`flask --app wsgi check`: each way a server can be set up wrong is found, said with what to do, and exits 1."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from clinic.extensions import db
from clinic.models import CardBatch, OutboxEvent, WebhookDelivery, WebhookEndpoint
from clinic.models._time import utcnow
from clinic.services.installation import NOTE, OK, PROBLEM, check_installation


@pytest.fixture
def migrated(app):
    """The test database (made by create_all) stamped at the newest migration, as `flask db upgrade` leaves one."""
    from flask_migrate import stamp

    stamp()
    yield
    db.session.rollback()
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))


def by_topic(app) -> dict[str, tuple[str, str]]:
    return {finding.topic: (finding.level, finding.text) for finding in check_installation(app.config)}


def run_check(app):
    return app.test_cli_runner().invoke(args=["check"])


def test_a_set_up_server_passes_and_says_what_it_checked(app, migrated):
    found = by_topic(app)
    assert found["database"][0] == OK and "migrated" in found["database"][1]
    assert found["public address"] == (OK, "QR codes and links point at https://clinic.test.")
    assert found["redis"][0] == NOTE  # no REDIS_URL in the tests: per-process limits, said as a note
    assert "webhooks" not in found and "two-step login" not in found
    result = run_check(app)
    assert result.exit_code == 0 and "OK       database" in result.output


def test_a_database_behind_the_release_is_a_problem(app, migrated):
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '293c221489ae'"))
    level, sentence = by_topic(app)["database"]
    assert level == PROBLEM and "293c221489ae" in sentence and "db upgrade" in sentence
    assert run_check(app).exit_code == 1


def test_an_unmigrated_database_is_a_problem(app):
    level, sentence = by_topic(app)["database"]
    assert level == PROBLEM and "nothing (empty)" in sentence


@pytest.mark.parametrize("base, level, words", [
    ("http://127.0.0.1:5000", NOTE, "cannot reach it"),
    ("http://localhost:5000", NOTE, "cannot reach it"),
    ("http://[::1]:5000", NOTE, "cannot reach it"),
    ("http://0.0.0.0", NOTE, "cannot reach it"),
    ("http://clinic.example", NOTE, "not https"),
    ("https://refer.clinic.example", OK, "point at"),
    ("ftp://clinic.example", PROBLEM, "not an http(s) address"),
    ("clinic.example", PROBLEM, "not an http(s) address"),
])
def test_the_public_address_printed_on_every_qr_code(app, migrated, base, level, words):
    app.config["PUBLIC_BASE_URL"] = base
    found_level, sentence = by_topic(app)["public address"]
    assert found_level == level and words in sentence


def test_overdue_webhook_deliveries_mean_no_sender_runs(app, migrated):
    endpoint = WebhookEndpoint(url="https://gateway.example/hook", events=["voucher.issued"], secret="s" * 32)
    events = [OutboxEvent(event_type="voucher.issued", payload={}) for _ in range(3)]
    db.session.add_all([endpoint, *events])
    db.session.flush()
    now = utcnow()
    db.session.add_all([  # one waiting its turn (a retry 5 minutes late), one 3 hours late, one done long ago
        WebhookDelivery(event_id=events[0].id, endpoint_id=endpoint.id, next_attempt_at=now - timedelta(minutes=5)),
        WebhookDelivery(event_id=events[1].id, endpoint_id=endpoint.id, next_attempt_at=now - timedelta(hours=3)),
        WebhookDelivery(event_id=events[2].id, endpoint_id=endpoint.id, status="delivered",
                        next_attempt_at=now - timedelta(days=3)),
    ])
    db.session.commit()
    level, sentence = by_topic(app)["webhooks"]
    assert level == PROBLEM and sentence.startswith("1 webhook delivery (") and "deliver-webhooks" in sentence
    assert run_check(app).exit_code == 1
    endpoint.enabled = False  # its deliveries wait on purpose until a manager enables it again: no alarm
    db.session.commit()
    assert "webhooks" not in by_topic(app)


def test_a_queued_batch_with_redis_and_no_worker(app, migrated):
    db.session.add(CardBatch(size=10, created_at=utcnow() - timedelta(minutes=30)))
    db.session.commit()
    assert "jobs" not in by_topic(app)  # without Redis the web process runs jobs itself: nothing to wait for
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    found = by_topic(app)
    assert found["jobs"][0] == PROBLEM and "flask --app wsgi worker" in found["jobs"][1]
    assert found["redis"][0] == PROBLEM and "does not answer" in found["redis"][1]


def test_two_step_secrets_the_key_cannot_open(app, migrated, desk_user, enable_two_step):
    enable_two_step(desk_user)
    level, sentence = by_topic(app)["two-step login"]
    assert level == NOTE and "set TWO_STEP_KEY" in sentence
    app.config["SECRET_KEY"] = "changed"
    level, sentence = by_topic(app)["two-step login"]
    assert level == PROBLEM and desk_user.email in sentence and "recovery code" in sentence
    assert run_check(app).exit_code == 1


def test_the_check_writes_nothing(app, migrated):
    before = {table: db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
              for table in ("audit_events", "staff", "webhook_deliveries")}
    run_check(app)
    db.session.rollback()
    assert before == {table: db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar() for table in before}
