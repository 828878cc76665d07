"""The dashboard's campaign comparison and its CSV, checked against three campaigns computed by hand.

The clinic is in Asia/Shanghai (UTC+8): "April" is [2026-03-31 16:00, 2026-04-30 16:00) UTC.

    campaign (oldest first)      referral  registered (UTC)   branch  visited  paid     notes
    A "Bring a friend" (default) A1        2026-04-02 02:00   North   yes      ¥500
      referrer ¥200 off,         A2        2026-03-31 17:00   North   yes               local 1 April; referrer's
      friend 1 bed-day waived                                                            voucher voided
                                 A3        2026-04-30 16:00   South                     local 1 May
                                 A4        2026-04-05 03:00   North   yes      ¥300     reversed (its referrer's
                                                                                         voucher spent first)
                                 A5        2026-04-30 15:59   South                     local 30 April 23:59
    B "¥100 off for both"        B1        2026-04-10 03:00   North   yes      ¥800
      referrer ¥100 off,         B2        2026-04-12 03:00   South   yes      (no amount)
      friend ¥100 off at the     B3        2026-04-15 03:00   North
      first payment
    C "Gift packs" (cards only)  C1        2026-04-20 03:00   South                     came with a scratch card
      both sides a service
"""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Referral, Voucher
from clinic.services import branches, clinic_settings, milestones, redemption, reports, vouchers
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.transaction import Actor, atomic
from tests.test_reports import FORMULA_NAME, IN_APRIL, SHANGHAI, _card_for, clock_at, read_csv

CREATED = {"A1": "2026-04-02 02:00", "A2": "2026-03-31 17:00", "A3": "2026-04-30 16:00", "A4": "2026-04-05 03:00",
           "A5": "2026-04-30 15:59", "B1": "2026-04-10 03:00", "B2": "2026-04-12 03:00", "B3": "2026-04-15 03:00",
           "C1": "2026-04-20 03:00"}
SERVICE = {"kind": "service", "amount": 0}
HUNDRED_OFF_FOR_BOTH = {
    "name": "¥100 off for both", "referrer_reward_kind": "money", "referrer_reward_amount": 10000,
    "referrer_reward_label": "", "friend_reward_kind": "money", "friend_reward_amount": 10000,
    "friend_reward_label": "", "friend_reward_stage": "payment", "voucher_valid_days": 90,
}
GIFT_PACKS = {
    "name": "Gift packs", "covers": "cards", "referrer_reward_kind": "service", "referrer_reward_amount": 0,
    "referrer_reward_label": "¥200 meal voucher", "friend_reward_kind": "service", "friend_reward_amount": 0,
    "friend_reward_label": "Free first consultation", "voucher_valid_days": 90,
}


def april(branch_id: int | None = None) -> reports.Scope:
    return reports.Scope.for_days(date(2026, 4, 1), date(2026, 4, 30), SHANGHAI, branch_id)


@pytest.fixture
def campaigns(app, make_staff, manager_user) -> dict:
    """The table above, built through the desk's services; returns the branch and campaign ids."""
    with clock_at(IN_APRIL):
        north = branches.create_branch("North", "", Actor()).id
        south = branches.create_branch("South", "", Actor()).id
        at = {"North": Actor(staff_id=make_staff().id, branch_id=north),
              "South": Actor(staff_id=make_staff().id, branch_id=south)}
        manager = Actor(staff_id=manager_user.id)
        wang = enrol_patient(PatientDetails(full_name="王丽", phone="13800000001"), at["North"])[0]
        branch_of = {"A1": "North", "A2": "North", "A3": "South", "A4": "North", "A5": "South", "B1": "North",
                     "B2": "South", "B3": "North", "C1": "South"}
        results = {}

        def redeem(name: str, code: str) -> None:
            details = PatientDetails(full_name=f"Friend {name}", phone=f"139000000{len(results):02d}")
            results[name] = redemption.redeem_code(code, details, at[branch_of[name]])

        for name in ("A1", "A2", "A3", "A4", "A5"):
            redeem(name, wang.personal_code)
        b = clinic_settings.create_campaign(HUNDRED_OFF_FOR_BOTH, manager).id
        for name in ("B1", "B2", "B3"):
            redeem(name, wang.personal_code)
        c = clinic_settings.create_campaign(GIFT_PACKS, manager).id
        redeem("C1", _card_for(wang.id, at["South"]))
        friend = {name: result.friend.id for name, result in results.items()}

        milestones.record_payment(friend["A1"], 50000, at["North"])
        milestones.record_visit(friend["A2"], at["North"])
        vouchers.void_voucher(results["A2"].referrer_voucher.id, "Issued in error", manager)
        milestones.record_payment(friend["A4"], 30000, at["North"])
        vouchers.spend_voucher(results["A4"].referrer_voucher.code, at["North"])
        milestones.reverse_referral(results["A4"].referral.id, "Refunded: treatment cancelled", manager)
        milestones.record_payment(friend["B1"], 80000, at["North"])
        milestones.record_payment(friend["B2"], None, at["South"])
    with atomic():
        for name, text in CREATED.items():
            db.session.get(Referral, results[name].referral.id).created_at = datetime.fromisoformat(text)
    a = results["A1"].referral.campaign_id
    assert {results[name].referral.campaign_id for name in ("B1", "B2", "B3")} == {b}
    assert results["C1"].referral.campaign_id == c
    return {"north": north, "south": south, "A": a, "B": b, "C": c,
            "referrals": {name: result.referral.id for name, result in results.items()}}


FIGURES = ("registered", "visited", "paid", "paid_amount", "reward_money", "service_vouchers", "reward_money_per_paid")


def table(scope: reports.Scope) -> list[tuple]:
    return [(row.name, *(getattr(row, figure) for figure in FIGURES)) for row in reports.campaign_comparison(scope)]


@pytest.mark.parametrize("branch, expected", [
    (None, [("Gift packs", 1, 0, 0, 0, 0, 2, None),
            ("¥100 off for both", 3, 2, 2, 80000, 50000, 0, 25000),
            ("Bring a friend", 3, 2, 1, 50000, 40000, 3, 40000)]),
    ("north", [("¥100 off for both", 2, 1, 1, 80000, 30000, 0, 30000),
               ("Bring a friend", 2, 2, 1, 50000, 20000, 2, 20000)]),
    ("south", [("Gift packs", 1, 0, 0, 0, 0, 2, None),
               ("¥100 off for both", 1, 1, 1, 0, 20000, 0, 20000),
               ("Bring a friend", 1, 0, 0, 0, 20000, 1, None)]),
])
def test_each_campaign_its_friends_payments_and_reward_cost(campaigns, branch, expected):
    """Newest campaign first; money vouchers summed over both sides (a voided one left out), service vouchers
    counted; the reversed referral A4 (paid, its referrer's voucher spent) left out; A3 is May's."""
    assert table(april(campaigns[branch] if branch else None)) == expected


def test_the_rows_add_up_to_the_funnel(campaigns):
    for branch in (None, campaigns["north"], campaigns["south"]):
        rows, funnel = reports.campaign_comparison(april(branch)), reports.funnel(april(branch))
        assert sum(row.registered for row in rows) == funnel.registered
        assert sum(row.visited for row in rows) == funnel.visited
        assert sum(row.paid for row in rows) == funnel.paid
        assert sum(row.paid_amount for row in rows) == funnel.paid_amount


def test_the_period_is_made_of_the_clinics_days(campaigns):
    """A2 (31 March 17:00 UTC) is 1 April in Shanghai, A3 (30 April 16:00 UTC) is 1 May, A5 one minute before it
    is still April."""
    may = reports.Scope.for_days(date(2026, 5, 1), date(2026, 5, 31), SHANGHAI)
    assert table(may) == [("Bring a friend", 1, 0, 0, 0, 20000, 1, None)]
    march = reports.Scope.for_days(date(2026, 3, 1), date(2026, 3, 31), SHANGHAI)
    assert table(march) == []
    last_day = reports.Scope.for_days(date(2026, 4, 30), date(2026, 4, 30), SHANGHAI)
    assert table(last_day) == [("Bring a friend", 1, 0, 0, 0, 20000, 1, None)]
    first_day = reports.Scope.for_days(date(2026, 4, 1), date(2026, 4, 1), SHANGHAI)
    assert table(first_day) == [("Bring a friend", 1, 1, 0, 0, 0, 1, None)]


def test_the_offer_is_each_campaigns_with_its_stage(campaigns):
    rows = {row.name: row for row in reports.campaign_comparison(april())}
    hundred = rows["¥100 off for both"]
    assert hundred.referrer_reward.describe_with_stage("CNY") == "CN¥100.00 off"
    assert hundred.friend_reward.describe_with_stage("CNY") == "CN¥100.00 off at the first payment"
    assert hundred.card_referrer_reward is None and hundred.card_friend_reward is None
    gift = rows["Gift packs"]
    assert (gift.referrer_reward, gift.friend_reward) == (None, None)  # cards only
    assert (gift.card_referrer_reward.label, gift.card_friend_reward.label) == ("¥200 meal voucher",
                                                                                "Free first consultation")


@pytest.mark.parametrize("money, paid, per_paid", [(40000, 1, 40000), (50000, 3, 16667), (5, 2, 3), (1, 2, 1),
                                                   (7, 2, 4), (2, 4, 1), (1, 3, 0), (0, 2, 0), (100, 0, None)])
def test_reward_money_per_paying_friend_is_rounded_half_up_in_whole_minor_units(money, paid, per_paid):
    row = reports.CampaignFigures(1, "x", None, None, None, None, registered=max(paid, 1), visited=paid, paid=paid,
                                  paid_amount=0, reward_money=money, service_vouchers=0)
    assert row.reward_money_per_paid == per_paid
    assert per_paid is None or isinstance(per_paid, int)


def campaign_rows(page: str) -> list[list[str]]:
    """The comparison's body rows as the reader sees them: each cell's text, tags dropped, spaces squeezed."""
    body = re.search(r'<table class="campaigns".*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [[" ".join(re.sub(r"<[^>]+>", " ", cell).split())
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_the_dashboard_compares_the_campaigns(manager, campaigns):
    page = manager.get("/admin/dashboard?from=2026-04-01&to=2026-04-30").get_data(as_text=True)
    assert "Campaigns compared" in page and 'aria-labelledby="campaigns-title"' in page
    assert page.count('<th scope="col" class="num">') == 7 and page.count('<th scope="row"') == 3
    assert campaign_rows(page) == [
        ["Gift packs Scratch card: Referrer: ¥200 meal voucher · Friend: Free first consultation",
         "1", "0 0%", "0 0%", "CN¥0.00", "CN¥0.00", "2", "—"],
        ["¥100 off for both Referrer: CN¥100.00 off · Friend: CN¥100.00 off at the first payment",
         "3", "2 66.7%", "2 66.7%", "CN¥800.00", "CN¥500.00", "0", "CN¥250.00"],
        ["Bring a friend Referrer: CN¥200.00 off · Friend: 1 bed-day waived",
         "3", "2 66.7%", "1 33.3%", "CN¥500.00", "CN¥400.00", "3", "CN¥400.00"],
    ]
    assert "rounded half up" in page and "voided vouchers are left out" in page
    south = manager.get(f"/admin/dashboard?from=2026-04-01&to=2026-04-30&branch={campaigns['south']}")
    rows = campaign_rows(south.get_data(as_text=True))
    assert [row[1] for row in rows] == ["1", "1", "1"] and rows[2][-1] == "—"
    assert "/admin/exports/campaigns.csv?from=2026-04-01&amp;to=2026-04-30" in page


def test_a_period_without_referrals_says_so(manager, campaigns):
    page = manager.get("/admin/dashboard?from=2026-01-01&to=2026-01-31").get_data(as_text=True)
    assert "Campaigns compared" in page and 'class="campaigns"' not in page
    assert "No friends were registered under any campaign in this period." in page


def test_the_export_matches_the_page_and_is_audited(manager, campaigns, manager_user):
    query = f"from=2026-04-01&to=2026-04-30&branch={campaigns['south']}"
    response = manager.get(f"/admin/exports/campaigns.csv?{query}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="campaigns-2026-04-01-to-2026-04-30.csv"'
    rows = read_csv(response)
    assert [(r["campaign id"], r["campaign"]) for r in rows] == [
        (str(campaigns["C"]), "Gift packs"), (str(campaigns["B"]), "¥100 off for both"),
        (str(campaigns["A"]), "Bring a friend")]
    gift, hundred, bring = rows
    assert (gift["referrer's reward"], gift["friend's reward (card)"]) == ("", "Free first consultation")
    assert hundred["friend's reward"] == "CN¥100.00 off at the first payment"
    assert [[r[name] for name in ("friends registered", "visited", "visited %", "paid", "paid %",
                                  "friends' first payments", "reward money issued", "service vouchers issued",
                                  "reward money per paying friend", "currency")] for r in rows] == [
        ["1", "0", "0.0", "0", "0.0", "0.00", "0.00", "2", "", "CNY"],
        ["1", "1", "100.0", "1", "100.0", "0.00", "200.00", "0", "200.00", "CNY"],
        ["1", "0", "0.0", "0", "0.0", "0.00", "200.00", "1", "", "CNY"],
    ]
    page = manager.get(f"/admin/dashboard?{query}").get_data(as_text=True)
    shown = campaign_rows(page)
    for csv_row, page_row in zip(rows, shown):
        assert page_row[0].startswith(csv_row["campaign"])
        assert page_row[1] == csv_row["friends registered"] and page_row[6] == csv_row["service vouchers issued"]
        assert page_row[5] == "CN¥" + csv_row["reward money issued"]
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "export.campaigns"))
    assert event.staff_id == manager_user.id and event.details["rows"] == 3
    assert event.details["branch"] == campaigns["south"]
    assert "Campaign comparison exported (CSV)" in manager.get("/admin/audit").get_data(as_text=True)


def test_the_export_holds_no_personal_data(manager, campaigns):
    response = manager.get("/admin/exports/campaigns.csv?from=2026-04-01&to=2026-04-30")
    assert response.status_code == 200 and len(read_csv(response)) == 3
    text = response.get_data(as_text=True)
    assert "王丽" not in text and "Friend A1" not in text and "13900000" not in text
    for code in db.session.scalars(select(Voucher.code)):
        assert code not in text


def test_the_comparison_in_chinese(manager, campaigns, manager_user):
    clinic_settings.update_clinic({"language": "zh_CN"}, Actor(staff_id=manager_user.id))
    page = manager.get("/admin/dashboard?from=2026-04-01&to=2026-04-30").get_data(as_text=True)
    assert "活动效果对比" in page and "Campaigns compared" not in page
    assert "推荐人：¥100.00代金券 · 被推荐人：¥100.00代金券（首次缴费时发放）" in page and "刮刮卡：" in page
    assert "¥250.00" in page and "CN¥" not in page


def test_a_campaign_named_like_a_formula_stays_text_in_the_spreadsheet(manager, campaigns):
    with atomic():
        db.session.get(Campaign, campaigns["C"]).name = FORMULA_NAME
    rows = read_csv(manager.get("/admin/exports/campaigns.csv?from=2026-04-01&to=2026-04-30"))
    assert rows[0]["campaign"] == "'" + FORMULA_NAME
