"""A patient's own privacy choices on their private link (/p/<token>/choices): messages, posters, leaderboard."""

from __future__ import annotations

import re
from itertools import count

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Patient
from clinic.services import consents, tiers
from clinic.services.audit import BY, PATIENT_LINK
from clinic.services.erasure import erase_patient
from clinic.services.patients import PatientDetails, enrol_patient, rotate_progress_link
from clinic.services.transaction import Actor
from tests.conftest import Browser

PHONES = count(1)
EVERYTHING_NO = {"messages": "no", "name_on_posters": "no", "leaderboard": "no"}
AUDITED = {"messages": "patient.notification_consent", "name_on_posters": "patient.poster_consent",
           "leaderboard": "patient.leaderboard_consent"}
COLUMNS = {"messages": "notification_consent", "name_on_posters": "name_on_posters",
           "leaderboard": "leaderboard_opt_in"}


@pytest.fixture
def enrol(app):
    """``enrol(**details)`` -> (patient id, progress token): by default a patient the clinic can message by SMS,
    with a display name, who has agreed to nothing yet."""
    def make(**details) -> tuple[int, str]:
        values = {"full_name": "Wang Xiaoming", "display_name": "Xiaoming", "phone": f"1386666{next(PHONES):04d}",
                  "preferred_channel": "sms", "preferred_language": "en", **details}
        patient, token = enrol_patient(PatientDetails(**values), Actor())
        return patient.id, token

    return make


def patient_state(patient_id: int) -> dict:
    patient = db.session.get(Patient, patient_id, populate_existing=True)
    state = {column: getattr(patient, column) for column in (*COLUMNS.values(), "notification_consent_at",
                                                             "preferred_channel", "preferred_language")}
    db.session.rollback()
    return state


def events(patient_id: int) -> list[AuditEvent]:
    found = list(db.session.scalars(select(AuditEvent).where(AuditEvent.patient_id == patient_id,
                                                             AuditEvent.action.in_(AUDITED.values()))
                                     .order_by(AuditEvent.id)))
    db.session.rollback()
    return found


def save(browser: Browser, token: str, form: dict, **kwargs):
    """Posted as the patient's phone does: no session, no CSRF token."""
    return browser.post(f"/p/{token}/choices", form, csrf=False, **kwargs)


def test_the_page_shows_each_choice_as_it_stands_in_plain_words_and_is_private(browser, enrol):
    patient_id, token = enrol()
    tiers.set_leaderboard_consent(patient_id, True, Actor())
    response = browser.get(f"/p/{token}/choices")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer" and response.headers["X-Robots-Tag"] == "noindex"
    page = response.get_data(as_text=True)
    assert "<h1>Your choices</h1>" in page and "Hello Xiaoming" in page
    assert "by SMS at 138****" in page and re.search(r"1386666\d{4}", page) is None  # the phone only masked
    assert "Posters already printed or given out cannot be called back." in page
    assert "“X.”" in page and "Wang Xiaoming" not in page  # the leaderboard's masked name, never the full one
    for name, agreed in (("messages", False), ("name_on_posters", False), ("leaderboard", True)):
        checked = "yes" if agreed else "no"
        assert re.search(rf'<input type="radio" name="{name}" value="{checked}" checked>', page), name
    assert page.count("Now: no") == 2 and page.count("Now: yes") == 1
    assert 'action="/p/' + token + '/choices"' in page and "csrf" not in page
    assert "<script" not in page and " style=" not in page and "hx-" not in page


def test_the_progress_page_links_to_the_choices(browser, enrol):
    _patient_id, token = enrol()
    page = browser.get(f"/p/{token}").get_data(as_text=True)
    assert f'href="/p/{token}/choices"' in page
    # The benchmarked page stays a page to read: its one form is the "How was your visit?" card (tests/
    # test_visit_feedback.py), which the patient may answer once in 90 days.
    assert re.findall(r'<form[^>]*action="([^"]+)"', page) == [f"/p/{token}/feedback"]


@pytest.mark.parametrize("choice", sorted(COLUMNS))
def test_each_choice_is_set_and_unset_by_the_patient_and_audited_as_theirs(browser, enrol, choice):
    patient_id, token = enrol()
    response = save(browser, token, {**EVERYTHING_NO, choice: "yes"})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/p/{token}/choices?saved=1"
    assert response.headers["Cache-Control"] == "no-store"
    assert patient_state(patient_id)[COLUMNS[choice]] is True
    assert {column: value for column, value in patient_state(patient_id).items()
            if column in COLUMNS.values() and column != COLUMNS[choice]} == dict.fromkeys(
        set(COLUMNS.values()) - {COLUMNS[choice]}, False), "the other choices stay as they were"
    landing = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert 'role="status">Saved.' in landing
    assert re.search(rf'name="{choice}" value="yes" checked', landing)

    assert save(browser, token, EVERYTHING_NO).status_code == 303
    assert patient_state(patient_id)[COLUMNS[choice]] is False
    audited = events(patient_id)
    assert [(event.action, event.details["consent"]) for event in audited] == [(AUDITED[choice], True),
                                                                               (AUDITED[choice], False)]
    for event in audited:
        assert event.staff_id is None and event.ip is None and event.details[BY] == PATIENT_LINK


def test_all_three_are_saved_at_once_and_only_changes_are_audited(browser, enrol):
    patient_id, token = enrol()
    everything_yes = dict.fromkeys(COLUMNS, "yes")
    assert save(browser, token, everything_yes).status_code == 303
    assert save(browser, token, everything_yes).status_code == 303  # the same again: nothing to record
    assert save(browser, token, {**everything_yes, "leaderboard": "no"}).status_code == 303
    assert [event.action for event in events(patient_id)] == [
        "patient.notification_consent", "patient.poster_consent", "patient.leaderboard_consent",
        "patient.leaderboard_consent"]


def test_messages_keep_the_channel_and_language_the_clinic_recorded(browser, enrol):
    patient_id, token = enrol(preferred_channel="wechat", preferred_language="zh_CN")
    assert "by WeChat at" in browser.get(f"/p/{token}/choices").get_data(as_text=True)
    save(browser, token, {**EVERYTHING_NO, "messages": "yes"})
    state = patient_state(patient_id)
    assert state["notification_consent"] is True and state["notification_consent_at"] is not None
    assert (state["preferred_channel"], state["preferred_language"]) == ("wechat", "zh_CN")
    save(browser, token, EVERYTHING_NO)
    state = patient_state(patient_id)
    assert state["notification_consent"] is False and state["notification_consent_at"] is None
    assert state["preferred_channel"] == "wechat"
    assert events(patient_id)[-1].details["channel"] == "wechat"


@pytest.mark.parametrize("details", [{"phone": None}, {"preferred_channel": "none"}])
def test_a_patient_the_clinic_cannot_message_is_told_so_and_cannot_ask_for_messages(browser, enrol, details):
    patient_id, token = enrol(**details)
    page = browser.get(f"/p/{token}/choices").get_data(as_text=True)
    assert "the clinic has no phone number or way to message you" in page
    assert 'name="messages"' not in page
    form = {"name_on_posters": "no", "leaderboard": "no"}
    assert save(browser, token, form).status_code == 303  # the choices offered, without messages
    before = patient_state(patient_id)
    refused = save(browser, token, {**form, "messages": "yes", "leaderboard": "yes"})
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert 'role="alert">Nothing was saved.' in page and "no phone number or way to message you: ask" in page
    assert patient_state(patient_id) == before and events(patient_id) == []


def test_a_patient_without_a_display_name_is_told_their_posters_show_none(browser, enrol):
    patient_id, token = enrol(display_name="")
    page = browser.get(f"/p/{token}/choices").get_data(as_text=True)
    assert "Your posters show no name" in page and 'name="name_on_posters"' not in page
    refused = save(browser, token, {**EVERYTHING_NO, "name_on_posters": "yes", "leaderboard": "yes"})
    assert refused.status_code == 422
    assert "no name to print on your posters" in refused.get_data(as_text=True)
    assert patient_state(patient_id)["leaderboard_opt_in"] is False and events(patient_id) == []


BAD_FORMS = {
    "odd value": {**EVERYTHING_NO, "leaderboard": "maybe"},
    "yes in another case": {**EVERYTHING_NO, "messages": "YES"},
    "sent twice": {**EVERYTHING_NO, "leaderboard": ["yes", "no"]},
    "one missing": {"messages": "yes", "name_on_posters": "yes"},
    "nothing": {},
    "NUL": {**EVERYTHING_NO, "messages": "yes\x00"},
    "huge": {**EVERYTHING_NO, "leaderboard": "yes" * 100_000},
}


@pytest.mark.parametrize("form", BAD_FORMS.values(), ids=BAD_FORMS.keys())
def test_bad_forms_are_refused_with_a_message_and_change_nothing(browser, enrol, form):
    patient_id, token = enrol()
    before = patient_state(patient_id)
    response = save(browser, token, form)
    assert response.status_code == 422
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert 'role="alert">Nothing was saved.' in page and 'aria-invalid="true"' in page
    assert "Choose yes or no." in page
    assert patient_state(patient_id) == before and events(patient_id) == []


def test_a_body_too_large_to_read_is_refused_before_anything_is_read(browser, enrol):
    patient_id, token = enrol()
    response = save(browser, token, {**EVERYTHING_NO, "leaderboard": "yes", "padding": "x" * 3_000_000})
    assert response.status_code == 413
    assert patient_state(patient_id)["leaderboard_opt_in"] is False


def test_a_failure_part_way_saves_nothing(browser, enrol, monkeypatch):
    """One transaction: the leaderboard's step failing takes back the messages and poster steps before it."""
    patient_id, token = enrol()
    before = patient_state(patient_id)

    def broken(*_args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(consents, "record_leaderboard_consent", broken)
    with pytest.raises(RuntimeError):
        consents.save_own_choices(token, dict.fromkeys(COLUMNS, True), Actor(patient_link=True))
    assert patient_state(patient_id) == before and events(patient_id) == []


@pytest.mark.parametrize("how", ["rotated", "erased", "unknown", "too long", "odd characters"])
def test_unknown_rotated_and_erased_links_get_the_progress_page_s_404_and_change_nothing(browser, enrol, manager_user,
                                                                                      how):
    patient_id, token = enrol()
    if how == "rotated":
        rotate_progress_link(patient_id, Actor())
    elif how == "erased":
        erase_patient(patient_id, "patient_request", Actor(staff_id=manager_user.id))
    elif how == "unknown":
        token = "x" * 32
    elif how == "too long":
        token = "y" * 500
    else:
        token = "%E2%80%AE%00%20.."
    before = patient_state(patient_id)
    progress_404 = browser.get("/p/" + "z" * 32).get_data()
    for response in (browser.get(f"/p/{token}/choices"), save(browser, token, dict.fromkeys(COLUMNS, "yes")),
                     save(browser, token, {"leaderboard": "nonsense"})):
        assert response.status_code == 404
        assert response.get_data() == progress_404
        assert response.headers["Cache-Control"] == "no-store"
    assert patient_state(patient_id) == before and events(patient_id) == []


def test_the_link_is_the_authority_without_a_session_while_staff_forms_still_need_their_token(browser, enrol,
                                                                                           desk_user):
    patient_id, token = enrol()
    # From another site's form, a cookie-less phone, or with a stale CSRF token: the link decides.
    response = save(browser, token, {**EVERYTHING_NO, "leaderboard": "yes"},
                    headers={"Origin": "https://elsewhere.example", "X-CSRFToken": "stale"})
    assert response.status_code == 303 and patient_state(patient_id)["leaderboard_opt_in"] is True
    browser.login(desk_user.email)
    refused = browser.post(f"/patients/{patient_id}/leaderboard-consent", {"leaderboard_opt_in": "no"}, csrf=False)
    assert refused.status_code == 400 and patient_state(patient_id)["leaderboard_opt_in"] is True


def test_the_staff_patient_page_and_the_audit_log_show_the_patient_s_own_changes(browser, manager, enrol):
    patient_id, token = enrol()
    save(browser, token, dict.fromkeys(COLUMNS, "yes"))
    page = manager.get(f"/patients/{patient_id}").get_data(as_text=True)
    assert "Posters show the name <strong>Xiaoming</strong>." in page
    assert "On the public leaderboard as <strong>X.</strong>." in page
    assert "Agreed on" in page and "<strong>SMS</strong>" in page
    log = manager.get(f"/admin/audit?patient_id={patient_id}").get_data(as_text=True)
    assert log.count("<td>The patient, on their own link</td>") == 3
    assert "by: patient_link" not in log and "patient_link" not in log


def test_the_page_speaks_chinese(browser, enrol):
    _patient_id, token = enrol()
    page = browser.get(f"/p/{token}/choices?lang=zh_CN").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page
    assert "您的隐私选择" in page and "保存我的选择" in page and "短信" in page
    assert "Your choices" not in page and "Save my choices" not in page
    refused = save(browser, token, {"leaderboard": "maybe"}, headers={"Cookie": "lang=zh_CN"})
    assert "未保存任何更改" in refused.get_data(as_text=True)


def test_saving_is_rate_limited_per_client_like_the_other_public_pages(app, enrol):
    from tests.test_limits import GUESSER, NEIGHBOUR, browser_from, limited_app

    limited = limited_app(app, RATELIMIT_PUBLIC_PAGES="5/minute", RATELIMIT_WRONG_CODES="3/minute")
    _patient_id, token = enrol()
    phone = browser_from(GUESSER, limited)
    assert [save(phone, token, EVERYTHING_NO).status_code for _ in range(6)] == [303] * 5 + [429]
    guesser = browser_from(NEIGHBOUR, limited)
    assert [save(guesser, "x" * 32, EVERYTHING_NO).status_code for _ in range(4)] == [404] * 3 + [429]
    assert guesser.get(f"/p/{token}/choices").status_code == 429  # wrong links use up the reader's allowance
