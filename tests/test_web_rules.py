"""Reward rules through the web: campaigns, milestones, reversal, the review queue, the desk and the invite page."""

import html
import re
from datetime import datetime

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Referral, ReviewRequest, Reward, Voucher
from clinic.services import clinic_settings, milestones, redemption
from clinic.services.money import MAX_AMOUNT_MINOR
from clinic.services.transaction import Actor, atomic
from tests.conftest import friend
from tests.test_rules import clinic_clock

FULL_FORM = {
    "name": "Spring 2027", "starts_at": "2027-01-01", "ends_at": "2027-03-31", "covers": "personal",
    "referrer_reward_kind": "money", "referrer_reward_amount": "150.50", "referrer_reward_label": "",
    "referrer_reward_stage": "payment",
    "friend_reward_kind": "service", "friend_reward_amount": "", "friend_reward_label": "¥200 meal voucher",
    "friend_reward_stage": "visit",
    "card_rewards_differ": "y", "card_referrer_reward_kind": "service", "card_referrer_reward_label": "1 bed-day waived",
    "card_friend_reward_kind": "money", "card_friend_reward_amount": "50",
    "voucher_valid_days": "60", "cap_referrals_per_year": "5", "cap_value_per_year": "500",
    "friend_monthly_quota": "3", "quota_label": "expert appointments",
}
FRIEND_FORM = {"full_name": "Chen Jie", "phone": "139 3333 4444", "display_name": "", "external_id": ""}


def default_campaign_id() -> int:
    campaign_id = clinic_settings.default_campaign().id
    db.session.rollback()
    return campaign_id


def campaigns_snapshot() -> list[dict]:
    rows = db.session.scalars(select(Campaign).order_by(Campaign.id)).all()
    snapshot = [{c.name: getattr(row, c.name) for c in Campaign.__table__.columns} for row in rows]
    db.session.rollback()
    return snapshot


def set_campaign(**changes) -> None:
    with atomic():
        campaign = clinic_settings.default_campaign()
        for key, value in changes.items():
            setattr(campaign, key, value)


def redeem(referrer, actor, number: int = 1):
    return redemption.redeem_code(referrer.personal_code,
                                  friend(full_name=f"Chen Jie{number:02d}", phone=f"1393333{number:04d}"), actor)


def text_of(response) -> str:
    """The page with entities decoded, so that "friend's" reads as typed."""
    return html.unescape(response.get_data(as_text=True))


def flashed(browser, response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)
    return text_of(browser.get(response.headers["Location"]))


def reward(referral_id: int, side: str) -> Reward:
    found = db.session.scalar(select(Reward).where(Reward.referral_id == referral_id, Reward.beneficiary == side))
    db.session.rollback()
    return found


def assert_no_inline_script_or_style(page: str) -> None:
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", page), "the CSP forbids inline scripts"
    assert " style=" not in page and "<style" not in page and " hx-on" not in page


# Campaigns

def test_a_manager_creates_a_campaign_with_every_field(manager):
    page = manager.get("/admin/campaigns/new").get_data(as_text=True)
    assert "The last day is included" in page and "keep their terms" in page
    assert_no_inline_script_or_style(page)
    response = manager.post("/admin/campaigns/new", FULL_FORM)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/campaigns")
    campaign = db.session.scalar(select(Campaign).where(Campaign.name == "Spring 2027"))
    # Asia/Shanghai is UTC+8: local midnights are 16:00 UTC the day before; the last day is included.
    assert campaign.starts_at == datetime(2026, 12, 31, 16, 0)
    assert campaign.ends_at == datetime(2027, 3, 31, 16, 0)
    assert (campaign.covers, campaign.referrer_reward_stage, campaign.friend_reward_stage) == ("personal", "payment", "visit")
    assert (campaign.referrer_reward_kind, campaign.referrer_reward_amount) == ("money", 15050)
    assert (campaign.friend_reward_kind, campaign.friend_reward_label) == ("service", "¥200 meal voucher")
    assert (campaign.card_referrer_reward_label, campaign.card_friend_reward_amount) == ("1 bed-day waived", 5000)
    assert (campaign.voucher_valid_days, campaign.cap_referrals_per_year, campaign.cap_value_per_year) == (60, 5, 50000)
    assert (campaign.friend_monthly_quota, campaign.quota_label) == (3, "expert appointments")
    assert not campaign.is_default
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.created"))
    assert event.details["terms"]["starts_at"] == "2026-12-31T16:00:00" and event.details["campaign_id"] == campaign.id

    edit = manager.get(f"/admin/campaigns/{campaign.id}").get_data(as_text=True)
    for value in ("2027-01-01", "2027-03-31", "150.50", "500.00", "expert appointments", "50.00"):
        assert f'value="{value}"' in edit
    for name, value in (("covers", "personal"), ("referrer_reward_stage", "payment"), ("friend_reward_stage", "visit")):
        assert re.search(rf'<input checked[^>]*name="{name}"[^>]*value="{value}"', edit), name


def test_a_manager_edits_every_field_and_blank_caps_mean_no_cap(manager):
    campaign_id = default_campaign_id()
    assert manager.post(f"/admin/campaigns/{campaign_id}", FULL_FORM).status_code == 303
    changes = {"name": "Autumn", "starts_at": "", "ends_at": "2027-12-31", "covers": "cards",
               "referrer_reward_kind": "service", "referrer_reward_label": "Free check-up", "referrer_reward_stage": "visit",
               "friend_reward_kind": "money", "friend_reward_amount": "88", "friend_reward_stage": "redemption",
               "card_rewards_differ": "", "voucher_valid_days": "30", "cap_referrals_per_year": "",
               "cap_value_per_year": "", "friend_monthly_quota": "", "quota_label": ""}
    assert manager.post(f"/admin/campaigns/{campaign_id}", {**FULL_FORM, **changes}).status_code == 303
    campaign = db.session.get(Campaign, campaign_id)
    assert (campaign.name, campaign.starts_at, campaign.ends_at) == ("Autumn", None, datetime(2027, 12, 31, 16, 0))
    assert (campaign.covers, campaign.referrer_reward_stage, campaign.friend_reward_stage) == ("cards", "visit", "redemption")
    assert (campaign.referrer_reward_kind, campaign.referrer_reward_label) == ("service", "Free check-up")
    assert (campaign.friend_reward_kind, campaign.friend_reward_amount) == ("money", 8800)
    assert campaign.card_referrer_reward_kind is None and campaign.voucher_valid_days == 30
    assert (campaign.cap_referrals_per_year, campaign.cap_value_per_year, campaign.friend_monthly_quota) == (None, None, None)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.changed")
                              .order_by(AuditEvent.id.desc()).limit(1))
    assert event.details["changes"]["covers"] == ["personal", "cards"]
    assert event.details["changes"]["ends_at"] == ["2027-03-31T16:00:00", "2027-12-31T16:00:00"]


def test_a_time_zone_change_keeps_the_days_campaigns_run_and_vouchers_last(manager, desk, referrer, actor, monkeypatch):
    """A campaign's last day and a voucher's, as the manager typed and the receipt printed, stay those days."""
    set_campaign(ends_at=datetime(2026, 1, 1))
    autumn = {**FULL_FORM, "name": "Autumn", "starts_at": "", "ends_at": "2026-12-31", "covers": "both",
              "referrer_reward_stage": "redemption", "friend_reward_stage": "redemption", "voucher_valid_days": "30",
              "cap_referrals_per_year": "", "cap_value_per_year": "", "friend_monthly_quota": ""}
    assert manager.post("/admin/campaigns/new", autumn).status_code == 303
    clinic_clock(monkeypatch, datetime(2026, 12, 1, 2, 0))  # 1 December, 10:00 in Shanghai
    voucher_code = redeem(referrer, actor).friend_voucher.code  # valid 30 days: its last day is 31 December

    clinic_clock(monkeypatch, datetime(2026, 12, 31, 18, 0))  # 02:00 on 1 January in Shanghai: both are over
    assert desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).status_code == 409
    settings = {"name": "Test Clinic", "currency": "CNY", "timezone": "America/Los_Angeles", "phone": "",
                "address": "", "brand_colour": "#0f766e", "public_base_url": ""}
    assert manager.post("/admin/settings", settings).status_code == 303  # 10:00 on 31 December in Los Angeles
    campaign_id = db.session.scalar(select(Campaign.id).where(Campaign.name == "Autumn"))
    db.session.rollback()
    assert 'value="2026-12-31"' in manager.get(f"/admin/campaigns/{campaign_id}").get_data(as_text=True)
    assert desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).status_code == 200
    spent = desk.post("/desk/spend", {"code": voucher_code, "idempotency_key": "spend-form-key-0123456789"})
    assert spent.status_code == 200 and "Take the voucher off the bill" in text_of(spent)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed")
                              .order_by(AuditEvent.id.desc()).limit(1))
    assert event.details["changes"]["timezone"] == ["Asia/Shanghai", "America/Los_Angeles"]
    assert event.details["campaign_days"][f"{campaign_id}.ends_at"] == ["2026-12-31T16:00:00", "2027-01-01T08:00:00"]
    assert event.details["voucher_expiries_kept"] == 2


def test_the_old_campaign_page_leads_to_editing_the_default_campaign(manager):
    response = manager.get("/admin/campaign")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/campaigns/{default_campaign_id()}")
    assert manager.get("/admin/campaigns/99999").status_code == 404
    assert manager.post("/admin/campaigns/99999", FULL_FORM).status_code == 404


def test_the_campaign_list_shows_windows_status_and_which_one_is_in_force(manager):
    actor = Actor()
    base = {key: value for key, value in FULL_FORM.items() if key.endswith(("_kind", "_label"))}
    base.update(referrer_reward_amount=100, friend_reward_amount=0, voucher_valid_days=30,
                card_referrer_reward_kind=None, card_friend_reward_kind=None, card_friend_reward_amount=None)
    ended = clinic_settings.create_campaign({**base, "name": "Old times", "starts_at": datetime(2020, 1, 1),
                                             "ends_at": datetime(2021, 1, 1)}, actor)
    scheduled = clinic_settings.create_campaign({**base, "name": "Next year", "starts_at": datetime(2099, 1, 1)}, actor)
    cards = clinic_settings.create_campaign({**base, "name": "Gift packs", "covers": "cards"}, actor)
    page = manager.get("/admin/campaigns").get_data(as_text=True)
    assert_no_inline_script_or_style(page)

    def row(campaign_id):
        return re.search(rf'<tr id="campaign-{campaign_id}">(.*?)</tr>', page, re.S).group(1)

    assert "ended" in row(ended.id) and "2020-01-01 – 2020-12-31" in row(ended.id)
    assert "scheduled" in row(scheduled.id) and "no end" in row(scheduled.id)
    assert "running" in row(cards.id) and "in-force" in row(cards.id) and ">cards<" in row(cards.id)
    default = row(default_campaign_id())
    assert "running" in default and ">personal codes<" in default and ">cards<" not in default
    assert "always – no end" in default


@pytest.mark.parametrize("changes, message", [
    ({"name": ""}, "Name the campaign"),
    ({"starts_at": "2027-02-01", "ends_at": "2027-01-31"}, "must end after it starts"),
    ({"starts_at": "2027-13-01"}, "Not a valid date value"),
    ({"ends_at": "31/03/2027"}, "Not a valid date value"),
    ({"starts_at": "0001-01-01"}, "Pick a day between"),
    ({"covers": "everyone"}, "Not a valid choice"),
    ({"referrer_reward_stage": "never"}, "Not a valid choice"),
    ({"friend_reward_stage": ""}, "Not a valid choice"),
    ({"referrer_reward_amount": "lots"}, "as a number"),
    ({"cap_referrals_per_year": "0"}, "Between 1 and"),
    ({"cap_referrals_per_year": "-3"}, "Between 1 and"),
    ({"cap_referrals_per_year": "many"}, "Not a valid integer"),
    ({"cap_referrals_per_year": "99999999999999999999"}, "Between 1 and"),
    ({"cap_value_per_year": "0"}, "above zero"),
    ({"cap_value_per_year": "-1"}, "cannot be negative"),
    ({"cap_value_per_year": "a lot"}, "as a number"),
    ({"friend_monthly_quota": "0"}, "Between 1 and 10,000"),
    ({"friend_monthly_quota": "10001"}, "Between 1 and 10,000"),
    ({"quota_label": "x" * 81}, "longer than 80"),
    ({"quota_label": "expert\u202eappointments"}, "cannot be printed"),
])
@pytest.mark.parametrize("target", ["new", "edit"])
def test_bad_campaign_input_comes_back_with_the_error_and_changes_nothing(manager, changes, message, target):
    url = "/admin/campaigns/new" if target == "new" else f"/admin/campaigns/{default_campaign_id()}"
    before = campaigns_snapshot()
    response = manager.post(url, {**FULL_FORM, **changes})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page and "Nothing was saved" in page
    assert campaigns_snapshot() == before


def test_editing_a_campaign_leaves_promised_rewards_as_they_were(manager, desk, referrer, actor):
    set_campaign(friend_reward_stage="visit")
    result = redeem(referrer, actor)
    changed = {**FULL_FORM, "starts_at": "", "ends_at": "", "covers": "both", "friend_reward_kind": "money",
               "friend_reward_amount": "999", "friend_reward_stage": "redemption", "cap_referrals_per_year": "",
               "cap_value_per_year": "", "friend_monthly_quota": ""}
    assert manager.post(f"/admin/campaigns/{default_campaign_id()}", changed).status_code == 303
    page = flashed(desk, desk.post(f"/patients/{result.friend.id}/visit"))
    assert "Paid: 1 bed-day waived to Chen J." in page
    voucher = db.session.scalar(select(Voucher).where(Voucher.beneficiary == "friend"))
    assert (voucher.kind, voucher.label, voucher.amount) == ("service", "1 bed-day waived", 0)


# Milestones and reversal

def test_marking_the_first_visit_pays_the_reward_due_once(desk, referrer, actor):
    set_campaign(friend_reward_stage="visit")
    result = redeem(referrer, actor)
    page = text_of(desk.get(f"/patients/{result.friend.id}"))
    assert "Mark first visit" in page and "until the friend's first visit" in page
    assert "Reverse this referral" not in page, "reversing is for managers"
    assert_no_inline_script_or_style(page)
    page = flashed(desk, desk.post(f"/patients/{result.friend.id}/visit"))
    assert "First visit recorded. Paid: 1 bed-day waived to Chen J." in page
    friend_voucher = reward(result.referral.id, "friend").voucher_id
    code = db.session.get(Voucher, friend_voucher).code
    assert f"{code[:4]}-{code[4:8]}-{code[8:]}" in page and "Mark first visit" not in page
    again = flashed(desk, desk.post(f"/patients/{result.friend.id}/visit"))
    assert "already recorded" in again
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 2


def test_marking_the_first_payment_records_the_amount_and_pays_what_is_due(desk, referrer, actor):
    set_campaign(referrer_reward_stage="payment", friend_reward_stage="visit")
    result = redeem(referrer, actor)
    page = text_of(desk.get(f"/patients/{result.friend.id}"))
    assert "until the friend's first payment" in page
    page = flashed(desk, desk.post(f"/patients/{result.friend.id}/payment", {"amount": "1,234.50"}))
    assert "First payment recorded. Paid:" in page
    assert "1 bed-day waived to Chen J." in page and "CN¥200.00 off to Wang L." in page
    referral = db.session.get(Referral, result.referral.id, populate_existing=True)  # the desk changed it
    assert referral.paid_amount == 123450 and referral.visited_at is not None
    assert "CN¥1,234.50" in page
    assert "already recorded" in flashed(desk, desk.post(f"/patients/{result.friend.id}/payment", {"amount": ""}))


@pytest.mark.parametrize("amount, message", [
    ("-5", "cannot be negative"), ("abc", "as a number"), ("1.234", "at most 2 decimal places"),
    ("1e9", "cannot be more than"),
])
def test_a_bad_payment_amount_comes_back_with_the_error_and_records_nothing(desk, referrer, actor, amount, message):
    set_campaign(referrer_reward_stage="payment")
    result = redeem(referrer, actor)
    response = desk.post(f"/patients/{result.friend.id}/payment", {"amount": amount})
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert db.session.get(Referral, result.referral.id).paid_at is None
    assert reward(result.referral.id, "referrer").status == "pending"


@pytest.mark.parametrize("currency, amount, recorded, over, limit", [
    ("CNY", "21,474,836.47", MAX_AMOUNT_MINOR, "21474836.48", "CN¥21,474,836.47"),
    ("JPY", "1,500,000", 1_500_000, "2147483648", "¥2,147,483,647"),
    ("JPY", "2,147,483,647", MAX_AMOUNT_MINOR, "1e10", "¥2,147,483,647"),
])
def test_a_payment_may_be_as_large_as_its_column_holds_in_the_clinics_currency(desk, referrer, actor, currency,
                                                                                amount, recorded, over, limit):
    """One limit in minor units whatever the currency, the API's too: a limit of 1,000,000 in every currency's major
    units refused an ordinary ¥1,500,000 hospital bill in JPY that the API took."""
    clinic_settings.update_clinic({"currency": currency}, Actor())
    set_campaign(referrer_reward_stage="payment")
    result = redeem(referrer, actor)
    refused = desk.post(f"/patients/{result.friend.id}/payment", {"amount": over})
    assert refused.status_code == 422 and f"The amount cannot be more than {limit}." in text_of(refused)
    assert db.session.get(Referral, result.referral.id).paid_at is None
    assert desk.post(f"/patients/{result.friend.id}/payment", {"amount": amount}).status_code == 303
    assert db.session.get(Referral, result.referral.id, populate_existing=True).paid_amount == recorded


def test_a_currency_without_decimals_says_so(desk, referrer, actor):
    clinic_settings.update_clinic({"currency": "JPY"}, Actor())
    result = redeem(referrer, actor)
    refused = text_of(desk.post(f"/patients/{result.friend.id}/payment", {"amount": "1500.5"}))
    assert "JPY amounts have no decimals: enter a whole number." in refused and "0 decimal places" not in refused


def test_milestones_explain_why_they_cannot_be_recorded(desk, referrer):
    response = desk.post(f"/patients/{referrer.id}/visit")
    assert response.status_code == 409 and "not referred by anyone" in response.get_data(as_text=True)
    assert desk.post("/patients/99999/visit").status_code == 404
    assert desk.post("/patients/99999/payment", {"amount": "5"}).status_code == 404
    assert desk.post(f"/patients/{referrer.id}/visit", csrf=False).status_code == 400


def test_a_reward_over_the_cap_shows_as_awaiting_approval_on_the_patient_page(desk, referrer, actor):
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor, 1)
    second = redeem(referrer, actor, 2)
    page = desk.get(f"/patients/{second.friend.id}").get_data(as_text=True)
    assert "awaiting manager approval: yearly cap reached" in page


def test_a_manager_reverses_a_referral_and_sees_what_needs_following_up(manager, desk, referrer, actor):
    set_campaign(referrer_reward_stage="visit")
    result = redeem(referrer, actor)
    friend_code = result.friend_voucher.code
    desk.post("/desk/spend", {"code": friend_code, "idempotency_key": "spend-form-key-0123456789"})
    page = manager.get(f"/patients/{result.friend.id}").get_data(as_text=True)
    assert "Reverse this referral" in page

    refused = manager.post(f"/referrals/{result.referral.id}/reverse", {"reason": ""})
    assert refused.status_code == 422 and "Enter the reason" in refused.get_data(as_text=True)
    assert db.session.get(Referral, result.referral.id).status == "active"

    response = manager.post(f"/referrals/{result.referral.id}/reverse", {"reason": "Refunded: treatment cancelled"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/referrals/{result.referral.id}/reversal")
    report = manager.get(response.headers["Location"]).get_data(as_text=True)
    spent = re.search(r'<table id="spent-vouchers">(.*?)</table>', report, re.S).group(1)
    assert f"{friend_code[:4]}-{friend_code[4:8]}-{friend_code[8:]}" in spent
    assert 'id="voided-vouchers"' not in report, "the only voucher was already spent"
    assert "Refunded: treatment cancelled" in report and "CN¥200.00 off" in report  # the cancelled referrer reward
    assert reward(result.referral.id, "referrer").status == "cancelled"

    friend_page = manager.get(f"/patients/{result.friend.id}").get_data(as_text=True)
    assert "Reversed" in friend_page and "Mark first visit" not in friend_page
    again = manager.post(f"/referrals/{result.referral.id}/reverse", {"reason": "Twice over"})
    assert again.status_code == 409 and "already reversed" in again.get_data(as_text=True)
    assert desk.post(f"/patients/{result.friend.id}/visit").status_code == 409
    assert manager.post("/referrals/99999/reverse", {"reason": "No such thing"}).status_code == 404


def redeem_at_the_desk(desk, code: str, number: int):
    return desk.post("/desk/redeem", {**FRIEND_FORM, "code": code, "full_name": f"Chen Jie{number:02d}",
                                      "phone": f"1393333{number:04d}"})


def test_a_referral_reversed_before_the_friend_came_gives_its_monthly_place_back(manager, desk, referrer, actor):
    """The quota counts friends welcomed: a referral reversed as a mistake frees its place; a friend who came keeps it."""
    set_campaign(friend_monthly_quota=2, quota_label="expert appointments")
    assert redeem_at_the_desk(desk, referrer.personal_code, 1).status_code == 303
    assert redeem_at_the_desk(desk, referrer.personal_code, 2).status_code == 303
    came, mistaken = db.session.scalars(select(Referral).order_by(Referral.id)).all()
    db.session.rollback()
    full = redeem_at_the_desk(desk, referrer.personal_code, 3)
    assert full.status_code == 409 and "2 expert appointments are all taken" in text_of(full)

    assert desk.post(f"/patients/{came.friend_id}/visit").status_code == 303
    assert manager.post(f"/referrals/{came.id}/reverse", {"reason": "Refunded after the visit"}).status_code == 303
    assert "All of this month's expert appointments are taken" in text_of(desk.get(f"/r/{referrer.personal_code}"))
    assert manager.post(f"/referrals/{mistaken.id}/reverse", {"reason": "Registered twice"}).status_code == 303
    assert "Only 1 expert appointments left this month" in text_of(desk.get(f"/r/{referrer.personal_code}"))
    events = db.session.scalars(select(AuditEvent.details).where(AuditEvent.action == "referral.reversed")
                                .order_by(AuditEvent.id)).all()
    month = db.session.get(Referral, mistaken.id).quota_month
    assert "quota_place_returned" not in events[0] and events[1]["quota_place_returned"] == month
    db.session.rollback()

    assert redeem_at_the_desk(desk, referrer.personal_code, 3).status_code == 303
    assert redeem_at_the_desk(desk, referrer.personal_code, 4).status_code == 409


def test_the_reversal_report_lists_voided_vouchers(manager, referrer, actor):
    result = redeem(referrer, actor)
    codes = [v.code for v in result.vouchers]
    assert manager.get(f"/referrals/{result.referral.id}/reversal").status_code == 404, "not reversed yet"
    manager.post(f"/referrals/{result.referral.id}/reverse", {"reason": "Patient cancelled"})
    report = manager.get(f"/referrals/{result.referral.id}/reversal").get_data(as_text=True)
    voided = re.search(r'<table id="voided-vouchers">(.*?)</table>', report, re.S).group(1)
    assert all(f"{c[:4]}-{c[4:8]}-{c[8:]}" in voided for c in codes)
    assert "nothing to follow up" in report
    assert_no_inline_script_or_style(report)


# The review queue

def test_a_manager_approves_a_reward_over_the_cap(manager, referrer, actor):
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor, 1)
    second = redeem(referrer, actor, 2)
    page = manager.get("/admin/reviews").get_data(as_text=True)
    assert "Reviews (1)" in page and "Over a yearly cap" in page
    assert "Wang Li" in page and "Chen Jie02" in page and "CN¥200.00 off" in page and "1 rewarded friends a year" in page
    assert_no_inline_script_or_style(page)
    review_id = db.session.scalar(select(ReviewRequest.id))

    refused = manager.post(f"/admin/reviews/{review_id}", {"decision": "approve", "reason": ""})
    assert refused.status_code == 422 and "Enter the reason" in refused.get_data(as_text=True)
    assert reward(second.referral.id, "referrer").status == "review"
    unclear = manager.post(f"/admin/reviews/{review_id}", {"decision": "maybe", "reason": "Loyal patient"})
    assert unclear.status_code == 422 and 'value="Loyal patient"' in unclear.get_data(as_text=True)

    page = flashed(manager, manager.post(f"/admin/reviews/{review_id}",
                                         {"decision": "approve", "reason": "Loyal patient, owner agrees"}))
    assert "Approved: CN¥200.00 off issued to Wang L." in page and "Reviews (0)" in page
    decided = re.search(r'<table id="decided-reviews">(.*?)</table>', page, re.S).group(1)
    assert "approved" in decided and "Loyal patient, owner agrees" in decided and "manager@example.com" in decided
    paid = reward(second.referral.id, "referrer")
    assert paid.status == "issued" and paid.overridden
    twice = manager.post(f"/admin/reviews/{review_id}", {"decision": "reject", "reason": "Changed my mind"})
    assert twice.status_code == 409 and "already approved" in twice.get_data(as_text=True)
    assert manager.post("/admin/reviews/99999", {"decision": "reject", "reason": "No such"}).status_code == 404


def test_a_manager_rejects_a_reward_over_the_cap(manager, referrer, actor):
    set_campaign(cap_value_per_year=20000)
    redeem(referrer, actor, 1)
    second = redeem(referrer, actor, 2)
    review_id = db.session.scalar(select(ReviewRequest.id))
    page = flashed(manager, manager.post(f"/admin/reviews/{review_id}", {"decision": "reject", "reason": "Over the limit"}))
    assert "Rejected" in page and "Nothing is waiting" in page
    rejected = reward(second.referral.id, "referrer")
    assert (rejected.status, rejected.voucher_id, rejected.decision_reason) == ("rejected", None, "Over the limit")
    friend_page = manager.get(f"/patients/{second.friend.id}").get_data(as_text=True)
    assert "rejected" in friend_page and "Over the limit" in friend_page


@pytest.mark.parametrize("approve", [True, False])
def test_a_manager_decides_on_a_friend_who_is_already_a_patient(manager, desk, referrer, make_patient, approve):
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    desk.post("/desk/review", {**FRIEND_FORM, "full_name": "Already Here", "phone": "139 5555 6666",
                               "code": referrer.personal_code}, htmx=True)
    page = manager.get("/admin/reviews").get_data(as_text=True)
    assert "Possibly already a patient" in page and "Already Here" in page and "Wang Li" in page
    assert "139****6666" in page and "13955556666" not in page
    review_id = db.session.scalar(select(ReviewRequest.id).where(ReviewRequest.kind == "existing_patient"))
    decision = {"decision": "approve" if approve else "reject", "reason": "Checked the records"}
    page = flashed(manager, manager.post(f"/admin/reviews/{review_id}", decision))
    referral = db.session.scalar(select(Referral).where(Referral.friend_id == existing.id))
    if approve:
        assert "Approved: Already Here is now Wang L.'s referred friend" in page
        assert referral.referrer_id == referrer.id and len(referral.vouchers) == 2
    else:
        assert "Rejected" in page and referral is None


def test_the_review_page_shows_what_approving_will_pay(manager, desk, referrer, make_patient):
    """The offer the desk made, even once the campaign changed; for a request from before offers were recorded,
    what the campaign in force pays, or why approving would be refused."""
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    desk.post("/desk/review", {**FRIEND_FORM, "full_name": "Already Here", "phone": "139 5555 6666",
                               "code": referrer.personal_code}, htmx=True)
    set_campaign(referrer_reward_amount=50000, friend_reward_kind="money", friend_reward_amount=10000)
    review_id = db.session.scalar(select(ReviewRequest.id))
    offer = re.search(rf'<p id="review-{review_id}-offer">(.*?)</p>', text_of(manager.get("/admin/reviews")), re.S)
    assert re.sub(r"\s+", " ", offer.group(1)) == (
        "Approving makes them this referrer's friend with the rewards the desk offered: the friend gets "
        "<strong>1 bed-day waived</strong>, the referrer <strong>CN¥200.00 off</strong>.")

    with atomic():
        db.session.execute(ReviewRequest.__table__.update().values(campaign_id=None))  # as before the migration
    page = text_of(manager.get("/admin/reviews"))
    assert "sent before the desk's offers were recorded" in page
    assert re.search(r"the friend gets\s+<strong>CN¥100.00 off</strong>, the referrer\s+<strong>CN¥500.00 off", page)
    set_campaign(ends_at=datetime(2020, 1, 1))
    page = text_of(manager.get("/admin/reviews"))
    assert re.search(r"approving it now would be refused:\s+The referral campaign has ended", page)


# The desk

def test_the_desk_sends_a_friend_who_is_already_a_patient_for_approval(desk, referrer, make_patient):
    existing, _ = make_patient(full_name="Already Here", phone="13955556666")
    other, _ = make_patient(full_name="Somebody Else", phone="13977778888")
    form = {**FRIEND_FORM, "full_name": "Already Here", "phone": "139 5555 6666", "code": referrer.personal_code,
            "idempotency_key": "redeem-form-key-0123456789"}
    refused = desk.post("/desk/redeem", form, htmx=True)
    assert refused.status_code == 409
    panel = refused.get_data(as_text=True)
    assert "Send for manager approval" in panel and 'value="139 5555 6666"' in panel

    sent = desk.post("/desk/review", {**form, "patient_id": str(other.id)}, htmx=True)
    assert sent.status_code == 200
    panel = sent.get_data(as_text=True)
    assert panel.lstrip().startswith('<section id="desk-panel"')
    assert "Sent for manager approval" in panel and "data-next-patient" in panel
    review = db.session.scalar(select(ReviewRequest))
    assert (review.kind, review.patient_id, review.referrer_id) == ("existing_patient", existing.id, referrer.id)
    assert review.code == referrer.personal_code

    nobody = desk.post("/desk/review", {**form, "phone": "139 0000 0000"}, htmx=True)
    assert nobody.status_code == 409 and "No patient has this phone" in nobody.get_data(as_text=True)
    plain = desk.post("/desk/review", form)
    assert plain.status_code == 303 and "Sent for manager approval" in flashed(desk, plain)
    assert db.session.scalar(select(func.count()).select_from(ReviewRequest)) == 1  # sent twice, one request
    assert db.session.scalar(select(func.count()).select_from(Referral)) == 0
    assert desk.post("/desk/review", {**form, "code": "2222-2222"}, htmx=True).status_code == 422


def test_the_result_panel_says_when_pending_rewards_will_be_paid(desk, referrer):
    set_campaign(referrer_reward_stage="visit", friend_reward_stage="payment")
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": "redeem-form-key-0123456789"}, htmx=True)
    assert response.status_code == 200
    panel = text_of(response)
    assert "both vouchers are issued" not in panel and "is registered." in panel
    assert re.search(r"CN¥200.00 off</strong>:\s*paid at the friend's first visit", panel)
    assert re.search(r"1 bed-day waived</strong>:\s*issued at your first payment", panel)
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 0
    row = re.search(r'<tr id="recent-\d+">.*?</tr>', panel, re.S).group(0)
    assert "Mark visit" in row


def test_the_result_panel_says_a_reward_over_the_cap_went_for_approval(desk, referrer, actor):
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor, 1)
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": "redeem-form-key-0123456789"})
    page = flashed(desk, response)
    assert re.search(r"CN¥200.00 off</strong>:\s*sent for manager approval: yearly cap reached", page)
    friend_code = db.session.scalar(select(Voucher.code).where(Voucher.beneficiary == "friend")
                                    .order_by(Voucher.id.desc()).limit(1))
    assert f"{friend_code[:4]}-{friend_code[4:8]}-{friend_code[8:]}" in page


def test_mark_visit_in_the_recent_redemptions_swaps_the_row(desk, referrer, actor):
    set_campaign(friend_reward_stage="visit")
    result = redeem(referrer, actor)
    page = desk.get("/desk/").get_data(as_text=True)
    assert f'hx-post="/desk/recent/{result.friend.id}/visit"' in page and 'hx-target="closest tr"' in page
    response = desk.post(f"/desk/recent/{result.friend.id}/visit", htmx=True)
    assert response.status_code == 200
    row = response.get_data(as_text=True).strip()
    assert row.startswith(f'<tr id="recent-{result.referral.id}">') and row.endswith("</tr>")
    assert "Paid: 1 bed-day waived to Chen J." in row and "Visited" in row and "Mark visit" not in row
    again = desk.post(f"/desk/recent/{result.friend.id}/visit", htmx=True).get_data(as_text=True)
    assert "already recorded" in again
    plain = desk.post(f"/desk/recent/{result.friend.id}/visit")
    assert plain.status_code == 303 and "already recorded" in flashed(desk, plain)
    milestones.reverse_referral(result.referral.id, "Cancelled visit", actor)
    other = redeem(referrer, actor, 2)
    milestones.reverse_referral(other.referral.id, "Cancelled visit", actor)
    refused = desk.post(f"/desk/recent/{other.friend.id}/visit", htmx=True)
    assert refused.status_code == 409 and "reversed" in refused.get_data(as_text=True)


# The invite page

def test_the_invite_page_shows_the_places_left_this_month(browser, referrer, actor):
    url = f"/r/{referrer.personal_code}"
    assert "left this month" not in browser.get(url).get_data(as_text=True)
    set_campaign(friend_monthly_quota=2)
    assert "Only 2 places left this month" in browser.get(url).get_data(as_text=True)
    redeem(referrer, actor, 1)
    assert "Only 1 place left this month" in browser.get(url).get_data(as_text=True)
    set_campaign(quota_label="expert appointments", friend_monthly_quota=3)
    assert "Only 2 expert appointments left this month" in browser.get(url).get_data(as_text=True)
    redeem(referrer, actor, 2)
    redeem(referrer, actor, 3)
    assert "All of this month's expert appointments are taken" in text_of(browser.get(url))


# Who may do what

def test_front_desk_gets_403_on_every_manager_page_and_changes_nothing(desk, referrer, actor):
    set_campaign(cap_referrals_per_year=1)
    redeem(referrer, actor, 1)
    second = redeem(referrer, actor, 2)
    review_id = db.session.scalar(select(ReviewRequest.id))
    campaign_id = default_campaign_id()
    before = campaigns_snapshot()
    for url in ("/admin/campaigns", "/admin/campaigns/new", f"/admin/campaigns/{campaign_id}", "/admin/campaign",
                "/admin/reviews", f"/referrals/{second.referral.id}/reversal"):
        assert desk.get(url).status_code == 403, url
    for url, data in (("/admin/campaigns/new", FULL_FORM), (f"/admin/campaigns/{campaign_id}", FULL_FORM),
                      (f"/admin/reviews/{review_id}", {"decision": "approve", "reason": "Let me in"}),
                      (f"/referrals/{second.referral.id}/reverse", {"reason": "Let me in"})):
        assert desk.post(url, data).status_code == 403, url
    assert campaigns_snapshot() == before
    assert db.session.scalar(select(ReviewRequest.status)) == "pending"
    assert db.session.get(Referral, second.referral.id).status == "active"
    assert "Reviews (" not in desk.get("/desk/").get_data(as_text=True)


def test_a_reversed_friend_s_voided_reward_shows_as_cancelled_on_the_progress_page(browser, make_patient, actor,
                                                                                    manager_user):
    """The reward line said "issued" beside a voucher the reversal had voided."""
    patient, token = make_patient(full_name="Wang Li")
    first = redemption.redeem_code(patient.personal_code, friend(full_name="Kept Friend", phone="13900000011"), actor)
    second = redemption.redeem_code(patient.personal_code, friend(full_name="Gone Friend", phone="13900000012"), actor)
    milestones.reverse_referral(second.referral.id, "Refunded", Actor(staff_id=manager_user.id))
    page = html.unescape(browser.get(f"/p/{token}").get_data(as_text=True))
    states = re.findall(r"You: [^<]* · ([a-z ]+)<", page)
    assert states == ["cancelled", "issued"], states  # newest first: the reversed friend, then the kept one
    assert first.referral.id < second.referral.id
