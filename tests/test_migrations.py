"""The migrations build exactly the schema the models describe, and go down again cleanly."""

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from clinic.extensions import db
from clinic.models import ApiToken, AuditEvent, Voucher
from clinic.services import clinic_settings, redemption
from clinic.services.transaction import Actor
from tests.conftest import CAMPAIGN, friend


@pytest.fixture(autouse=True)
def _no_leftover_alembic_version(app):
    """Each test starts with no migration applied, whatever an earlier test or run left behind.

    A migration test cut off midway leaves ``alembic_version`` behind (db.drop_all does not know that table), and a
    PostgreSQL test database outlives the run: every later migration test on it then started from that revision.
    """
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def test_upgrade_matches_the_models_and_downgrade_removes_everything(app):
    db.drop_all()
    upgrade()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       db.metadata)
    assert differences == []
    downgrade(revision="base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade()
    assert "vouchers" in inspect(db.engine).get_table_names()
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


TRIGGERS = {"sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
            "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"}


EXPECTED_TRIGGERS = {
    "sqlite": {"audit_events_no_update", "audit_events_no_delete", "clinics_insert_new_settings_stamp",
               "campaigns_update_new_settings_stamp", "tiers_delete_new_settings_stamp",
               "webhook_endpoints_insert_new_settings_stamp", "webhook_endpoints_update_new_settings_stamp",
               "webhook_endpoints_delete_new_settings_stamp"},
    "postgresql": {"audit_events_no_update_or_delete", "audit_events_no_truncate", "clinics_new_settings_stamp",
                   "campaigns_new_settings_stamp", "tiers_new_settings_stamp", "webhook_endpoints_new_settings_stamp"},
}


def _trigger_names() -> set[str]:
    with db.engine.connect() as connection:
        return set(connection.execute(text(TRIGGERS[db.engine.dialect.name])).scalars())


def test_the_migrations_leave_the_same_triggers_as_the_models(app):
    """The audit log's guards and the settings stamp's triggers live outside the tables' columns, so
    compare_metadata cannot see them; and on SQLite a batch migration that rebuilds a table drops its
    triggers silently. A migration that forgets to recreate one fails here."""
    db.drop_all()
    upgrade()
    migrated = _trigger_names()
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
    db.create_all()
    modelled = _trigger_names()
    assert EXPECTED_TRIGGERS[db.engine.dialect.name] <= modelled
    assert migrated == modelled


def test_the_reward_rules_migration_back_fills_rewards_and_cap_totals(app):
    """Referrals redeemed before reward rules existed keep a record of what was paid, and count against caps."""
    from sqlalchemy import text

    db.drop_all()
    upgrade(revision="643560960bb2")
    with db.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO campaigns (id, name, is_default, referrer_reward_kind, referrer_reward_amount, "
            "referrer_reward_label, friend_reward_kind, friend_reward_amount, friend_reward_label, voucher_valid_days, "
            "created_at, updated_at) VALUES (1, 'Old', :yes, 'money', 20000, '', 'service', 0, 'Gift', 90, "
            ":now, :now)"), {"yes": True, "now": "2025-06-01 10:00:00"})
        for number in (1, 2):
            connection.execute(text(
                "INSERT INTO patients (id, display_name, full_name, personal_code, progress_token_hash, "
                "progress_link_issued_at, enrolled_at, name_on_posters) VALUES (:id, '', :name, :code, :hash, :now, "
                ":now, :no)"), {"id": number, "name": f"P{number}", "code": f"CODE000{number}", "hash": str(number) * 64,
                                "now": "2025-06-01 10:00:00", "no": False})
        connection.execute(text(
            "INSERT INTO referrals (id, referrer_id, friend_id, campaign_id, code_used, status, created_at) "
            "VALUES (1, 1, 2, 1, 'CODE0001', 'active', '2025-06-02 10:00:00')"))
        for voucher_id, patient, side, kind, amount in ((1, 1, "referrer", "money", 20000), (2, 2, "friend", "service", 0)):
            connection.execute(text(
                "INSERT INTO vouchers (id, code, patient_id, referral_id, beneficiary, kind, amount, label, currency, "
                "status, issued_at, expires_at) VALUES (:id, :code, :patient, 1, :side, :kind, :amount, '', 'CNY', "
                "'active', '2025-06-02 10:00:00', '2025-09-02 10:00:00')"),
                {"id": voucher_id, "code": f"VOUCHER0000{voucher_id}", "patient": patient, "side": side, "kind": kind,
                 "amount": amount})
    upgrade()
    with db.engine.connect() as connection:
        rewards = connection.execute(text(
            "SELECT beneficiary, status, voucher_id, amount FROM rewards ORDER BY voucher_id")).all()
        totals = connection.execute(text(
            "SELECT referrer_id, year, rewarded_count, rewarded_value FROM referrer_year_totals")).all()
    assert [tuple(row) for row in rewards] == [("referrer", "issued", 1, 20000), ("friend", "issued", 2, 0)]
    assert [tuple(row) for row in totals] == [(1, 2025, 1, 20000)]
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


def test_each_migration_steps_down_and_up_again_on_its_own(app):
    """Every revision, one at a time: upgrade to it, downgrade one step, upgrade again."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())
    revisions = [revision.revision for revision in reversed(list(script.walk_revisions()))]
    assert len(revisions) >= 5
    db.drop_all()
    for revision in revisions:
        upgrade(revision=revision)
        downgrade(revision="-1")
        upgrade(revision=revision)
    assert "staff_sessions" in inspect(db.engine).get_table_names()
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


def insert_patient_at_5c3e9a1b7d20(connection, enrolled_at: str) -> None:
    """Patient 1 (code CODE0001) as the schema of 5c3e9a1b7d20 holds one."""
    connection.execute(text(
        "INSERT INTO patients (id, display_name, full_name, personal_code, progress_token_hash, "
        "progress_link_issued_at, enrolled_at, name_on_posters) VALUES (1, '', 'P1', 'CODE0001', :hash, :now, "
        ":now, :no)"), {"hash": "1" * 64, "now": enrolled_at, "no": False})


def test_review_requests_sent_before_offers_were_recorded_keep_no_offer(app):
    """Nothing is back-filled: what the desk showed is recorded nowhere, and approval prices such a request by the
    campaign in force (tests/test_rules.py). Going down drops the offer columns and keeps the request."""
    db.drop_all()
    upgrade(revision="5c3e9a1b7d20")
    with db.engine.begin() as connection:
        insert_patient_at_5c3e9a1b7d20(connection, "2026-11-01 10:00:00")
        connection.execute(text(
            "INSERT INTO review_requests (id, kind, status, code, patient_id, referrer_id, details, created_at) "
            "VALUES (1, 'existing_patient', 'pending', 'CODE0001', 1, 1, '{}', '2026-11-01 10:00:00')"))
    upgrade(revision="92c765c8c112")
    with db.engine.connect() as connection:
        row = connection.execute(text(
            "SELECT status, code, campaign_id, referrer_reward_amount, friend_reward_amount, currency "
            "FROM review_requests")).one()
    assert tuple(row) == ("pending", "CODE0001", None, None, None, None)
    downgrade(revision="5c3e9a1b7d20")
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT status, code FROM review_requests")).one() == ("pending", "CODE0001")
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


def test_existing_vouchers_hold_to_the_end_of_the_day_they_showed_and_go_back_on_downgrade(app, make_patient):
    """Before a9ed78e61793 a voucher expired at the hour it was issued; the page showed only that day. Each one
    now holds to the clinic's midnight that ends that day (an audited move), and a downgrade leaves the old
    code the last second of the same day."""
    db.drop_all()
    upgrade()  # the rows are made by today's code, on today's schema, and then taken back to before the move
    clinic_settings.update_clinic({"name": "Test Clinic", "timezone": "Asia/Shanghai"}, Actor())
    clinic_settings.update_default_campaign(CAMPAIGN, Actor())
    referrer, _token = make_patient()
    result = redemption.redeem_code(referrer.personal_code, friend(), Actor())
    friends, referrers = result.friend_voucher.id, result.referrer_voucher.id
    db.session.remove()
    downgrade(revision="92c765c8c112")  # to just before a9ed78e61793
    old = {friends: datetime(2026, 11, 25, 4, 9, 27, 123456),  # 12:09 on 25 Nov in Shanghai
           referrers: datetime(2026, 11, 25, 16, 0)}  # midnight starting 26 Nov: it showed the 26th
    with db.engine.begin() as connection:
        for voucher_id, expires_at in old.items():
            connection.execute(db.update(Voucher).where(Voucher.id == voucher_id).values(expires_at=expires_at))

    def expiries() -> dict[int, datetime]:
        """Read in a transaction of its own: the migration writes on another connection."""
        with db.engine.connect() as connection:
            return dict(connection.execute(db.select(Voucher.id, Voucher.expires_at)).all())

    upgrade()
    ends_of_day = {friends: datetime(2026, 11, 25, 16, 0), referrers: datetime(2026, 11, 26, 16, 0)}
    assert expiries() == ends_of_day
    with db.engine.connect() as connection:
        moves = connection.execute(db.select(AuditEvent.voucher_id, AuditEvent.details)
                                   .where(AuditEvent.action == "voucher.expiry_moved")).all()
    assert {voucher_id: details["expires_at"] for voucher_id, details in moves} == {
        voucher_id: [old[voucher_id].isoformat(), end.isoformat()] for voucher_id, end in ends_of_day.items()}
    downgrade(revision="92c765c8c112")  # to just before a9ed78e61793
    assert expiries() == {friends: datetime(2026, 11, 25, 15, 59, 59), referrers: datetime(2026, 11, 26, 15, 59, 59)}
    upgrade()
    assert expiries() == ends_of_day
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


def test_the_yearly_total_keeps_its_value_and_then_holds_more_than_32_bits(app):
    """e5963ae15f73 widens referrer_year_totals.rewarded_value (SQLite rebuilds the table: nothing may be lost)."""
    db.drop_all()
    upgrade(revision="5c3e9a1b7d20")
    with db.engine.begin() as connection:
        insert_patient_at_5c3e9a1b7d20(connection, "2026-06-01 10:00:00")
        connection.execute(text("INSERT INTO referrer_year_totals (referrer_id, year, rewarded_count, rewarded_value) "
                                "VALUES (1, 2026, 2, 2147483647)"))
    upgrade(revision="e5963ae15f73")
    with db.engine.begin() as connection:
        assert tuple(connection.execute(text("SELECT rewarded_count, rewarded_value FROM referrer_year_totals"))
                     .one()) == (2, 2**31 - 1)
        connection.execute(text("UPDATE referrer_year_totals SET rewarded_value = rewarded_value + 2147483647"))
        assert connection.execute(text("SELECT rewarded_value FROM referrer_year_totals")).scalar() == 2**32 - 2
        connection.execute(text("DELETE FROM referrer_year_totals"))  # an INTEGER cannot take it back down
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")


def test_tokens_made_before_scopes_keep_every_scope_so_that_no_integration_breaks(app):
    """f3b9c2d41e07 gives each existing API token every scope there was then; a downgrade drops the column."""
    db.drop_all()
    upgrade(revision="c4e1d8a0b7f2")
    with db.engine.begin() as connection:
        connection.execute(text("INSERT INTO api_tokens (id, name, token_hash, prefix, created_at) "
                                "VALUES (1, 'Hospital HIS', :hash, 'clk_abcdefgh', '2026-11-01 10:00:00')"),
                           {"hash": "1" * 64})
    upgrade(revision="f3b9c2d41e07")
    with db.engine.connect() as connection:
        scopes = connection.execute(db.select(ApiToken.scopes)).scalar_one()
    assert scopes == ["patients:read", "patients:write", "milestones:write", "redemptions:write", "vouchers:read",
                      "vouchers:write", "cards:write"]
    downgrade(revision="c4e1d8a0b7f2")
    assert "scopes" not in {column["name"] for column in inspect(db.engine).get_columns("api_tokens")}
    downgrade(revision="base")
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
