"""A demo clinic for first runs and screenshots: staff, patients, referrals, vouchers."""

from __future__ import annotations

import random
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from flask import current_app

from clinic.models import Role
from clinic.extensions import db
from clinic.models import Branch, Staff, Tier
from clinic.models._time import utcnow
from clinic.services import cards, clinic_settings, invite_opens, milestones, redemption, vouchers
from clinic.services.clinic_settings import clinic_today
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.staff import create_staff
from clinic.services.transaction import Actor, atomic
from clinic.services.urls import invite_url, progress_url

REFERRERS = [
    ("王丽", "王丽", "13800138001"),
    ("Chen Wei", "Chen Wei", "13800138002"),
    ("李小明", "", "13800138003"),
    ("Sarah Lim", "Sarah", "+6591234567"),
    ("张伟", "张伟", "13800138005"),
    ("Tan Mei Ling", "Mei Ling", "13800138006"),
]
DEMO_CARDS = 20
EARLIER_CAMPAIGN = {
    "name": "¥100 off for both",
    "referrer_reward_kind": "money", "referrer_reward_amount": 10000, "referrer_reward_label": "",
    "friend_reward_kind": "money", "friend_reward_amount": 10000, "friend_reward_label": "",
    "voucher_valid_days": 180,
}
EARLIER_FRIENDS = 4  # the first friends, one for each referrer who brought any
# Numbers as real friends have them: scattered, not a run (a run of numbers is what "Referrals to check" flags).
FRIENDS = [
    ("刘洋", "13912604418"), ("Lucy Wong", "13651187723"), ("赵敏", "18621039956"),
    ("Daniel Koh", "+6581234409"), ("孙悦", "13761520387"), ("Peter Ng", "+6596610235"),
    ("周杰", "15821947760"), ("Grace Teo", "+6590087154"), ("吴芳", "13585036612"),
    ("Ahmad Rahman", "+6588413920"), ("郑爽", "17717225830"), ("Olivia Chua", "+6582760043"),
    ("冯磊", "13482973105"), ("Henry Lau", "15000681947"),
]


@dataclass
class DemoSummary:
    password: str
    invite_url: str
    progress_url: str
    counts: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"Demo clinic ready: {self.counts.get('patients', 0)} patients, "
            f"{self.counts.get('referrals', 0)} referrals, {self.counts.get('vouchers', 0)} vouchers, "
            f"{self.counts.get('cards', 0)} scratch cards.",
            f"  manager login: manager@example.com / {self.password}",
            f"  desk login:    desk@example.com / {self.password}",
            f"  a demo patient's invite page:   {self.invite_url}",
            f"  the same patient's progress page: {self.progress_url}",
        ]


def seed_demo_clinic(password: str | None = None) -> DemoSummary:
    """Fill an empty database through the same services the desk uses, so every row is audited."""
    password = password or secrets.token_urlsafe(9)
    manager = create_staff("manager@example.com", password, Role.MANAGER.value)
    desk = create_staff("desk@example.com", password, Role.FRONT_DESK.value)
    with atomic():
        main = Branch(name="Harbour Road", address="88 Harbour Road, Shanghai")
        riverside = Branch(name="Riverside", address="12 River Street, Shanghai")
        db.session.add_all([main, riverside])
        db.session.flush()
        db.session.get(Staff, manager.id).branch_id = main.id
        db.session.get(Staff, desk.id).branch_id = main.id
        db.session.add(Tier(name="VIP", min_paid_referrals=3, window_months=12,
                            privileges="Priority booking · free annual check-up · 10% off hygiene visits"))
        db.session.add(Tier(name="Gold", min_paid_referrals=8, window_months=12,
                            privileges="All VIP privileges · a named hygienist · referrer-of-the-year dinner"))
    as_manager = Actor(staff_id=manager.id, ip="127.0.0.1", branch_id=main.id)
    as_desk = Actor(staff_id=desk.id, ip="127.0.0.1", branch_id=main.id)
    clinic_settings.update_clinic({
        "name": "Harbour Family Dental 港湾口腔",
        "phone": "+86 21 5555 0100",
        "address": "88 Harbour Road, Shanghai",
        "brand_colour": "#0f766e",
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
    }, as_manager)

    referrers = []
    tokens = {}
    for full_name, display_name, phone in REFERRERS:
        # Those with a display name agreed to have it on their posters and (masked) on their invite page.
        patient, token = enrol_patient(PatientDetails(full_name=full_name, display_name=display_name, phone=phone,
                                                      name_on_posters=bool(display_name)), as_desk)
        referrers.append(patient)
        tokens[patient.id] = token

    def bring_friend(index: int) -> redemption.RedemptionResult:
        full_name, phone = FRIENDS[index]
        referrer = referrers[index % 4]  # four referrers brought friends, two not yet
        return redemption.redeem_code(referrer.personal_code, PatientDetails(full_name=full_name, phone=phone),
                                      as_desk)

    # The first friends came under an earlier offer, ended since: the dashboard compares the two campaigns.
    earlier = clinic_settings.create_campaign(EARLIER_CAMPAIGN, as_manager)
    results = [bring_friend(index) for index in range(EARLIER_FRIENDS)]
    clinic_settings.update_campaign(earlier.id, {"ends_at": utcnow()}, as_manager)
    clinic_settings.update_default_campaign({
        "name": "Bring a friend",
        "referrer_reward_kind": "money", "referrer_reward_amount": 20000, "referrer_reward_label": "",
        "friend_reward_kind": "service", "friend_reward_amount": 0,
        "friend_reward_label": "Free first consultation",
        "card_referrer_reward_kind": "service", "card_referrer_reward_amount": 0,
        "card_referrer_reward_label": "¥200 meal voucher",
        "card_friend_reward_kind": "service", "card_friend_reward_amount": 0,
        "card_friend_reward_label": "1 bed-day waived",
        "voucher_valid_days": 180,
    }, as_manager)

    results += [bring_friend(index) for index in range(EARLIER_FRIENDS, len(FRIENDS))]
    for result in results[:5]:
        vouchers.spend_voucher(result.friend_voucher.code, as_desk)
    vouchers.void_voucher(results[5].referrer_voucher.id, "Demo: issued in error", as_manager)

    batch = cards.create_batch(DEMO_CARDS, "classic", False, as_manager)
    cards.run_batch(batch.id)
    serials = [f"{batch.label}-{number:04d}" for number in (1, 2)]
    given = [cards.activate_card(serial, referrer.id, as_desk) for serial, referrer in zip(serials, referrers[4:6])]
    results.append(redemption.redeem_code(given[0].code, PatientDetails(full_name="钱多多", phone="13900139099"),
                                          as_desk))

    # Milestones: most friends of the first referrer came and paid, which makes them a VIP.
    for result in results[:12]:
        milestones.record_visit(result.friend.id, as_desk)
    for index in (0, 4, 8, 12, 1, 5):  # the first referrer's four friends and two of the second's
        milestones.record_payment(results[index].friend.id, 68_000, as_desk)

    _invite_page_history(referrers, given_to=referrers[4:6])

    showcase = referrers[0]
    summary = DemoSummary(
        password=password,
        invite_url=invite_url(showcase.personal_code),
        progress_url=progress_url(tokens[showcase.id]),
        counts={"patients": len(REFERRERS) + len(results), "referrals": len(results), "vouchers": 2 * len(results),
                "cards": DEMO_CARDS},
    )
    logins = Path(current_app.instance_path) / "demo-logins.txt"
    logins.parent.mkdir(parents=True, exist_ok=True)
    logins.write_text("\n".join(summary.lines()) + "\n")
    logins.chmod(0o600)
    return summary


def _invite_page_history(referrers: list, given_to: list) -> None:
    """Some weeks of friends opening the referrers' invite pages, so the dashboard's top of the funnel has figures:
    more for the keen first referrers, some through the two scratch cards handed out (clinic/services/invite_opens.py)."""
    rolls = random.Random(7)  # the same history on every demo
    today = clinic_today()
    history: Counter = Counter()
    for rank, referrer in enumerate(referrers):
        for days_ago in range(28):
            opens = rolls.randint(0, max(0, 4 - rank))
            if opens:
                history[today - timedelta(days=days_ago), referrer.id, invite_opens.PERSONAL] += opens
    for referrer in given_to:
        history[today, referrer.id, invite_opens.CARD] += rolls.randint(1, 3)
    invite_opens.add_to_rows(history)
