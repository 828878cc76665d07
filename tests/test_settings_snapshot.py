"""The settings snapshot: one read-only copy per process, never stale, whoever changes the settings."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from sqlalchemy import event, text

from clinic.extensions import db
from clinic.models._time import utcnow
from clinic.services.settings_snapshot import current_settings


def _from_elsewhere(statement: str) -> None:
    """A change made outside this session: another worker, a ``flask`` command, hand-typed SQL."""
    with db.engine.begin() as other:
        other.execute(text(statement))


def test_one_copy_per_process_until_the_settings_change(app):
    first = current_settings()
    assert current_settings() is first, "the same transaction reads the stamp once"
    db.session.rollback()
    assert current_settings() is first, "nothing changed: the process keeps its copy"
    _from_elsewhere("UPDATE clinics SET name = 'Renamed Clinic' WHERE id = 1")
    assert current_settings().clinic.name != "Renamed Clinic", "a transaction sees one state of the settings"
    db.session.rollback()
    renamed = current_settings()
    assert renamed is not first and renamed.clinic.name == "Renamed Clinic"


@pytest.mark.parametrize("change", [
    "INSERT INTO campaigns (name, is_default, referrer_reward_kind, referrer_reward_amount, referrer_reward_label, "
    "friend_reward_kind, friend_reward_amount, friend_reward_label, voucher_valid_days, covers, referrer_reward_stage, "
    "friend_reward_stage, quota_label, created_at, updated_at) VALUES ('Spring', false, 'money', 100, '', 'money', "
    "100, '', 30, 'both', 'redemption', 'redemption', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "UPDATE campaigns SET friend_reward_amount = friend_reward_amount + 1",
    "DELETE FROM campaigns",
    "INSERT INTO tiers (name, min_paid_referrals, window_months, privileges) VALUES ('VIP', 3, 12, '')",
    "UPDATE clinics SET currency = 'EUR'",
    "INSERT INTO webhook_endpoints (url, description, events, secret, enabled, created_at) VALUES "
    "('https://hooks.example/y', '', '[\"voucher.spent\"]', 'secret', true, CURRENT_TIMESTAMP)",
    "UPDATE webhook_endpoints SET enabled = false",
    "DELETE FROM webhook_endpoints",
])
def test_every_kind_of_change_draws_a_new_stamp(app, change):
    _from_elsewhere("INSERT INTO webhook_endpoints (url, description, events, secret, enabled, created_at) VALUES "
                    "('https://hooks.example/x', '', '[\"voucher.issued\"]', 'secret', true, CURRENT_TIMESTAMP)")
    before = current_settings()
    db.session.commit()
    _from_elsewhere(change)
    after = current_settings()
    assert after.stamp != before.stamp and after is not before


def test_the_campaign_in_force_is_a_read_only_copy(app):
    campaign = current_settings().campaign_in_force(for_cards=False, now=utcnow())
    assert campaign.name == "Bring a friend" and campaign.is_running(utcnow())
    with pytest.raises(FrozenInstanceError):
        campaign.name = "changed"  # frozen: a copy shared by every request of the process


def test_the_public_pages_read_the_stamp_with_their_own_query_and_see_every_change(app, make_patient):
    """progress and invitations read the stamp as a column of their first query (settings_read_with)."""
    from clinic.services.invitations import invitation
    from clinic.services.progress import progress_page

    patient, token = make_patient(full_name="Wang Li")
    db.session.commit()
    statements = []

    def count(connection, cursor, statement, *args):
        statements.append(statement)

    for read, page in ((progress_page, token), (invitation, patient.personal_code)):
        with app.test_request_context("/"):
            event.listen(db.engine, "before_cursor_execute", count)
            try:
                assert read(page) is not None
                assert current_settings().clinic.name != "Renamed Clinic"
            finally:
                event.remove(db.engine, "before_cursor_execute", count)
            reads = [statement for statement in statements if "settings_stamp" in statement]
            assert len(reads) == 1 and "FROM patients" in reads[0], "the stamp is read with the patient"
            statements.clear()
            db.session.rollback()
            _from_elsewhere("UPDATE clinics SET name = 'Renamed Clinic' WHERE id = 1")
            assert read(page) is not None
            assert current_settings().clinic.name == "Renamed Clinic", read.__name__
            db.session.rollback()
            _from_elsewhere("UPDATE clinics SET name = 'Test Clinic' WHERE id = 1")


def test_a_stamp_read_outside_a_transaction_serves_only_its_own_request(app, make_patient):
    """A job or command (no request) that shows a public page must not keep that page's settings afterwards."""
    from clinic.services.progress import progress_page

    _patient, token = make_patient()
    db.session.commit()
    assert progress_page(token) is not None  # outside any request: the stamp read on a read connection
    db.session.rollback()
    _from_elsewhere("UPDATE clinics SET name = 'Renamed Clinic' WHERE id = 1")
    try:
        assert current_settings().clinic.name == "Renamed Clinic"
    finally:
        db.session.rollback()
        _from_elsewhere("UPDATE clinics SET name = 'Test Clinic' WHERE id = 1")


def test_after_an_action_s_commit_the_stamp_is_read_again_without_beginning_a_transaction(app):
    """A receipt rendered after its action: the newest settings, and no BEGIN (nor a ROLLBACK at the request's end)."""
    from clinic.services import audit
    from clinic.services.transaction import Actor, atomic

    with app.test_request_context("/"):
        with atomic():
            audit.record("test.event", Actor())
            assert current_settings().clinic.name != "Renamed Clinic"
        _from_elsewhere("UPDATE clinics SET name = 'Renamed Clinic' WHERE id = 1")
        try:
            assert current_settings().clinic.name == "Renamed Clinic", "checked again after the commit"
            assert not db.session().in_transaction(), "read without beginning the session's transaction"
            _from_elsewhere("UPDATE clinics SET name = 'Test Clinic' WHERE id = 1")
            assert current_settings().clinic.name == "Renamed Clinic", "then kept for the rest of the request"
            db.session.connection()  # the page goes on to read in a transaction: checked again
            assert current_settings().clinic.name == "Test Clinic"
        finally:
            db.session.rollback()
            _from_elsewhere("UPDATE clinics SET name = 'Test Clinic' WHERE id = 1")


def test_a_redemption_reads_the_settings_and_webhook_subscriptions_with_its_referrer(app, actor, referrer):
    """One stamp read, in the referrer's own query, and no SELECT of the endpoints; yet an endpoint a manager
    registers or disables between two redemptions of this process is honoured by the next one."""
    from clinic.models import WebhookDelivery
    from clinic.services import redemption, webhooks
    from tests.conftest import friend

    statements = []

    def count(connection, cursor, statement, *args):
        statements.append(statement)

    def deliveries() -> int:
        return db.session.query(WebhookDelivery).count()

    app.config.update(WEBHOOK_ALLOW_PRIVATE_NETWORKS=True, WEBHOOK_SEND_AFTER_COMMIT=False)  # written, not sent
    code = referrer.personal_code
    current_settings()  # the process's copy, as any earlier request leaves it
    db.session.commit()
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        redemption.redeem_code(code, friend(full_name="First", phone="13700000011"), actor)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    stamp_reads = [statement for statement in statements if "settings_stamp" in statement]
    assert len(stamp_reads) == 1 and "FROM patients" in stamp_reads[0], "the stamp comes with the referrer"
    assert not [statement for statement in statements if "FROM webhook_endpoints" in statement]
    assert deliveries() == 0
    endpoint = webhooks.register_endpoint(webhooks.EndpointRules.from_form(
        url="http://127.0.0.1:9/clinic", events=["voucher.issued"]), actor)
    redemption.redeem_code(code, friend(full_name="Second", phone="13700000012"), actor)
    assert deliveries() == 2, "the new endpoint gets both vouchers of the next redemption"
    webhooks.set_enabled(endpoint.id, False, actor)
    redemption.redeem_code(code, friend(full_name="Third", phone="13700000013"), actor)
    assert deliveries() == 2, "a disabled endpoint gets nothing more"


def test_a_receipt_shows_the_settings_its_redemption_was_made_under_without_reading_them_again(app, actor, referrer):
    """keep_settings_checked_by: after the redemption's commit no stamp read (no BEGIN either); the next
    transaction of the request checks again, and a later request sees a change made meanwhile."""
    from clinic.services import redemption
    from tests.conftest import friend

    code = referrer.personal_code
    db.session.commit()
    statements = []

    def count(connection, cursor, statement, *args):
        statements.append(statement)

    with app.test_request_context("/desk/redeem"):
        redemption.redeem_code(code, friend(full_name="First", phone="13700000021"), actor)
        _from_elsewhere("UPDATE clinics SET name = 'Renamed Clinic' WHERE id = 1")
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert current_settings().clinic.name == "Test Clinic", "the settings the redemption used"
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        try:
            assert statements == [] and not db.session().in_transaction()
            db.session.connection()  # the request goes on in a new transaction: checked again
            assert current_settings().clinic.name == "Renamed Clinic"
        finally:
            db.session.rollback()
            _from_elsewhere("UPDATE clinics SET name = 'Test Clinic' WHERE id = 1")
