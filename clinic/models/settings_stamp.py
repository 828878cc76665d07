"""A number the database draws anew whenever the clinic's settings, campaigns, tiers or webhook endpoints change.

Every public page needs the clinic's settings, the campaign in force and the tiers, and managers change
them a few times a year. ``clinic.services.settings_snapshot`` keeps one read-only copy of them per process
and, to know that the copy is still exact, reads this one-row table instead of the tables: triggers
on ``clinics``, ``campaigns``, ``tiers`` and ``webhook_endpoints`` give ``settings_stamp.stamp`` a new random
value in the same transaction as any INSERT, UPDATE or DELETE, whoever writes it (a view, a ``flask`` command,
hand-typed SQL). The webhook endpoints joined later: every redemption, spend and milestone asks which
endpoints want its events, and they change as rarely as the settings.
Random rather than counted, so that a database created again, or restored from a backup, cannot show a
process the number its old copy was taken at (a count would start again at 0). The stamp lives in a
table of its own so that its update does not fire the triggers again.

``STAMP_SQL`` below is the live definition: ``db.create_all()`` installs it through the ``after_create``
listeners at the end of this module (the tests build their schema that way). The migration that added
it (``9b2d4e6f8a10``, and ``5c3e9a1b7d20`` for the webhook endpoints) carries its own frozen copy, because a
released migration must not change.
On SQLite, a migration that rebuilds one of these tables in batch mode drops its triggers with it:
such a migration must create them again.
"""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from clinic.extensions import db
from clinic.models._ddl import attach_ddl
from clinic.models.campaign import Campaign
from clinic.models.clinic import Clinic
from clinic.models.reward import Tier
from clinic.models.webhook import WebhookEndpoint


class SettingsStamp(db.Model):
    """The single row (id 1) whose ``stamp`` the triggers draw anew."""

    __tablename__ = "settings_stamp"

    id: Mapped[int] = mapped_column(primary_key=True)
    stamp: Mapped[int] = mapped_column(BigInteger)


NEW_STAMP = {"sqlite": "random()", "postgresql": "floor(random() * 9e18)::bigint"}
SEED_SQL = {dialect: [f"INSERT INTO settings_stamp (id, stamp) VALUES (1, {value})"]
            for dialect, value in NEW_STAMP.items()}
FUNCTION_SQL = f"""CREATE OR REPLACE FUNCTION new_settings_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE settings_stamp SET stamp = {NEW_STAMP["postgresql"]} WHERE id = 1;
    RETURN NULL;
END
$$"""


def stamp_sql(table: str) -> dict[str, list[str]]:
    """The triggers that give the stamp a new value on any change to ``table`` (SQLite has no
    statement-level triggers: a statement changing many rows draws once per row, which is harmless)."""
    return {
        "sqlite": [f"""CREATE TRIGGER {table}_{operation.lower()}_new_settings_stamp AFTER {operation} ON {table}
BEGIN UPDATE settings_stamp SET stamp = {NEW_STAMP["sqlite"]} WHERE id = 1; END"""
                   for operation in ("INSERT", "UPDATE", "DELETE")],
        # The function is created with each table that uses it: create_all() may create them in any order.
        "postgresql": [FUNCTION_SQL, f"""CREATE TRIGGER {table}_new_settings_stamp
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION new_settings_stamp()"""],
    }


attach_ddl(SettingsStamp.__table__, "after_create", SEED_SQL)
# Dropping the function drops the triggers still using it.
attach_ddl(SettingsStamp.__table__, "after_drop",
           {"postgresql": ["DROP FUNCTION IF EXISTS new_settings_stamp() CASCADE"]})
for _model in (Clinic, Campaign, Tier, WebhookEndpoint):
    attach_ddl(_model.__table__, "after_create", stamp_sql(_model.__tablename__))
