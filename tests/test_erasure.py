"""Erasing a patient's personal data: gone from every table, the ledger kept, the code and cards dead, refusals clear."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import (AuditEvent, Card, CardBatch, FormSubmission, Patient, Referral, ReviewRequest, Reward,
                           Voucher, WebhookDelivery)
from clinic.services import (cards, clinic_settings, erasure, invitations, milestones, notifications, patients,
                             progress, redemption, vouchers, webhooks)
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import counts, friend
from tests.test_cards import GIFT_PACK
from tests.test_rules import set_campaign

# Everything that identifies the referrer, as the fixtures below write it: none of it may survive anywhere.
NAME, DISPLAY_NAME, PHONE, RECORD = "Wang Lixue", "Auntie Wang", "13811112222", "MRN-88123"
FRIEND_NAME, FRIEND_PHONE = "Chen Jiayi", "13933334444"


@pytest.fixture
def hooks(app):
    """A gateway and an HIS subscribed to everything, never reached (the test reads the outbox)."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE_NETWORKS=True, WEBHOOK_SEND_AFTER_COMMIT=False)
    webhooks.register_endpoint(webhooks.EndpointRules.from_form(
        url="http://127.0.0.1:9/hooks", events=list(webhooks.EVENT_TYPES), description="HIS and SMS"), Actor())
    return app


@pytest.fixture
def wang(hooks, make_patient, actor):
    """A referrer who agreed to everything, with a friend redeemed (vouchers, events, a message) and cards."""
    patient, _token = make_patient(full_name=NAME, phone=PHONE, external_id=RECORD, display_name=DISPLAY_NAME,
                                   name_on_posters=True)
    notifications.set_preferences(patient.id, "sms", "en", True, actor)
    redemption.redeem_code(patient.personal_code, friend(FRIEND_NAME, FRIEND_PHONE), actor,
                           idempotency_key="erasure-test-form-key-0001")
    return db.session.get(Patient, patient.id)


def everything_stored() -> str:
    """Every value of every row of every table, as one text: what a database dump would show."""
    parts = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)).all():
            parts.extend(json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
                         for value in row)
    db.session.rollback()
    return "\n".join(parts)


def erase(patient_id: int, reason: str = "patient_request", staff_id: int | None = None) -> erasure.ErasureReport:
    report = erasure.erase_patient(patient_id, reason, Actor(staff_id=staff_id))
    db.session.expire_all()
    return report


def test_the_referrers_name_phone_and_record_number_are_gone_from_every_table(wang, actor):
    stored = everything_stored()
    assert all(value in stored for value in (NAME, DISPLAY_NAME, PHONE, RECORD))  # the check can see them

    report = erase(wang.id)

    stored = everything_stored()
    for value in (NAME, DISPLAY_NAME, PHONE, RECORD):
        assert value not in stored, value
    patient = db.session.get(Patient, wang.id)
    assert (patient.full_name, patient.display_name, patient.phone, patient.external_id) == ("", "", None, None)
    assert not (patient.name_on_posters or patient.leaderboard_opt_in or patient.notification_consent)
    assert patient.erased_at is not None and patient.staff_name == "Erased patient"
    assert report.events_redacted >= 3 and report.vouchers_kept == 1
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "patient.erased"))
    assert event.patient_id == wang.id and event.details["erasure_reason"] == "patient_request"
    assert FRIEND_NAME in stored  # the friend keeps their data: only the referrer asked


def test_a_waiting_message_is_cancelled_and_a_resend_refused(wang, manager_user):
    message = db.session.scalar(select(WebhookDelivery).join(WebhookDelivery.event).where(
        WebhookDelivery.status == "pending", WebhookDelivery.event.has(event_type=notifications.EVENT)))
    assert message is not None

    assert erase(wang.id).messages_cancelled == 1

    message = db.session.get(WebhookDelivery, message.id)
    assert (message.status, message.cancel_reason) == ("cancelled", "patient_erased")
    assert message.event.payload["to"] == {"patient_id": wang.id, "external_id": None, "phone": None, "name": None}
    with pytest.raises(Refused) as refused:
        webhooks.resend(message.id, Actor(staff_id=manager_user.id))
    assert refused.value.reason == "patient_erased"


def test_the_code_invite_page_and_progress_link_stop_working_and_the_vouchers_stay(wang, actor):
    page_before = db.session.scalar(select(Patient.progress_token_hash).where(Patient.id == wang.id))
    voucher = db.session.scalar(select(Voucher).where(Voucher.patient_id == wang.id))

    erase(wang.id)

    assert db.session.scalar(select(Patient.progress_token_hash).where(Patient.id == wang.id)) != page_before
    assert invitations.invitation(wang.personal_code) is None
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(wang.personal_code, friend("Someone New", "13955556666"), actor)
    assert (refused.value.reason, refused.value.status) == ("code_withdrawn", 409)
    assert counts() == {**before, "audit_ok": before["audit_ok"]}
    spent, _replayed = vouchers.spend_voucher(voucher.code, actor)
    assert spent.status == "spent"


def test_cards_given_to_them_become_void_and_a_personal_card_sheet_is_deleted(wang, actor, app):
    clinic_settings.update_default_campaign(GIFT_PACK, Actor())
    batch = cards.create_batch(2, "classic", False, actor)
    assert cards.run_batch(batch.id)
    given = db.session.scalars(select(Card).where(Card.batch_id == batch.id)).first()
    cards.activate_card(given.serial, wang.id, actor)
    personal = cards.print_personal_card(wang.id, "classic", actor)
    sheet = cards.batch_pdf_path(personal)
    assert sheet is not None and sheet.is_file()

    report = erase(wang.id)

    assert report.cards_voided == 2
    assert {card.status for card in db.session.scalars(select(Card).where(Card.patient_id == wang.id))} == {"void"}
    assert not sheet.exists() and db.session.get(CardBatch, personal.id).pdf_filename is None
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(given.code, friend("Someone New", "13955556666"), actor)
    assert refused.value.reason == "card_void"


def test_erasing_the_friend_keeps_the_referrers_page_and_frees_their_phone(wang, actor):
    referral = db.session.scalar(select(Referral).where(Referral.referrer_id == wang.id))
    key = db.session.get(FormSubmission, "erasure-test-form-key-0001")
    assert key.result_id == referral.id

    erase(referral.friend_id)

    assert FRIEND_NAME not in everything_stored() and FRIEND_PHONE not in everything_stored()
    assert db.session.get(FormSubmission, "erasure-test-form-key-0001").fingerprint == erasure.ERASED_FINGERPRINT
    # The same form sent again is refused as a reused key, not registered a second time.
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(wang.personal_code, friend(FRIEND_NAME, FRIEND_PHONE), actor,
                               idempotency_key="erasure-test-form-key-0001")
    assert refused.value.reason == "key_reused"
    # The person may come back: their phone is free, and they are a new patient.
    again, _token = patients.enrol_patient(patients.PatientDetails(full_name=FRIEND_NAME, phone=FRIEND_PHONE), actor)
    assert again.id != referral.friend_id


def test_the_referrers_progress_page_calls_an_erased_friend_a_friend(wang, app, actor):
    _referrer, token = patients.enrol_patient(patients.PatientDetails(full_name="Li Na", phone="13977778888"), actor)
    referrer = db.session.scalar(select(Patient).where(Patient.full_name == "Li Na"))
    result = redemption.redeem_code(referrer.personal_code, friend("Zhou Min", "13966667777"), actor)
    erase(result.friend.id)
    client = app.test_client()
    page = client.get(f"/p/{token}").get_data(as_text=True)
    assert "A friend" in page and "Zhou" not in page
    assert progress.progress_page(token) is not None


def test_rewards_still_due_are_cancelled_and_waiting_reviews_rejected(hooks, make_patient, actor):
    set_campaign(referrer_reward_stage="visit", cap_referrals_per_year=1)
    patient, _token = make_patient(full_name=NAME, phone=PHONE)
    first = redemption.redeem_code(patient.personal_code, friend("Friend One", "13900000001"), actor)
    second = redemption.redeem_code(patient.personal_code, friend("Friend Two", "13900000002"), actor)
    milestones.record_visit(first.friend.id, actor)
    milestones.record_visit(second.friend.id, actor)  # over the yearly cap: held for a manager
    third = redemption.redeem_code(patient.personal_code, friend("Friend Three", "13900000003"), actor)
    statuses = dict(db.session.execute(select(Reward.referral_id, Reward.status).where(
        Reward.patient_id == patient.id)).all())
    assert sorted(statuses.values()) == ["issued", "pending", "review"]
    assert db.session.scalar(select(ReviewRequest.status)) == "pending"

    report = erase(patient.id)

    assert (report.rewards_cancelled, report.reviews_rejected) == (2, 1)
    statuses = dict(db.session.execute(select(Reward.referral_id, Reward.status).where(
        Reward.patient_id == patient.id)).all())
    assert statuses == {first.referral.id: "issued", second.referral.id: "cancelled",
                        third.referral.id: "cancelled"}
    assert db.session.scalar(select(ReviewRequest.status)) == "rejected"
    # The friend's first visit still counts for the friend; nothing is paid to the erased referrer.
    milestones.record_visit(third.friend.id, actor)
    assert db.session.get(Reward, db.session.scalar(select(Reward.id).where(
        Reward.referral_id == third.referral.id, Reward.beneficiary == "referrer"))).status == "cancelled"


@pytest.mark.parametrize("change", ["rotate_link", "poster_consent", "notifications", "leaderboard", "card"])
def test_nothing_can_be_changed_on_an_erased_patient(wang, actor, change):
    erase(wang.id)
    before = counts()
    with pytest.raises(Refused) as refused:
        if change == "rotate_link":
            patients.rotate_progress_link(wang.id, actor)
        elif change == "poster_consent":
            patients.set_poster_consent(wang.id, True, actor)
        elif change == "notifications":
            notifications.set_preferences(wang.id, "sms", "en", True, actor)
        elif change == "leaderboard":
            from clinic.services import tiers
            tiers.set_leaderboard_consent(wang.id, True, actor)
        else:
            cards.print_personal_card(wang.id, "classic", actor)
    assert (refused.value.reason, refused.value.status) == ("patient_erased", 409)
    assert counts() == before


def test_erasing_twice_an_unknown_patient_or_without_a_reason_is_refused(wang):
    before = counts()
    for patient_id, reason, expected in ((wang.id, "", "validation_error"), (wang.id, "because", "validation_error"),
                                         (999999, "duplicate", "not_found")):
        with pytest.raises(Refused) as refused:
            erase(patient_id, reason)
        assert refused.value.reason == expected
    assert counts() == before and db.session.get(Patient, wang.id).full_name == NAME
    erase(wang.id, "duplicate")
    with pytest.raises(Refused) as refused:
        erase(wang.id)
    assert (refused.value.reason, refused.value.status) == ("already_erased", 409)
    assert len(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.erased")).all()) == 1


def test_a_manager_erases_from_the_patient_page_after_reading_what_it_changes(wang, manager, desk):
    assert desk.get(f"/patients/{wang.id}/erase").status_code == 403
    assert desk.post(f"/patients/{wang.id}/erase", {"reason": "duplicate", "confirm": "y"}).status_code == 403
    assert "Erase their personal data" not in desk.get(f"/patients/{wang.id}").get_data(as_text=True)
    assert f"/patients/{wang.id}/erase" in manager.get(f"/patients/{wang.id}").get_data(as_text=True)

    page = manager.get(f"/patients/{wang.id}/erase")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Their vouchers stay valid" in text
    voucher = db.session.scalar(select(Voucher).where(Voucher.patient_id == wang.id))
    assert voucher.code[:4] in text  # the codes to hand over before erasing

    before = counts()
    for data, message in (({"reason": "duplicate"}, "Tick the box to confirm"),
                          ({"confirm": "y"}, "Choose why the data is erased"),
                          ({"reason": "<script>", "confirm": "y"}, "Not a valid choice")):
        refused = manager.post(f"/patients/{wang.id}/erase", data)
        assert refused.status_code == 422 and message in refused.get_data(as_text=True), data
        # Each choice of a refused radio group is marked invalid: the keyboard is taken there (static/js/app.js).
        reasons = re.findall(r'<input[^>]*name="reason"[^>]*>', refused.get_data(as_text=True))
        assert reasons and all(('aria-invalid="true"' in choice) == ("reason" not in data or data["reason"] == "<script>")
                               for choice in reasons), reasons
    assert counts() == before

    done = manager.post(f"/patients/{wang.id}/erase", {"reason": "patient_request", "confirm": "y"})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/patients/{wang.id}")
    shown = manager.get(f"/patients/{wang.id}").get_data(as_text=True)
    assert "Personal data erased" in shown and NAME not in shown and "/erase" not in shown
    again = manager.post(f"/patients/{wang.id}/erase", {"reason": "patient_request", "confirm": "y"})
    assert again.status_code == 409 and "already erased" in again.get_data(as_text=True)
    assert manager.get(f"/patients/{wang.id}/welcome").status_code == 410
    assert manager.get(f"/patients/{wang.id}/poster.pdf").status_code == 410
    assert manager.get(f"/r/{wang.personal_code}").status_code == 404
    assert manager.get("/patients/999999/erase").status_code == 404
    assert manager.post("/patients/999999/erase", {"reason": "duplicate", "confirm": "y"}).status_code == 404


def test_the_cli_erases_and_prints_what_it_did(wang, app):
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["erase-patient", str(wang.id), "--reason", "because", "--yes"])
    assert refused.exit_code != 0 and db.session.get(Patient, wang.id).full_name == NAME
    declined = runner.invoke(args=["erase-patient", str(wang.id), "--reason", "duplicate"], input="n\n")
    assert declined.exit_code != 0 and "Nothing was erased" in declined.output
    result = runner.invoke(args=["erase-patient", str(wang.id), "--reason", "patient_request", "--yes"])
    assert result.exit_code == 0, result.output
    assert f"Erased the personal data of patient {wang.id}" in result.output
    db.session.expire_all()
    assert db.session.get(Patient, wang.id).erased_at is not None
    unknown = runner.invoke(args=["erase-patient", "999999", "--reason", "duplicate", "--yes"])
    assert unknown.exit_code != 0 and "No patient has the id 999999" in unknown.output


def test_the_sqlite_file_keeps_no_copy_of_the_erased_name(wang, backend, app):
    """An UPDATE leaves the old bytes in the page's free space unless SQLite overwrites them (secure_delete)."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL keeps old row versions until VACUUM: see README, Erasing a patient's data")
    path = Path(db.engine.url.database)

    def file_bytes() -> bytes:
        db.session.remove()
        db.engine.dispose()
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    assert all(value.encode() in file_bytes() for value in (NAME, DISPLAY_NAME, PHONE, RECORD))
    erase(wang.id)
    raw = file_bytes()
    for value in (NAME, DISPLAY_NAME, PHONE, RECORD):
        assert value.encode() not in raw, value


def test_a_manager_downloads_everything_held_about_a_patient_and_the_download_is_audited(wang, manager, desk):
    assert desk.get(f"/patients/{wang.id}/data.json").status_code == 403
    response = manager.get(f"/patients/{wang.id}/data.json")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"] == f'attachment; filename="patient-{wang.id}-data.json"'
    data = response.get_json()
    assert (data["patient"]["full_name"], data["patient"]["display_name"], data["patient"]["phone"],
            data["patient"]["record_number"]) == (NAME, DISPLAY_NAME, PHONE, RECORD)
    assert data["patient"]["consents"]["messages"] is True and data["patient"]["consents"]["message_channel"] == "sms"
    [referred] = data["friends_referred"]
    assert referred["friend"] == "Chen J." and FRIEND_PHONE not in response.get_data(as_text=True)  # masked
    voucher = db.session.scalar(select(Voucher).where(Voucher.patient_id == wang.id))
    assert [v["amount"] for v in data["vouchers"]] == [voucher.amount] and data["vouchers"][0]["status"] == "active"
    [message] = data["messages"]
    assert message["to"] == PHONE and message["channel"] == "sms" and message["status"] == ["pending"]
    assert {"at", "action", "outcome"} == set(data["history"][0]) and data["referred_by"] is None
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "export.patient_data"))
    assert event.patient_id == wang.id and set(event.details) == {"bytes"}
    assert manager.get("/patients/999999/data.json").status_code == 404

    erase(wang.id)
    after = manager.get(f"/patients/{wang.id}/data.json").get_json()
    assert after["patient"]["full_name"] == "" and after["patient"]["erased_at"].endswith("Z")
    assert after["messages"][0]["to"] is None and NAME not in json.dumps(after, ensure_ascii=False)


def test_an_erased_patients_details_cannot_be_corrected(wang, manager, actor):
    erase(wang.id)
    before = counts()
    with pytest.raises(Refused) as refused:
        patients.correct_details(wang.id, patients.PatientDetails(full_name=NAME, phone=PHONE), actor,
                                 seen=patients.details_fingerprint(db.session.get(Patient, wang.id)))
    assert (refused.value.reason, refused.value.status) == ("patient_erased", 409)
    assert manager.get(f"/patients/{wang.id}/details").status_code == 410
    assert manager.post(f"/patients/{wang.id}/details", {"full_name": NAME, "phone": PHONE}).status_code == 410
    assert counts() == before and "Correct details" not in manager.get(f"/patients/{wang.id}").get_data(as_text=True)
