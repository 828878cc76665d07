"""Settings, campaigns, tiers and webhook subscriptions: one read-only copy per process, exact to the last commit.

Every page needs some of them (the clinic's name, currency, time zone, language and base URL, the
campaign in force, the tiers) and loading them as ORM entities cost three queries and a third of an
invite page. Managers change them a few times a year. The webhook subscriptions (which enabled endpoint wants
which events) are in the copy too: every redemption, spend and milestone asks, and read per transaction they
were one more statement in each. So each process keeps one copy, as frozen rows
(models/rows.py), and checks it with one primary-key read of ``settings_stamp``, which database
triggers draw anew in the same transaction as any change to those tables (models/settings_stamp.py).
The copy is therefore never stale, whoever changed the settings and from whichever process or host,
and reading it costs one tiny query per database transaction instead of three.

Writers (the settings and campaign pages) keep using the ORM entities (``clinic_settings.get_clinic``);
this module is for reading only, and its rows cannot be handed to the ORM. A copy holds committed
settings only: a service that edits the settings and reads them back in the same transaction must
read the ORM rows it edited (none does today). One deliberate exception to "checked per transaction":
a redemption's receipt, rendered after its commit, shows the settings the redemption was made under
(``keep_settings_checked_by``) rather than reading the stamp again.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g, has_request_context, request
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Campaign, Clinic, SettingsStamp, Tier, WebhookEndpoint
from clinic.models.campaign import CampaignRules
from clinic.models.rows import CampaignRow, ClinicRow, TierRow, columns_of
from clinic.services.transaction import read_connection

_STAMP = select(SettingsStamp.stamp).where(SettingsStamp.id == 1)
# The stamp as a column of a page's own query: see settings_read_with.
STAMP_COLUMN = _STAMP.scalar_subquery().label("settings_stamp")
_CLINIC = select(*columns_of(Clinic)).where(Clinic.id == 1)
_CAMPAIGNS = select(*columns_of(Campaign)).order_by(Campaign.id.desc())  # newest first: the newest running wins
_TIERS = select(*columns_of(Tier)).order_by(Tier.min_paid_referrals, Tier.id)  # as tiers.list_tiers
# Only what emitting needs: the endpoints' secrets and URLs stay in the database.
_SUBSCRIPTIONS = (select(WebhookEndpoint.id, WebhookEndpoint.events)
                  .where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id))


@dataclass(frozen=True)
class Settings:
    stamp: int | None  # None: the database has no stamp row (never cached)
    clinic: ClinicRow
    campaigns: tuple[CampaignRow, ...]  # newest first
    tiers: tuple[TierRow, ...]  # lowest threshold first
    webhook_subscriptions: tuple[tuple[int, frozenset[str]], ...]  # (endpoint id, event types) of enabled endpoints

    def campaign_in_force(self, for_cards: bool, now) -> CampaignRow | None:
        """The newest running campaign that covers this kind of code, or None."""
        covers = CampaignRules.covers_cards if for_cards else CampaignRules.covers_personal_codes
        return next((campaign for campaign in self.campaigns if covers(campaign) and campaign.is_running(now)), None)


def current_settings() -> Settings:
    """The settings as committed, checked once per database transaction of this request.

    Within one transaction the answer does not change (the same copy is returned), so a page reads
    the stamp once however many times it asks; a new transaction (after a commit or a rollback, e.g.
    the settings page saving) checks again; so does the first question after a commit, outside any
    transaction. The process's copy is kept per app: tests build many apps in one process, each with its
    own database.
    """
    transaction = _session_transaction()
    remembered = g.get("settings_snapshot")
    if remembered is not None and remembered[0] is _checked_for(transaction):
        return remembered[1]
    if transaction is None and has_request_context():
        # No transaction to join, e.g. a receipt rendered after its action's commit: the stamp alone, read
        # without beginning one (a BEGIN, and on PostgreSQL the ROLLBACK at the request's end). It serves the
        # rest of the request until the session begins a transaction, as settings_read_with's does.
        with read_connection() as connection:
            return _settings_at(None, connection, connection.execute(_STAMP).scalar())
    session = db.session()
    connection = session.connection()  # begins the session's transaction, as any query would
    return _settings_at(session.get_transaction(), connection, connection.execute(_STAMP).scalar())


def last_known_settings() -> Settings:
    """This process's copy as last checked, without checking it again (the first use in a process checks).

    For a setting that changes once in a clinic's life, where one more statement in every redemption is not
    worth exactness: the country of the clinic's phone numbers, from its time zone (patients.normalize_phone).
    Any request that reads settings checks the copy, so it lags a change made by another process by at most
    that process's requests in between.
    """
    settings = current_app.extensions.get("settings_snapshot")
    return settings if settings is not None else current_settings()


def settings_read_with(stamp: int | None, connection) -> None:
    """Take the stamp a page read as a column of its own first query (``STAMP_COLUMN``) on ``connection``.

    The same check as current_settings' own read, one statement fewer: on PostgreSQL each statement
    costs the client about 0.4 ms of CPU, and the public pages need only one or two more. Read outside
    the session's transaction (transaction.read_connection), the stamp is always taken (it is the newest
    there is) and serves current_settings for the rest of the request, until the session begins a
    transaction, which checks again.
    """
    transaction = _session_transaction()
    remembered = g.get("settings_snapshot")
    if transaction is None or remembered is None or remembered[0] is not transaction:
        _settings_at(transaction, connection, stamp)


def keep_settings_checked_by(transaction) -> None:
    """Let the check made in ``transaction``, now committed, serve the rest of the request (until a new transaction).

    For an action that changes no settings and answers with what it did (a redemption's receipt): the answer
    then shows the settings the action was made under, without reading the stamp again after the commit
    (one statement, and on PostgreSQL one round trip). Not for an action that may have changed the settings:
    its copy would predate its own change. Outside a request, or if the transaction checked nothing, a no-op.
    """
    remembered = g.get("settings_snapshot")
    if remembered is not None and remembered[0] is transaction and has_request_context():
        g.settings_snapshot = (_checked_for(None), remembered[1])


def _session_transaction():
    """The scoped session's transaction, if any, without making a session only to ask (a read-only page needs none)."""
    return db.session().get_transaction() if db.session.registry.has() else None


def _checked_for(transaction):
    """What a check is remembered for: the session's transaction, or with none this request (outside one, nothing)."""
    if transaction is not None:
        return transaction
    return request._get_current_object() if has_request_context() else object()


def _settings_at(transaction, connection, stamp: int | None) -> Settings:
    """The copy for the stamp read on ``connection``, remembered for the session's transaction (see _checked_for)."""
    settings = current_app.extensions.get("settings_snapshot")
    if settings is None or stamp is None or settings.stamp != stamp:
        settings = _load(connection, stamp)
        if settings.stamp is not None:
            current_app.extensions["settings_snapshot"] = settings
    g.settings_snapshot = (_checked_for(transaction), settings)
    return settings


def _load(connection, stamp: int | None) -> Settings:
    """Read the tables after the stamp: a change committed in between only makes the next check reload."""
    clinic = connection.execute(_CLINIC).first()
    if clinic is None:  # a new database: the placeholder row every page can render with, committed
        from clinic.services.clinic_settings import get_clinic

        get_clinic()
        connection = db.session.connection()
        stamp = connection.execute(_STAMP).scalar()
        clinic = connection.execute(_CLINIC).first()
    return Settings(stamp=stamp, clinic=ClinicRow(*clinic),
                    campaigns=tuple(CampaignRow(*row) for row in connection.execute(_CAMPAIGNS)),
                    tiers=tuple(TierRow(*row) for row in connection.execute(_TIERS)),
                    webhook_subscriptions=tuple((endpoint_id, frozenset(events or ()))
                                                for endpoint_id, events in connection.execute(_SUBSCRIPTIONS)))
