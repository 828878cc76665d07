"""Correcting a patient's name, display name, phone and record number: the service, then the page."""

from __future__ import annotations

import json
import re
import threading

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Patient
from clinic.services import notifications, patients, redemption, text
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors, PatientDetails, correct_details, details_fingerprint
from tests.conftest import counts, friend
from tests.test_web_patients import BAD_PATIENT_DETAILS


def details_of(patient_id: int, **changes) -> PatientDetails:
    """The patient's details as they are, with ``changes``: what a correction form would send."""
    patient = db.session.get(Patient, patient_id)
    values = {name: getattr(patient, name) for name in patients.CORRECTABLE_DETAILS}
    db.session.rollback()
    return PatientDetails(**{**values, **changes})


def seen(patient_id: int) -> str:
    fingerprint = details_fingerprint(db.session.get(Patient, patient_id))
    db.session.rollback()
    return fingerprint


def stored(patient_id: int) -> dict:
    db.session.rollback()
    patient = db.session.get(Patient, patient_id)
    values = {name: getattr(patient, name) for name in (*patients.CORRECTABLE_DETAILS, "name_on_posters",
                                                          "personal_code", "progress_token_hash",
                                                          "notification_consent")}
    db.session.rollback()
    return values


def corrections() -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.details_corrected")))


def test_a_correction_changes_the_details_and_audits_which_fields_never_their_values(referrer, actor):
    before = stored(referrer.id)
    changed = correct_details(referrer.id, details_of(referrer.id, full_name="Wang Lei", phone="13811113333"), actor,
                              seen=seen(referrer.id))
    assert changed == ["full_name", "phone"]
    after = stored(referrer.id)
    assert (after["full_name"], after["phone"]) == ("Wang Lei", "13811113333")
    for unchanged in ("display_name", "external_id", "personal_code", "progress_token_hash"):
        assert after[unchanged] == before[unchanged]
    [event] = corrections()
    assert (event.patient_id, event.staff_id, event.details["fields"]) == (referrer.id, actor.staff_id,
                                                                           ["full_name", "phone"])
    written = json.dumps(event.details, ensure_ascii=False) + (event.reason or "")
    for value in ("Wang Li", "Wang Lei", "13811112222", "13811113333", "1111", "3333"):
        assert value not in written


def test_the_phone_is_checked_and_written_as_at_enrolment(referrer, actor):
    with pytest.raises(FieldErrors):
        PatientDetails.from_form(full_name="Wang Li", phone="139-abc")
    details = PatientDetails.from_form(full_name="Wang Li", phone="+86 138 1111 4444", external_id="MRN-1")
    assert correct_details(referrer.id, details, actor, seen=seen(referrer.id)) == ["phone"]
    assert stored(referrer.id)["phone"] == "13811114444"


def test_the_same_details_again_change_nothing_and_write_no_event(referrer, actor):
    before = counts()
    assert correct_details(referrer.id, details_of(referrer.id), actor, seen=seen(referrer.id)) == []
    # Also with a form loaded before someone else made exactly this correction: there is nothing to refuse.
    assert correct_details(referrer.id, details_of(referrer.id), actor, seen="an older fingerprint") == []
    assert counts() == before and corrections() == []


@pytest.mark.parametrize("field, value, message", [
    ("phone", "13800001111", "A patient with this phone number is already registered."),
    ("phone", "+86 138-0000-1111", "A patient with this phone number is already registered."),
    ("external_id", "MRN-2", "A patient with this record number is already registered."),
])
def test_a_phone_or_record_number_another_patient_holds_is_refused_naming_the_field(referrer, make_patient, actor,
                                                                                    field, value, message):
    make_patient(full_name="Zhao Min", phone="13800001111", external_id="MRN-2")
    before, values = counts(), stored(referrer.id)
    with pytest.raises(Refused) as refused:
        correct_details(referrer.id, PatientDetails.from_form(**{**details_of(referrer.id).__dict__, field: value}),
                        actor, seen=seen(referrer.id))
    assert (refused.value.reason, refused.value.field, refused.value.status) == ("existing_patient", field, 409)
    assert refused.value.message == message
    assert counts() == before and stored(referrer.id) == values


def test_a_number_taken_between_the_check_and_the_write_is_refused_by_the_unique_constraint(referrer, make_patient,
                                                                                            actor, monkeypatch):
    """The check before the write can miss a patient another desk registers at that moment: the database decides."""
    make_patient(full_name="Zhao Min", phone="13800001111")
    real = patients._refuse_contact_held_by_another
    calls = []

    def misses_the_first_time(*args):
        calls.append(args)
        if len(calls) > 1:
            real(*args)

    monkeypatch.setattr(patients, "_refuse_contact_held_by_another", misses_the_first_time)
    before, values = counts(), stored(referrer.id)
    with pytest.raises(Refused) as refused:
        correct_details(referrer.id, details_of(referrer.id, full_name="Wang Lei", phone="13800001111"), actor,
                        seen=seen(referrer.id))
    assert (refused.value.reason, refused.value.field, refused.value.status) == ("existing_patient", "phone", 409)
    assert len(calls) == 2 and counts() == before and stored(referrer.id) == values


def test_details_changed_since_the_form_was_opened_are_not_overwritten(referrer, actor):
    opened = seen(referrer.id)
    correct_details(referrer.id, details_of(referrer.id, full_name="Wang Lei"), actor, seen=opened)
    before, values = counts(), stored(referrer.id)
    with pytest.raises(Refused) as refused:
        correct_details(referrer.id, details_of(referrer.id, full_name="Wang Li", phone="13811113333"), actor,
                        seen=opened)
    assert (refused.value.reason, refused.value.status) == ("changed_meanwhile", 409)
    assert "changed by someone else" in refused.value.message
    assert counts() == before and stored(referrer.id) == values
    for missing in (None, "", "x" * 10_000):
        with pytest.raises(Refused):
            correct_details(referrer.id, details_of(referrer.id, phone="13811113333"), actor, seen=missing)


def test_two_corrections_at_the_same_moment_one_wins_the_other_is_told(app, referrer, actor):
    """Both forms were opened on the same details: the second to reach the patient's row finds them changed."""
    patient_id = referrer.id  # read here: the threads must not load the test session's objects
    opened = seen(patient_id)
    wanted = [details_of(patient_id, full_name="Wang Lei"), details_of(patient_id, phone="13811113333")]
    start, outcomes = threading.Barrier(2), []

    def correct(details):
        with app.app_context():
            try:
                start.wait(10)
                outcomes.append(correct_details(patient_id, details, actor, seen=opened))
            except Refused as refusal:
                outcomes.append(refusal.reason)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=correct, args=(details,)) for details in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    [won] = [outcome for outcome in outcomes if isinstance(outcome, list)]
    assert [outcome for outcome in outcomes if outcome is not won] == ["changed_meanwhile"]
    after = stored(referrer.id)
    assert (after["full_name"], after["phone"]) == (("Wang Lei", "13811112222") if won == ["full_name"]
                                                    else ("Wang Li", "13811113333"))
    assert len(corrections()) == 1


def test_the_phone_cannot_be_removed_while_the_patient_agrees_to_messages(referrer, actor):
    notifications.set_preferences(referrer.id, "sms", "zh_CN", True, actor)
    before, values = counts(), stored(referrer.id)
    with pytest.raises(FieldErrors) as refused:
        correct_details(referrer.id, details_of(referrer.id, phone=None), actor, seen=seen(referrer.id))
    assert refused.value.status == 422 and "agreed to messages on this phone" in refused.value.errors["phone"]
    assert counts() == before and stored(referrer.id) == values
    # Once the withdrawal is recorded (the patient's own decision, audited as such), the phone may go.
    notifications.set_preferences(referrer.id, "none", "zh_CN", False, actor)
    assert correct_details(referrer.id, details_of(referrer.id, phone=None), actor, seen=seen(referrer.id)) == [
        "phone"]
    assert stored(referrer.id)["phone"] is None


def test_a_new_display_name_is_printed_only_once_the_patient_agrees_to_it(make_patient, actor):
    patient, _token = make_patient(full_name="Wang Lei", display_name="Wang Lie", name_on_posters=True)
    assert correct_details(patient.id, details_of(patient.id, display_name="Wang L."), actor,
                           seen=seen(patient.id)) == ["display_name", "name_on_posters"]
    after = stored(patient.id)
    assert (after["display_name"], after["name_on_posters"]) == ("Wang L.", False)
    assert corrections()[0].details["fields"] == ["display_name", "name_on_posters"]


def test_referrals_and_codes_stay_with_the_corrected_patient(referrer, actor):
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    correct_details(referrer.id, details_of(referrer.id, full_name="Wang Lei", external_id="MRN-9"), actor,
                    seen=seen(referrer.id))
    db.session.rollback()
    patient = db.session.get(Patient, referrer.id)
    assert patient.personal_code == referrer.personal_code
    assert db.session.get(Patient, result.friend.id).referred_by_id == referrer.id
    # The freed record number is free for someone else.
    freed = PatientDetails(full_name="Someone", external_id="MRN-1")
    assert patients.enrol_patient(freed, actor)[0].external_id == "MRN-1"


def test_an_unknown_patient_is_not_found(app, actor):
    with pytest.raises(Refused) as refused:
        correct_details(999_999, PatientDetails(full_name="Nobody"), actor, seen="")
    assert refused.value.status == 404


# The page.

def form_of(page: str) -> dict:
    """The correction form's fields as the browser would send them."""
    return {name: re.search(rf'name="{name}"[^>]*?value="([^"]*)"', page).group(1)
            if re.search(rf'name="{name}"[^>]*?value="([^"]*)"', page) else ""
            for name in ("full_name", "display_name", "phone", "external_id", "seen")}


def open_form(browser, patient_id: int) -> dict:
    response = browser.get(f"/patients/{patient_id}/details")
    assert response.status_code == 200
    return form_of(response.get_data(as_text=True))


def test_the_patient_page_links_to_a_form_filled_with_the_current_details_the_phone_masked_to_the_desk(desk, manager,
                                                                                                        referrer):
    """Front-desk staff see phones masked everywhere (DESIGN.md): walking ids on this page must not collect them."""
    page = desk.get(f"/patients/{referrer.id}").get_data(as_text=True)
    assert f'href="/patients/{referrer.id}/details"' in page and "Correct details" in page
    page = desk.get(f"/patients/{referrer.id}/details").get_data(as_text=True)
    assert form_of(page) == {"full_name": "Wang Li", "display_name": "", "phone": "", "external_id": "MRN-1",
                             "seen": seen(referrer.id)}
    assert "13811112222" not in page and "Now 138****2222 — type the whole new number" in page
    assert open_form(manager, referrer.id) == {"full_name": "Wang Li", "display_name": "", "phone": "13811112222",
                                               "external_id": "MRN-1", "seen": seen(referrer.id)}


def test_the_desk_leaving_the_phone_empty_keeps_it(desk, referrer):
    form = open_form(desk, referrer.id)
    response = desk.post(f"/patients/{referrer.id}/details", {**form, "full_name": "Wang Lei", "phone": " "})
    assert response.status_code == 303
    assert stored(referrer.id)["full_name"] == "Wang Lei" and stored(referrer.id)["phone"] == "13811112222"
    event = corrections()[-1]
    assert event.details["fields"] == ["full_name"]


def test_the_desk_form_re_rendered_with_an_error_shows_no_full_phone(desk, referrer):
    form = open_form(desk, referrer.id)
    response = desk.post(f"/patients/{referrer.id}/details", {**form, "full_name": ""})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "13811112222" not in page and form_of(page)["phone"] == "" and "Now 138****2222" in page
    assert stored(referrer.id)["phone"] == "13811112222"


def test_a_patient_without_a_phone_gets_one_from_the_desk(desk, make_patient):
    patient, _token = make_patient(full_name="Zhao Min", phone=None)
    page = desk.get(f"/patients/{patient.id}/details").get_data(as_text=True)
    assert "Now " not in page
    form = form_of(page)
    assert desk.post(f"/patients/{patient.id}/details", {**form, "phone": "13900001111"}).status_code == 303
    assert stored(patient.id)["phone"] == "13900001111"


def test_a_correction_from_the_form_goes_back_to_the_patient_page_with_the_fields_on_the_timeline(desk, manager,
                                                                                                   referrer):
    form = open_form(desk, referrer.id)
    response = desk.post(f"/patients/{referrer.id}/details", {**form, "full_name": "Wang Lei",
                                                              "phone": "138 1111 3333"})
    assert response.status_code == 303 and response.location.endswith(f"/patients/{referrer.id}")
    page = desk.get(response.location).get_data(as_text=True)
    assert "The details are corrected." in page
    assert "<h1>Wang Lei" in page and "138****3333" in page
    assert "Patient details corrected" in page and "fields: full name, phone" in page
    audit = manager.get("/admin/audit", query_string={"action": "patient.details_corrected"}).get_data(as_text=True)
    assert "Patient details corrected" in audit and "fields: full name, phone" in audit
    assert "13811112222" not in audit and "13811113333" not in audit


def test_sending_the_form_unchanged_says_nothing_changed(desk, referrer):
    before = counts()
    response = desk.post(f"/patients/{referrer.id}/details", open_form(desk, referrer.id))
    assert response.status_code == 303
    assert "Nothing changed." in desk.get(response.location).get_data(as_text=True)
    assert counts() == before


@pytest.mark.parametrize("changes, message", BAD_PATIENT_DETAILS)
def test_bad_input_re_renders_the_form_with_the_error_and_the_values(desk, referrer, changes, message):
    form = open_form(desk, referrer.id)
    before, values = counts(), stored(referrer.id)
    response = desk.post(f"/patients/{referrer.id}/details", {**form, "display_name": "Li", **changes})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page and 'role="alert"' in page
    assert 'value="MRN-1"' in page or "external_id" in changes
    assert 'value="Li"' in page or "display_name" in changes
    assert counts() == before and stored(referrer.id) == values


def test_a_number_another_patient_holds_is_said_at_the_field_with_409(desk, referrer, make_patient):
    make_patient(full_name="Zhao Min", phone="13800001111")
    form = open_form(desk, referrer.id)
    before = counts()
    response = desk.post(f"/patients/{referrer.id}/details", {**form, "full_name": "Wang Lei",
                                                              "phone": "13800001111"})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert re.search(r'id="phone-error" role="alert">A patient with this phone number is already registered', page)
    assert 'value="Wang Lei"' in page
    assert counts() == before


def test_removing_the_phone_of_a_patient_who_agreed_to_messages_is_refused_at_the_field(manager, referrer, actor):
    notifications.set_preferences(referrer.id, "wechat", "zh_CN", True, actor)
    form = open_form(manager, referrer.id)
    response = manager.post(f"/patients/{referrer.id}/details", {**form, "phone": ""})
    assert response.status_code == 422
    assert re.search(r'id="phone-error" role="alert">The patient agreed to messages on this phone',
                     response.get_data(as_text=True))
    assert stored(referrer.id)["phone"] == "13811112222"


def test_a_form_opened_before_someone_else_s_correction_shows_the_details_as_they_are_now(app, desk, manager,
                                                                                           referrer):
    mine = open_form(desk, referrer.id)
    theirs = open_form(manager, referrer.id)
    assert manager.post(f"/patients/{referrer.id}/details", {**theirs, "phone": "13811113333"}).status_code == 303
    before = counts()
    response = desk.post(f"/patients/{referrer.id}/details", {**mine, "full_name": "Wang Lei"})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "changed by someone else since you opened the form" in page
    now = form_of(page)
    assert (now["full_name"], now["phone"], now["seen"]) == ("Wang Li", "", seen(referrer.id))
    assert "You entered: Wang Lei" in page and "Now 138****3333" in page
    # The desk left the phone empty: the number it kept is not "entered", and neither number is shown whole.
    assert "13811112222" not in page and "13811113333" not in page
    assert counts() == before and stored(referrer.id)["full_name"] == "Wang Li"
    # Sent again from the page as it now is, the correction goes through.
    assert desk.post(f"/patients/{referrer.id}/details", {**now, "full_name": "Wang Lei"}).status_code == 303
    assert stored(referrer.id)["full_name"] == "Wang Lei" and stored(referrer.id)["phone"] == "13811113333"


def test_a_manager_s_form_opened_before_someone_else_s_correction_says_the_phone_they_typed(manager, desk, referrer):
    mine = open_form(manager, referrer.id)
    theirs = open_form(desk, referrer.id)
    assert desk.post(f"/patients/{referrer.id}/details", {**theirs, "phone": "13811113333"}).status_code == 303
    response = manager.post(f"/patients/{referrer.id}/details", {**mine, "full_name": "Wang Lei"})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert form_of(page)["phone"] == "13811113333" and "You entered: 13811112222" in page


def test_an_unknown_patient_s_form_is_404(desk):
    assert desk.get("/patients/999999/details").status_code == 404
    assert desk.post("/patients/999999/details", {"full_name": "Nobody", "seen": ""}).status_code == 404


# Names that need a zero-width joiner or non-joiner to be spelled right, and ones where it only hides.
SPELLED_WITH_JOINERS = {"Persian (ZWNJ)": "محمد\u200cرضا", "Sinhala 'Sri' (ZWJ after a virama)": "ශ්\u200dරී ලංකා",
                        "Malayalam chillu (ZWJ)": "അവന\u0d4d\u200d", "Bengali ra-phala (ZWJ)": "র\u200d্যাব",
                        "Hindi (ZWNJ)": "क्\u200cष"}
HIDING_JOINERS = {"between Latin letters": "Wang\u200dLi", "between Chinese": "王\u200c丽", "at the end": "محمد\u200c",
                  "doubled": "ශ්\u200d\u200dරී", "at the start": "\u200dශ්රී"}


@pytest.mark.parametrize("name", SPELLED_WITH_JOINERS.values(), ids=SPELLED_WITH_JOINERS)
def test_a_name_spelled_with_a_joiner_is_kept_as_typed(desk, name):
    """They were refused as 'characters that cannot be printed': a Sri Lankan or Iranian patient could not be enrolled."""
    assert text.clean_text(name, max_length=200, label="Name", required=True) == name
    response = desk.post("/patients/new", {"full_name": name, "display_name": name, "phone": "", "external_id": "R-1"})
    assert response.status_code == 303, response.get_data(as_text=True)
    enrolled = db.session.scalar(select(Patient).where(Patient.external_id == "R-1"))
    assert (enrolled.full_name, enrolled.display_name) == (name, name)
    assert [p.id for p in patients.search_patients(name)] == [enrolled.id]  # found as typed


@pytest.mark.parametrize("name", HIDING_JOINERS.values(), ids=HIDING_JOINERS)
def test_a_joiner_that_only_hides_is_refused(app, name):
    with pytest.raises(ValueError, match="cannot be printed"):
        text.clean_text(name, max_length=200, label="Name", required=True)
