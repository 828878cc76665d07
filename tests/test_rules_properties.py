"""Property-based tests of the reward rules over random sequences of desk and manager actions.

Whatever happens — redemptions, visits, payments, spends, reversals, in any order — no referrer
exceeds a cap, every voucher belongs to exactly one promised reward, and the outstanding
liability equals both the sum of active vouchers and what the audit log says was issued and not
yet spent or voided.
"""

from itertools import count

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import (
    AuditEvent,
    Campaign,
    Referral,
    ReferrerYearTotal,
    Reward,
    Voucher,
)
from clinic.models._time import utcnow
from clinic.services import milestones, redemption, vouchers
from clinic.services.errors import Refused
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.transaction import Actor, atomic

CAP_COUNT = 2
CAP_VALUE = 50_000
phones = count(1)

redeem = st.tuples(st.just("redeem"), st.integers(0, 1))
action = st.one_of(
    redeem, redeem, redeem,  # redemptions are what caps are about: make them the commonest action
    st.tuples(st.just("visit"), st.integers(0, 50)),
    st.tuples(st.just("pay"), st.integers(0, 50)),
    st.tuples(st.just("spend"), st.integers(0, 50)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
)


def _pick(items, index):
    return items[index % len(items)] if items else None


def check_invariants():
    db.session.rollback()
    cap_rows = db.session.scalars(select(ReferrerYearTotal)).all()
    for row in cap_rows:
        assert row.rewarded_count <= CAP_COUNT and row.rewarded_value <= CAP_VALUE, "a cap was exceeded"
        counted = db.session.scalar(
            select(func.count()).select_from(Reward).join(Voucher, Reward.voucher_id == Voucher.id)
            .join(Referral, Reward.referral_id == Referral.id)
            .where(Reward.patient_id == row.referrer_id, Reward.beneficiary == "referrer",
                   Reward.status == "issued", Reward.overridden.is_(False),
                   ~((Referral.status == "reversed") & (Voucher.status == "void"))))
        assert counted == row.rewarded_count, "the cap counter disagrees with the rewards it counts"

    voucher_count = db.session.scalar(select(func.count()).select_from(Voucher))
    linked = db.session.scalar(select(func.count()).select_from(Reward).where(Reward.voucher_id.is_not(None)))
    assert voucher_count == linked, "a voucher without its reward, or a reward with two vouchers"
    mismatched = db.session.scalar(select(func.count()).select_from(Reward).join(Voucher, Reward.voucher_id == Voucher.id)
                                   .where(Reward.referral_id != Voucher.referral_id))
    assert mismatched == 0

    liability = db.session.scalar(select(func.coalesce(func.sum(Voucher.amount), 0)).where(
        Voucher.status == "active", Voucher.kind == "money", Voucher.expires_at > utcnow()))
    issued = spent = voided = 0
    amounts = dict(db.session.execute(select(Voucher.id, Voucher.amount).where(Voucher.kind == "money")).all())
    for event in db.session.scalars(select(AuditEvent).where(AuditEvent.outcome == "ok", AuditEvent.action.in_(
            ["voucher.issued", "voucher.spent", "voucher.voided"]))):
        amount = amounts.get(event.voucher_id, 0)
        if event.action == "voucher.issued":
            issued += amount
        elif event.action == "voucher.spent":
            spent += amount
        else:
            voided += amount
    assert liability == issued - spent - voided, "the ledger and the vouchers disagree"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# The cases that matter most, always tried first: a referrer pushed past both caps, then reversals and spends.
@example(stages=("redemption", "redemption"), actions=[("redeem", 0)] * 4 + [("reverse", 0), ("redeem", 0)])
@example(stages=("payment", "visit"), actions=[("redeem", 0)] * 3 + [("pay", 0), ("pay", 1), ("pay", 2),
                                                                    ("spend", 0), ("reverse", 1), ("spend", 1)])
@given(stages=st.tuples(st.sampled_from(["redemption", "visit", "payment"]),
                        st.sampled_from(["redemption", "visit", "payment"])),
       actions=st.lists(action, min_size=3, max_size=14))
def test_rules_hold_over_any_sequence_of_actions(app, actor, manager_user, stages, actions):
    with atomic():
        campaign = db.session.scalar(select(Campaign))
        campaign.referrer_reward_stage, campaign.friend_reward_stage = stages
        campaign.cap_referrals_per_year, campaign.cap_value_per_year = CAP_COUNT, CAP_VALUE
    referrers = [enrol_patient(PatientDetails(full_name=f"Referrer {n}", phone=f"1371{next(phones):07d}"), actor)[0]
                 for n in range(2)]
    as_manager = Actor(staff_id=manager_user.id)
    for verb, index in actions:
        try:
            if verb == "redeem":
                redemption.redeem_code(referrers[index].personal_code,
                                       PatientDetails(full_name="Friend", phone=f"1372{next(phones):07d}"), actor)
                continue
            referral_ids = db.session.scalars(select(Referral.id).order_by(Referral.id)).all()
            referral = db.session.get(Referral, _pick(referral_ids, index)) if referral_ids else None
            if verb == "visit" and referral:
                milestones.record_visit(referral.friend_id, actor)
            elif verb == "pay" and referral:
                milestones.record_payment(referral.friend_id, 10_000, actor)
            elif verb == "reverse" and referral:
                milestones.reverse_referral(referral.id, "Property test", as_manager)
            elif verb == "spend":
                codes = db.session.scalars(select(Voucher.code).order_by(Voucher.id)).all()
                if codes:
                    vouchers.spend_voucher(_pick(codes, index), actor)
        except Refused:
            pass  # refusals are part of the rules; the invariants must hold either way
        check_invariants()

