"""Spending and voiding vouchers: once, with a clear message otherwise, always audited."""

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Voucher
from clinic.models._time import utcnow
from clinic.services import clinic_settings, notifications, redemption, vouchers, webhooks
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic
from tests.conftest import CAMPAIGN, counts, friend
from tests.test_redemption import run_at_once, wrong_check
from tests.test_reports import clock_at


@pytest.fixture
def issued(referrer, actor):
    return redemption.redeem_code(referrer.personal_code, friend(), actor)


def test_spending_marks_the_voucher_spent_once_and_audits_it(issued, actor):
    code = issued.friend_voucher.code
    voucher, replayed = vouchers.spend_voucher(f"{code[:4]}-{code[4:8]}-{code[8:]}".lower(), actor)
    assert not replayed
    assert voucher.status == "spent" and voucher.spent_by_id == actor.staff_id and voucher.spent_at
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "voucher.spent")).voucher_id == voucher.id

    with pytest.raises(Refused) as refused:
        vouchers.spend_voucher(code, actor)
    assert refused.value.reason == "already_spent"
    assert "already spent" in refused.value.message


def test_spending_from_a_scanned_voucher_url(issued, actor):
    code = issued.friend_voucher.code
    voucher, _ = vouchers.spend_voucher(f"https://clinic.test/v/{code}", actor)
    assert voucher.status == "spent"


def test_a_replayed_spend_form_answers_the_same_and_spends_once(issued, actor):
    code = issued.friend_voucher.code
    vouchers.spend_voucher(code, actor, idempotency_key="spend-key-0123456789")
    before = counts()
    voucher, replayed = vouchers.spend_voucher(code, actor, idempotency_key="spend-key-0123456789")
    assert replayed and voucher.status == "spent"
    assert counts() == before


@pytest.mark.parametrize("make_unusable, reason", [
    (lambda v: setattr(v, "expires_at", utcnow() - timedelta(seconds=1)), "expired"),
    (lambda v: (setattr(v, "status", "void"), setattr(v, "void_reason", "lost")), "voided"),
])
def test_expired_and_void_vouchers_refuse(issued, actor, make_unusable, reason):
    with atomic():
        voucher = db.session.get(Voucher, issued.friend_voucher.id)
        make_unusable(voucher)
    before = counts()
    with pytest.raises(Refused) as refused:
        vouchers.spend_voucher(voucher.code, actor)
    assert refused.value.reason == reason
    assert counts() == before
    last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome, last.reason) == ("voucher.spend", "refused", reason)


# A voucher valid 1 day, issued at ``issued`` (naive UTC) in a clinic in ``zone``: the day it shows as its last,
# and the last minute of that day in the zone (naive UTC). New York has daylight saving time: on 1 Nov 2026 its
# clocks go back (a 25-hour day), on 8 Mar 2026 forward (a 23-hour day).
LAST_DAYS = [
    pytest.param("Asia/Shanghai", datetime(2026, 11, 24, 4, 9, 27), date(2026, 11, 25), datetime(2026, 11, 25, 15, 59),
                 id="shanghai-issued-at-noon"),
    pytest.param("Asia/Shanghai", datetime(2026, 11, 23, 16, 30), date(2026, 11, 25), datetime(2026, 11, 25, 15, 59),
                 id="shanghai-issued-just-after-local-midnight"),
    pytest.param("America/New_York", datetime(2026, 11, 25, 3, 0), date(2026, 11, 25), datetime(2026, 11, 26, 4, 59),
                 id="new-york-issued-the-evening-before"),
    pytest.param("America/New_York", datetime(2026, 11, 1, 0, 0), date(2026, 11, 1), datetime(2026, 11, 2, 4, 59),
                 id="new-york-last-day-25-hours"),
    pytest.param("America/New_York", datetime(2026, 3, 7, 15, 0), date(2026, 3, 8), datetime(2026, 3, 9, 3, 59),
                 id="new-york-last-day-23-hours"),
]


@pytest.mark.parametrize("zone, issued, last_day, last_minute", LAST_DAYS)
def test_a_voucher_can_be_spent_until_the_end_of_the_day_it_shows(browser, referrer, actor, monkeypatch, zone, issued,
                                                                  last_day, last_minute):
    """"Valid until <day>" promises the whole of that clinic day: the desk must not refuse it later that day."""
    clinic_settings.update_clinic({"timezone": zone}, Actor())
    clinic_settings.update_default_campaign({**CAMPAIGN, "voucher_valid_days": 1}, Actor())
    notifications.set_preferences(referrer.id, "sms", "en", True, Actor())
    sent = []
    monkeypatch.setattr(webhooks, "subscribed", lambda event_type: True)
    monkeypatch.setattr(webhooks, "emit", lambda event_type, data: sent.append((event_type, data)))
    with clock_at(issued):
        result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    day = last_day.isoformat()
    assert [data["valid_until"] for event, data in sent if event == "voucher.issued"] == [day, day]
    [message] = [data["text"] for event, data in sent if event == notifications.EVENT]
    assert f"valid until {day}." in message
    in_time, too_late = result.friend_voucher.code, result.referrer_voucher.code

    with clock_at(last_minute):
        for code in (in_time, too_late):
            assert f"Valid until {day}." in browser.get(f"/v/{code}").get_data(as_text=True)
        assert vouchers.spend_voucher(in_time, actor)[0].status == "spent"

    with clock_at(last_minute + timedelta(minutes=1)):
        assert "expired" in browser.get(f"/v/{too_late}").get_data(as_text=True)
        with pytest.raises(Refused) as refused:
            vouchers.spend_voucher(too_late, actor)
    assert refused.value.reason == "expired"
    assert refused.value.message == f"This voucher has expired: it was valid until {day}."


@pytest.mark.parametrize("raw, reason", [
    ("", "empty_code"),
    ("not a code!", "not_a_code"),
    ("ABCD", "wrong_length"),
])
def test_nonsense_voucher_codes_refuse(app, actor, raw, reason):
    with pytest.raises(Refused) as refused:
        vouchers.spend_voucher(raw, actor)
    assert refused.value.reason == reason


def test_unknown_mistyped_and_personal_codes_refuse(issued, actor, referrer):
    code = issued.friend_voucher.code
    for raw, reason in [(wrong_check(code), "mistyped_code"), (referrer.personal_code, "not_a_voucher")]:
        with pytest.raises(Refused) as refused:
            vouchers.spend_voucher(raw, actor)
        assert refused.value.reason == reason
    from clinic.services.codes import generate_bearer_code

    with pytest.raises(Refused) as refused:
        vouchers.spend_voucher(generate_bearer_code(), actor)
    assert (refused.value.reason, refused.value.status) == ("unknown_code", 404)


def test_twenty_desks_spending_one_voucher_at_once_spend_it_once(app, issued, actor):
    code = issued.friend_voucher.code
    outcomes = run_at_once(app, 20, lambda _: vouchers.spend_voucher(code, actor)[0].id)
    assert [o for o in outcomes if o[0] == "error"] == []
    assert sum(1 for o in outcomes if o[0] == "ok") == 1
    assert {o[1] for o in outcomes if o[0] == "refused"} == {"already_spent"}
    assert db.session.scalar(select(db.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "voucher.spent")) == 1


def test_a_manager_voids_with_a_reason(issued, manager_user):
    as_manager = Actor(staff_id=manager_user.id)
    voucher = vouchers.void_voucher(issued.referrer_voucher.id, "  Issued by mistake ", as_manager)
    assert (voucher.status, voucher.void_reason, voucher.voided_by_id) == ("void", "Issued by mistake", manager_user.id)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "voucher.voided"))
    assert event.details["reason_text"] == "Issued by mistake"

    with pytest.raises(Refused) as refused:
        vouchers.void_voucher(issued.referrer_voucher.id, "again", as_manager)
    assert refused.value.reason == "voided"


@pytest.mark.parametrize("reason", ["", "  ", "ab", "x" * 201])
def test_voiding_needs_a_real_reason(issued, manager_user, reason):
    before = counts()
    with pytest.raises(Refused) as refused:
        vouchers.void_voucher(issued.referrer_voucher.id, reason, Actor(staff_id=manager_user.id))
    assert refused.value.field == "reason"
    assert counts() == before


def test_a_spent_voucher_cannot_be_voided(issued, actor, manager_user):
    vouchers.spend_voucher(issued.friend_voucher.code, actor)
    with pytest.raises(Refused) as refused:
        vouchers.void_voucher(issued.friend_voucher.id, "too late", Actor(staff_id=manager_user.id))
    assert refused.value.reason == "already_spent"
