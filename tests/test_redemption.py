"""Redemption at the desk: the rules table, all-or-nothing, idempotency and concurrency."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Patient, Referral, Voucher
from clinic.models._time import utcnow
from clinic.services import audit, codes, redemption, vouchers
from clinic.services.clinic_settings import clinic_day_of, last_day_before, start_of_clinic_day
from clinic.services.errors import Refused
from clinic.services.patients import PatientDetails
from clinic.services.transaction import Actor, atomic
from tests.conftest import counts, friend


def wrong_check(code: str) -> str:
    last = next(s for s in codes.ALPHABET if s != code[-1])
    return code[:-1] + last


def test_redemption_registers_the_friend_and_pays_both_sides(referrer, actor):
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)

    assert result.friend.full_name == "Chen Jie"
    assert result.friend.referred_by_id == referrer.id
    assert result.friend.personal_code != referrer.personal_code
    assert codes.has_valid_check(result.friend.personal_code)
    assert result.friend_progress_token
    assert result.referral.referrer_id == referrer.id
    by_side = {v.beneficiary: v for v in result.vouchers}
    assert by_side["referrer"].patient_id == referrer.id
    assert (by_side["referrer"].kind, by_side["referrer"].amount) == ("money", 20000)
    assert by_side["friend"].patient_id == result.friend.id
    assert (by_side["friend"].kind, by_side["friend"].label) == ("service", "1 bed-day waived")
    for voucher in result.vouchers:
        assert voucher.status == "active"
        assert len(voucher.code) == 12 and codes.has_valid_check(voucher.code)
        # Valid 90 days after the day of issue, to the end of that clinic day.
        assert last_day_before(voucher.expires_at) == clinic_day_of(voucher.issued_at) + timedelta(days=90)
        assert voucher.expires_at == start_of_clinic_day(last_day_before(voucher.expires_at) + timedelta(days=1))
    actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.outcome == "ok")).all()
    assert actions.count("redemption") == 1
    assert actions.count("voucher.issued") == 2


def mistyped(referrer):
    return wrong_check(referrer.personal_code)


RULES = [
    # (name, how to build the code, the friend, expected reason)
    ("unknown code", lambda r: codes.generate_personal_code(), friend(), "unknown_code"),
    ("mistyped code", mistyped, friend(), "mistyped_code"),
    ("wrong length", lambda r: r.personal_code[:6], friend(), "wrong_length"),
    ("not a code", lambda r: "<script>alert(1)</script>", friend(), "not_a_code"),
    ("empty", lambda r: "", friend(), "empty_code"),
    ("self-referral by phone", lambda r: r.personal_code, friend(phone="13811112222"), "self_referral"),
    ("self-referral by record number", lambda r: r.personal_code, friend(phone=None, external_id="MRN-1"),
     "self_referral"),
    ("friend already a patient by phone", lambda r: r.personal_code, friend(phone="13800000099"), "existing_patient"),
    ("friend already a patient by record number", lambda r: r.personal_code,
     friend(phone="13977776666", external_id="MRN-99"), "existing_patient"),
    ("voucher code at the referral field", "voucher", friend(), "not_a_referral_code"),
]


@pytest.mark.parametrize("name, code_for, details, reason", RULES, ids=[rule[0] for rule in RULES])
def test_desk_rules_refuse_with_a_reason_and_change_nothing(referrer, actor, make_patient, name, code_for,
                                                             details, reason):
    make_patient(full_name="Existing", phone="13800000099", external_id="MRN-99")
    if code_for == "voucher":
        earlier = redemption.redeem_code(referrer.personal_code, friend(full_name="Earlier", phone="13700000001"), actor)
        code = earlier.friend_voucher.code
    else:
        code = code_for(referrer)
    before = counts()

    with pytest.raises(Refused) as refused:
        redemption.redeem_code(code, details, actor)

    assert refused.value.reason == reason
    assert refused.value.message
    assert 400 <= refused.value.status < 500
    assert counts() == before
    last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome, last.reason) == ("redemption", "refused", reason)


@pytest.mark.parametrize("typed", ["+86 138 1111 2222", "0086 13811112222", "+8613811112222", "(138) 1111-2222"])
def test_the_owner_s_phone_with_the_country_code_is_still_a_self_referral(referrer, actor, make_patient,
                                                                          typed):
    """Found by a review: +86/0086 passed both phone checks and paid both vouchers to the code's owner."""
    make_patient(full_name="Existing", phone="13800000099")
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, PatientDetails.from_form(full_name="Me Again", phone=typed),
                               actor)
    assert refused.value.reason == "self_referral"
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, PatientDetails.from_form(
            full_name="Existing", phone=typed.replace("1111", "0000").replace("2222", "0099")), actor)
    assert refused.value.reason == "existing_patient"
    assert counts() == before


def test_a_friend_with_neither_phone_nor_record_number_is_refused(referrer, actor):
    """Nothing would tell such a friend from the code's owner or a patient already known: refused, audited."""
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, friend(full_name="Wang Li", phone=None), actor)
    assert (refused.value.reason, refused.value.field, refused.value.status) == ("contact_needed", "phone", 422)
    assert counts() == before
    last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome, last.reason) == ("redemption", "refused", "contact_needed")
    assert redemption.redeem_code(referrer.personal_code, friend(phone=None, external_id="MRN-7"), actor).referral


def test_an_existing_friend_is_refused_without_a_failed_statement(referrer, actor, make_patient):
    """The friend's INSERT … ON CONFLICT DO NOTHING answers "taken"; no unique violation reaches the database's log.

    Before, the INSERT failed on the phone's unique index and the whole transaction was rolled back to find out
    who existed: on PostgreSQL an ERROR line per "already registered" at the desk.
    """
    from sqlalchemy import event

    make_patient(full_name="Existing", phone="13800000099")
    db.session.commit()
    failures = []

    def failed(context):
        failures.append(context.original_exception)

    event.listen(db.engine, "handle_error", failed)
    try:
        with pytest.raises(Refused) as refused:
            redemption.redeem_code(referrer.personal_code, friend(phone="13800000099"), actor)
    finally:
        event.remove(db.engine, "handle_error", failed)
    assert (refused.value.reason, refused.value.field) == ("existing_patient", "phone")
    assert failures == []


def test_a_taken_personal_code_is_drawn_again(referrer, actor, monkeypatch):
    """A friend's freshly drawn code that a patient already holds: nothing written, another code drawn."""
    drawn = iter([referrer.personal_code, codes.generate_personal_code()])
    monkeypatch.setattr("clinic.services.patients.generate_personal_code", lambda: next(drawn))
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert result.friend.personal_code != referrer.personal_code
    assert db.session.scalar(select(Patient).where(Patient.id == result.friend.id)).full_name == friend().full_name


def test_campaign_ended_refuses(referrer, actor):
    with atomic():
        db.session.scalar(select(Campaign)).ends_at = utcnow() - timedelta(minutes=1)
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert refused.value.reason == "campaign_ended"
    assert counts() == before


def test_a_fault_after_the_first_write_leaves_nothing_behind(referrer, actor, monkeypatch):
    real_record_all = audit.record_all
    calls = []

    def record_then_fail(*args, **kwargs):
        real_record_all(*args, **kwargs)  # the vouchers are written and the events audited...
        calls.append(db.session.scalars(select(Voucher)).all())
        raise RuntimeError("disk unplugged")  # ...then the process fails

    monkeypatch.setattr(audit, "record_all", record_then_fail)
    before = counts()
    with pytest.raises(RuntimeError):
        redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert calls and len(calls[0]) == 2, "the fault must come after rows were written"
    assert counts() == before
    assert db.session.scalar(select(Patient).where(Patient.phone == "13933334444")) is None

    monkeypatch.setattr(audit, "record_all", real_record_all)
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert len(result.vouchers) == 2


def test_the_same_form_submitted_twice_creates_nothing_twice(referrer, actor):
    first = redemption.redeem_code(referrer.personal_code, friend(), actor, idempotency_key="k" * 32)
    before = counts()
    again = redemption.redeem_code(referrer.personal_code, friend(), actor, idempotency_key="k" * 32)
    assert again.replayed and not first.replayed
    assert again.referral.id == first.referral.id
    assert {v.code for v in again.vouchers} == {v.code for v in first.vouchers}
    assert counts() == before


def test_a_form_key_reused_for_other_details_is_refused(referrer, actor):
    redemption.redeem_code(referrer.personal_code, friend(), actor, idempotency_key="k" * 32)
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, friend(full_name="Someone Else", phone="13900000000"), actor,
                               idempotency_key="k" * 32)
    assert refused.value.reason == "key_reused"
    assert counts() == before


def test_a_damaged_form_key_is_refused(referrer, actor):
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(referrer.personal_code, friend(), actor, idempotency_key="bad key <>")
    assert refused.value.reason == "validation_error"


def run_at_once(app, count, work):
    """Run ``work(index)`` in ``count`` threads released together by a barrier; collect outcomes."""
    barrier = threading.Barrier(count)
    outcomes = [None] * count

    def runner(index):
        with app.app_context():
            barrier.wait()
            try:
                outcomes[index] = ("ok", work(index))
            except Refused as refusal:
                outcomes[index] = ("refused", refusal.reason)
            except Exception as error:  # noqa: BLE001 - a crash is an outcome the test must see
                outcomes[index] = ("error", repr(error))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=runner, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    db.session.rollback()  # end the test's own read snapshot so that it sees what the threads committed
    return outcomes


def test_twenty_desks_redeeming_for_the_same_friend_create_one_friend_and_one_pair(app, referrer, actor):
    code = referrer.personal_code
    before = counts()
    outcomes = run_at_once(app, 20, lambda _: redemption.redeem_code(code, friend(), actor).referral.id)

    assert [o for o in outcomes if o[0] == "error"] == []
    assert sum(1 for o in outcomes if o[0] == "ok") == 1
    assert {o[1] for o in outcomes if o[0] == "refused"} == {"existing_patient"}
    after = counts()
    assert after["patients"] == before["patients"] + 1
    assert after["referrals"] == before["referrals"] + 1
    assert after["vouchers"] == before["vouchers"] + 2
    assert db.session.scalar(select(db.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "redemption", AuditEvent.outcome == "refused")) == 19


def test_twenty_replays_of_one_form_at_once_pay_once_and_answer_the_same(app, referrer, actor):
    code = referrer.personal_code
    before = counts()
    outcomes = run_at_once(app, 20, lambda _: redemption.redeem_code(
        code, friend(), actor, idempotency_key="same-form-key-0123456789").referral.id)

    assert [o for o in outcomes if o[0] != "ok"] == []
    assert len({o[1] for o in outcomes}) == 1
    after = counts()
    assert (after["patients"], after["referrals"], after["vouchers"]) == (
        before["patients"] + 1, before["referrals"] + 1, before["vouchers"] + 2)


def test_vouchers_keep_their_value_when_the_campaign_changes(referrer, actor):
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    with atomic():
        campaign = db.session.scalar(select(Campaign))
        campaign.referrer_reward_amount = 1
    voucher = db.session.get(Voucher, result.referrer_voucher.id)
    assert voucher.amount == 20000
    assert db.session.get(Referral, result.referral.id).campaign_id == campaign.id


def test_the_friend_redeemed_is_not_a_voucher_spender(referrer, actor):
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    spent, _ = vouchers.spend_voucher(result.friend_voucher.code, Actor(staff_id=actor.staff_id))
    assert spent.status == "spent"


PHONE_SPELLINGS = [
    # (typed, the clinic's country, stored)
    ("+86 139 1112 7378", "CN", "13911127378"),
    ("0086 139-1112-7378", "CN", "13911127378"),
    ("139 1112 7378", "CN", "13911127378"),
    ("010 1234 5678", "CN", "01012345678"),
    ("+86 10 1234 5678", "CN", "01012345678"),  # a Beijing landline: the trunk 0 comes back
    ("+44 7700 900123", "CN", "+447700900123"),
    ("0044 7700 900123", "CN", "+447700900123"),
    ("+44 7700 900123", "GB", "07700900123"),
    ("+86 139 1112 7378", None, "+8613911127378"),  # a zone of no one country: international digits
    ("13911127378", None, "13911127378"),  # ... and a number without its country as typed
    ("+861391112737899", "CN", "+861391112737899"),  # too long to be possible: kept as typed
    ("123456", "CN", "123456"),
]


@pytest.mark.parametrize("typed, region, stored", PHONE_SPELLINGS, ids=[f"{t} in {r}" for t, r, _ in PHONE_SPELLINGS])
def test_a_phone_number_is_stored_in_one_spelling(app, typed, region, stored):
    from clinic.services.patients import normalize_phone

    assert normalize_phone(typed, region) == stored


def test_the_clinic_s_country_comes_from_its_time_zone(app):
    from clinic.services.patients import clinic_phone_region, phone_region_of

    assert clinic_phone_region() == "CN"  # the default clinic: Asia/Shanghai
    assert (phone_region_of("Europe/London"), phone_region_of("Asia/Tokyo"), phone_region_of("UTC")) == (
        "GB", "JP", None)
