"""Black-box review of erasure: races and paths the first tests did not reach (one test per defect found)."""

from __future__ import annotations

import threading
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Card, CardBatch, OutboxEvent, Patient, Reward, WebhookDelivery
from clinic.services import cards, clinic_settings, erasure, importer, milestones, notifications, patients, redemption
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import friend
from tests.test_cards import GIFT_PACK
from tests.test_erasure import (DISPLAY_NAME, FRIEND_NAME, FRIEND_PHONE, NAME, PHONE, RECORD,  # noqa: F401 - fixture
                                everything_stored, hooks)
from tests.test_redemption import run_at_once
from tests.test_rules import set_campaign


def erased_before(step, app, patient_id: int, erasing: list[threading.Thread]):
    """``step`` that first erases the patient from another session (a thread, kept in ``erasing``) and waits up to
    3 s: long enough to finish, unless a lock the calling transaction holds makes the erasure wait for it."""
    def erase_in_another_session():
        with app.app_context():
            erasure.erase_patient(patient_id, "patient_request", Actor())
            db.session.remove()

    def erased_meanwhile(*args, **kwargs):
        thread = threading.Thread(target=erase_in_another_session)
        erasing.append(thread)
        thread.start()
        thread.join(timeout=3)
        return step(*args, **kwargs)

    return erased_meanwhile


def test_a_personal_card_printed_while_the_patient_is_erased_is_not_left_working(make_patient, actor, monkeypatch):
    """print_personal_card checks the patient before rendering and activates the card after: an erasure in between
    must not leave an activated card (a code that pays the erased patient) or its sheet on disk."""
    clinic_settings.update_default_campaign(GIFT_PACK, Actor())
    patient, _token = make_patient(full_name="Wang Lixue", phone="13811112222")
    patient_id = patient.id
    render = cards.write_card_sheets

    def erased_while_rendering(*args, **kwargs):
        erasure.erase_patient(patient_id, "patient_request", Actor())
        return render(*args, **kwargs)

    monkeypatch.setattr(cards, "write_card_sheets", erased_while_rendering)
    with pytest.raises(Refused) as refused:
        cards.print_personal_card(patient_id, "classic", actor)
    assert (refused.value.reason, refused.value.status) == ("patient_erased", 409)
    db.session.expire_all()
    assert db.session.get(Patient, patient_id).erased_at is not None
    working = db.session.scalars(select(Card).where(Card.patient_id == patient_id,
                                                    Card.status == "activated")).all()
    assert working == []
    assert db.session.scalars(select(CardBatch.pdf_filename).where(CardBatch.personal.is_(True),
                                                                   CardBatch.pdf_filename.is_not(None))).all() == []
    assert db.session.scalar(select(CardBatch.status).where(CardBatch.personal.is_(True))) == "failed"


def test_a_redemption_with_the_code_of_a_patient_erased_meanwhile_leaves_nothing_of_them(
        hooks, app, make_patient, actor, backend, monkeypatch):
    """The redemption reads the referrer inside its transaction; an erasure committed before the redemption does
    must either make it refuse the code or find (and clean) what it wrote: no reward left due to the erased patient,
    no record number or phone in the outbox, no message queued to them."""
    if backend == "sqlite":
        pytest.skip("SQLite's writer lock runs the two one after the other")
    set_campaign(referrer_reward_stage="visit")
    patient, _token = make_patient(full_name=NAME, phone=PHONE, external_id=RECORD, display_name=DISPLAY_NAME)
    notifications.set_preferences(patient.id, "sms", "en", True, actor)
    patient_id, code = patient.id, patient.personal_code
    erasing: list[threading.Thread] = []
    monkeypatch.setattr(redemption, "_redeem", erased_before(redemption._redeem, app, patient_id, erasing))
    try:
        redemption.redeem_code(code, friend(FRIEND_NAME, FRIEND_PHONE), actor)
    except Refused as refused:
        assert refused.reason == "code_withdrawn"
    erasing[0].join(timeout=30)
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(Patient, patient_id).erased_at is not None
    assert db.session.scalars(select(Reward.status).where(
        Reward.patient_id == patient_id, Reward.status.in_(("pending", "review")))).all() == []
    stored = everything_stored()
    for value in (NAME, DISPLAY_NAME, PHONE, RECORD):
        assert value not in stored, value
    assert db.session.scalars(select(WebhookDelivery.id).join(WebhookDelivery.event).where(
        WebhookDelivery.status == "pending", WebhookDelivery.event.has(event_type=notifications.EVENT))).all() == []


def test_an_imported_patient_erased_before_the_links_are_downloaded_leaves_no_name_on_disk(app, actor):
    """An import keeps each new patient's name and raw progress token for 15 minutes (links.json), and its result
    page prints posters for its patients: a record imported by mistake and erased at once must be in neither."""
    folder = app.config["IMPORT_FOLDER"]
    data = f"name,phone,external_id\r\n{NAME},{PHONE},{RECORD}\r\nLi Na,13977778888,\r\n".encode()
    token = importer.store_upload(folder, data)
    result = importer.import_upload(folder, token, actor, expected=None)
    mistaken = next(patient for patient in result.patients if patient.full_name == NAME)

    erasure.erase_patient(mistaken.id, "entered_by_mistake", Actor())

    for path in Path(folder).iterdir():
        assert NAME.encode() not in path.read_bytes(), path.name
    links = importer.take_progress_links_csv(folder, token, actor)
    assert NAME not in links and "Li Na" in links
    posters = importer.batch_posters_pdf(folder, token, 1)
    assert len(pdfium.PdfDocument(posters)) == 1  # Li Na's poster only: the erased code invites nobody


def test_approving_an_existing_patients_review_while_the_referrer_is_erased_leaves_nothing_of_them(
        hooks, app, make_patient, actor, backend, monkeypatch):
    """A manager approves "the friend was already a patient" as another erases the referrer (PostgreSQL): whichever
    comes first, no reward stays due to the erased referrer and no record number, phone or message of theirs stays
    in the outbox."""
    if backend == "sqlite":
        pytest.skip("SQLite's writer lock runs the two one after the other")
    set_campaign(referrer_reward_stage="visit")
    patient, _token = make_patient(full_name=NAME, phone=PHONE, external_id=RECORD, display_name=DISPLAY_NAME)
    notifications.set_preferences(patient.id, "sms", "en", True, actor)
    existing, _token = make_patient(full_name=FRIEND_NAME, phone=FRIEND_PHONE)
    review = milestones.send_existing_patient_for_review(patient.personal_code, existing.id, actor)
    patient_id, review_id = patient.id, review.id
    erasing: list[threading.Thread] = []
    monkeypatch.setattr(milestones, "_link_existing_patient",
                        erased_before(milestones._link_existing_patient, app, patient_id, erasing))
    try:
        milestones.decide_review(review_id, True, "Checked their file", actor)
    except Refused as refused:
        assert refused.reason in ("code_withdrawn", "already_decided")
    erasing[0].join(timeout=30)
    assert not erasing[0].is_alive()
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(Patient, patient_id).erased_at is not None
    assert db.session.scalars(select(Reward.status).where(
        Reward.patient_id == patient_id, Reward.status.in_(("pending", "review")))).all() == []
    stored = everything_stored()
    for value in (NAME, DISPLAY_NAME, PHONE, RECORD):
        assert value not in stored, value
    assert db.session.scalars(select(WebhookDelivery.id).join(WebhookDelivery.event).where(
        WebhookDelivery.status == "pending", WebhookDelivery.event.has(event_type=notifications.EVENT),
        WebhookDelivery.event.has(OutboxEvent.payload[("to", "patient_id")].as_integer() == patient_id))).all() == []


def test_erasing_twice_at_once_and_redeeming_the_code_at_the_same_time_erase_once_and_never_crash(
        hooks, app, make_patient, actor):
    """Two managers erase, two desks redeem the code and one corrects the details, all at the same moment (both
    backends): one erasure, no crash, and nothing left due to or naming the erased patient."""
    set_campaign(referrer_reward_stage="visit")
    patient, _token = make_patient(full_name=NAME, phone=PHONE, external_id=RECORD, display_name=DISPLAY_NAME)
    notifications.set_preferences(patient.id, "sms", "en", True, actor)
    patient_id, code = patient.id, patient.personal_code
    seen = patients.details_fingerprint(db.session.get(Patient, patient_id))

    def work(index):
        if index < 2:
            return erasure.erase_patient(patient_id, "patient_request", Actor()).patient.id
        if index < 4:
            return redemption.redeem_code(code, friend(f"Friend {index}", f"1390000000{index}"), actor).referral.id
        return patients.correct_details(patient_id, patients.PatientDetails(full_name=NAME + " Jr", phone=PHONE),
                                        actor, seen=seen)

    outcomes = run_at_once(app, 5, work)
    assert [outcome for outcome, _ in outcomes[:2]].count("ok") == 1, outcomes
    assert all(outcome in ("ok", "refused") for outcome, _ in outcomes), outcomes
    assert {reason for outcome, reason in outcomes if outcome == "refused"} <= {
        "already_erased", "code_withdrawn", "patient_erased"}, outcomes
    db.session.expire_all()
    assert db.session.scalars(select(Reward.status).where(
        Reward.patient_id == patient_id, Reward.status.in_(("pending", "review")))).all() == []
    stored = everything_stored()
    for value in (NAME, DISPLAY_NAME, PHONE, RECORD):
        assert value not in stored, value
