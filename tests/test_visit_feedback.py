""""How was your visit?" (clinic/services/feedback.py): the card on the progress page, the 90 days, the call list,
the dashboard's NPS, and what erasure, retention and the patient's data export do with the answers."""

from __future__ import annotations

import html
import re
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from clinic.extensions import db
from clinic.models import AuditEvent, Patient, VisitFeedback
from clinic.models._time import utcnow
from clinic.services import branches, clinic_settings, feedback, patient_data, retention
from clinic.services.erasure import erase_patient
from clinic.services.errors import Refused
from clinic.services.reports import Scope, dashboard
from clinic.services.transaction import Actor, atomic


def rows() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count(VisitFeedback.id)))


def answer(browser, token: str, score, path: str = "feedback"):
    data = {} if score is None else {"score": score}
    return browser.client.post(f"/p/{token}/{path}", data=data)


def page(browser, token: str) -> str:
    response = browser.client.get(f"/p/{token}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


@pytest.fixture
def patient(make_patient):
    """A patient with a phone on file: (patient, progress token)."""
    return make_patient(full_name="Wang Lixue", phone="13811112222", language="en")


def test_the_card_asks_the_question_with_eleven_buttons_and_no_comment_box(browser, patient):
    html = page(browser, patient[1])
    assert "How was your visit?" in html and "How likely are you to recommend" in html
    for score in range(11):
        assert f'name="score" value="{score}"' in html
    assert "<textarea" not in html
    # Everything the page showed before is still there.
    assert "Your personal referral code" in html and "Invite a friend" in html and "Your rewards" in html


@pytest.mark.parametrize("score, thanks, not_shown", [
    ("10", "Thank you! Friends you send get", "Would you like the clinic's manager to call you?"),
    ("9", "Thank you! Friends you send get", "Thank you for telling us."),
    ("8", "Thank you for telling us.", "Friends you send get"),
    ("7", "Thank you for telling us.", "Would you like the clinic's manager to call you?"),
    ("6", "We are sorry. Would you like the clinic's manager to call you?", "Friends you send get"),
    ("0", "We are sorry. Would you like the clinic's manager to call you?", "Thank you for telling us."),
])
def test_each_band_is_thanked_in_its_own_words_and_the_question_is_not_asked_again(browser, patient, score, thanks,
                                                                                   not_shown):
    response = answer(browser, patient[1], score)
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/p/{patient[1]}#feedback")
    html = page(browser, patient[1])
    assert thanks in html and not_shown not in html
    assert "Thanks for your answer on" in html
    assert 'name="score"' not in html
    if int(score) >= 9:
        assert 'href="#share-heading"' in html
    assert rows() == 1
    stored = db.session.scalar(select(VisitFeedback))
    assert stored.score == int(score) and stored.patient_id == patient[0].id


def test_a_second_answer_within_90_days_is_refused_politely_and_changes_nothing(browser, patient):
    assert answer(browser, patient[1], "9").status_code == 303
    again = answer(browser, patient[1], "2")
    assert again.status_code == 409
    assert "You already answered on" in again.get_data(as_text=True)
    assert rows() == 1 and db.session.scalar(select(VisitFeedback.score)) == 9


def test_after_90_days_the_patient_may_answer_again(patient):
    _patient, token = patient
    first = utcnow() - timedelta(days=91)
    feedback.record_answer(token, 3, now=first)
    with pytest.raises(Refused) as refused:
        feedback.record_answer(token, 4, now=first + timedelta(days=89))
    assert refused.value.status == 409
    feedback.record_answer(token, 10)
    assert rows() == 2


def test_two_submits_at_the_same_moment_write_one_answer(app, patient, monkeypatch):
    """The second submit arrives while the first holds the patient's row and has not written yet (a thread with its
    own session, given up to 3 s). On PostgreSQL the row lock makes it wait, then it finds the first one's answer
    (with FOR SHARE, or no lock, both would write); on SQLite the write lock orders them."""
    _patient, token = patient
    db.session.commit()
    outcomes: list[str] = []
    holding = feedback._patient_holding
    others: list[threading.Thread] = []

    def submit(score: int):
        with app.app_context():
            try:
                feedback.record_answer(token, score)
                outcomes.append("saved")
            except Refused as refusal:
                outcomes.append(refusal.reason)
            finally:
                db.session.remove()

    def another_submit_meanwhile(*args):
        patient_row = holding(*args)
        if not others:
            others.append(threading.Thread(target=submit, args=(1,)))
            others[0].start()
            others[0].join(timeout=3)
        return patient_row

    monkeypatch.setattr(feedback, "_patient_holding", another_submit_meanwhile)
    submit(10)
    others[0].join()
    assert sorted(outcomes) == ["already_answered", "saved"]
    assert rows() == 1
    db.session.rollback()
    assert db.session.scalar(select(VisitFeedback.score)) == 10


def test_a_double_click_writes_one_answer(browser, patient):
    assert [answer(browser, patient[1], "10").status_code for _ in range(2)] == [303, 409]
    assert rows() == 1


@pytest.mark.parametrize("score", ["-1", "11", "x", "", None, "5.0", "٥", "9" * 10_000, ["5", "6"]])
def test_bad_scores_are_refused_with_a_message_and_store_nothing(browser, patient, score):
    response = answer(browser, patient[1], score)
    assert response.status_code == 422
    assert "from 0 to 10" in response.get_data(as_text=True)
    assert rows() == 0


def test_an_unknown_or_erased_link_is_a_404_and_stores_nothing(browser, patient, manager_user):
    assert answer(browser, "not-a-token", "9").status_code == 404
    erase_patient(patient[0].id, "patient_request", Actor(staff_id=manager_user.id))
    assert answer(browser, patient[1], "9").status_code == 404
    assert answer(browser, patient[1], "0", "feedback/call-me").status_code == 404
    assert rows() == 0


def test_a_detractor_may_ask_for_a_call_once_and_the_card_says_it_is_coming(browser, patient):
    answer(browser, patient[1], "4")
    for _ in range(2):
        assert answer(browser, patient[1], None, "feedback/call-me").status_code == 303
    assert "The clinic's manager will call you." in page(browser, patient[1])
    db.session.rollback()
    assert db.session.scalar(select(func.count(VisitFeedback.id)).where(
        VisitFeedback.callback_requested_at.is_not(None))) == 1


@pytest.mark.parametrize("score", ["7", "10", None])
def test_only_a_detractor_is_offered_the_call(browser, patient, score):
    if score is not None:
        answer(browser, patient[1], score)
    response = answer(browser, patient[1], None, "feedback/call-me")
    assert response.status_code == 409
    assert "offered after a score from 0 to 6" in response.get_data(as_text=True)
    db.session.rollback()
    assert db.session.scalar(select(VisitFeedback.callback_requested_at)) is None


def test_a_detractor_without_a_phone_is_told_to_call_the_clinic(browser, make_patient):
    with atomic():
        clinic_settings.get_clinic().phone = "+65 6123 4567"
    _patient, token = make_patient(full_name="No Phone", phone=None, language="en")
    answer(browser, token, "2")
    html = page(browser, token)
    assert "Please call the clinic at +65 6123 4567" in html and "Yes, please call me" not in html
    refused = answer(browser, token, None, "feedback/call-me")
    assert refused.status_code == 409 and "no phone number for you" in refused.get_data(as_text=True)
    db.session.rollback()
    assert db.session.scalar(select(VisitFeedback.callback_requested_at)) is None


def _answers_at(make_patient, give_feedback, scores: list[int], when: datetime, branch_id: int | None = None):
    for score in scores:
        _patient, token = make_patient()
        if branch_id is not None:
            with atomic():
                db.session.execute(update(Patient).where(Patient.id == _patient.id).values(branch_id=branch_id))
        give_feedback(token, score, now=when)


def test_nps_is_promoters_less_detractors_in_whole_percent_for_the_period_and_branch(make_patient, give_feedback,
                                                                                      manager_user):
    actor = Actor(staff_id=manager_user.id)
    north = branches.create_branch("North", "", actor).id
    south = branches.create_branch("South", "", actor).id
    inside = datetime(2026, 6, 15, 4)
    _answers_at(make_patient, give_feedback, [9, 10, 10, 9, 9, 7, 8, 0, 6, 3], inside, north)  # 5 / 2 / 3
    _answers_at(make_patient, give_feedback, [0, 1], inside, south)
    _answers_at(make_patient, give_feedback, [10, 10, 10], datetime(2026, 7, 2, 4), north)  # after the period
    june = Scope.for_days(date(2026, 6, 1), date(2026, 6, 30), timezone.utc)
    north_june = Scope.for_days(date(2026, 6, 1), date(2026, 6, 30), timezone.utc, north)
    figures = feedback.nps_figures(north_june)
    assert (figures.answers, figures.promoters, figures.passives, figures.detractors, figures.nps) == (10, 5, 2, 3, 20)
    everywhere = dashboard(june).nps
    assert (everywhere.answers, everywhere.detractors, everywhere.nps) == (12, 5, 0)  # 5 - 5 of 12
    assert feedback.nps_figures(Scope.for_days(date(2026, 5, 1), date(2026, 5, 31), timezone.utc)).nps is None


@pytest.mark.parametrize("promoters, passives, detractors, nps", [
    (1, 1, 1, 0), (2, 1, 0, 67), (0, 1, 2, -67), (1, 0, 7, -75), (1, 7, 0, 13), (0, 0, 3, -100), (1, 1, 0, 50),
])
def test_the_nps_rounds_half_away_from_zero(promoters, passives, detractors, nps):
    assert feedback.NpsFigures(promoters + passives + detractors, promoters, passives, detractors).nps == nps


def test_the_dashboard_shows_the_tile_and_links_the_call_list(manager, make_patient, give_feedback):
    html = manager.client.get("/admin/dashboard").get_data(as_text=True)
    assert 'id="stat-nps-value">—<' in html and "/admin/feedback" in html
    _answers_at(make_patient, give_feedback, [10, 10, 0], utcnow())
    html = manager.client.get("/admin/dashboard").get_data(as_text=True)
    assert 'id="stat-nps-value">33<' in html
    assert "3 answers: 2 promoters, 0 passives, 1 detractor" in html and "1 detractors" not in html


@pytest.mark.parametrize("scores, english, chinese", [
    ([10], "1 answer: 1 promoter, 0 passives, 0 detractors", "1条评价：推荐者1，中立者0，批评者0"),
    ([8, 7, 0], "3 answers: 0 promoters, 2 passives, 1 detractor", "3条评价：推荐者0，中立者2，批评者1"),
    ([9, 8], "2 answers: 1 promoter, 1 passive, 0 detractors", "2条评价：推荐者1，中立者1，批评者0"),
])
def test_the_nps_summary_counts_each_group_in_its_own_plural(manager, make_patient, give_feedback, scores, english,
                                                              chinese):
    """Each count of the tile's note agrees with its own number ("1 promoter", "2 passives"), in both languages."""
    _answers_at(make_patient, give_feedback, scores, utcnow())
    assert english in manager.get("/admin/dashboard").get_data(as_text=True)
    assert manager.post("/account/language", {"language": "zh_CN", "next": "/admin/dashboard"}).status_code == 303
    assert chinese in manager.get("/admin/dashboard").get_data(as_text=True)


def test_managers_see_who_asked_with_full_phone_and_record_the_call_once(browser, manager, manager_user, patient,
                                                                          make_patient):
    answer(browser, patient[1], "3")
    answer(browser, patient[1], None, "feedback/call-me")
    _other, other_token = make_patient(full_name="Happy Person")
    answer(browser, other_token, "2")  # a detractor who did not ask is not listed
    html = manager.client.get("/admin/feedback").get_data(as_text=True)
    assert "Wang Lixue" in html and "13811112222" in html and "Happy Person" not in html
    db.session.rollback()
    feedback_id = db.session.scalar(select(VisitFeedback.id).where(VisitFeedback.patient_id == patient[0].id))
    called = manager.post(f"/admin/feedback/{feedback_id}/called", {}, headers={"HX-Request": "true"})
    assert called.status_code == 200
    assert f'id="call-{feedback_id}"' in called.get_data(as_text=True) and "Called " in called.get_data(as_text=True)
    db.session.rollback()
    stored = db.session.get(VisitFeedback, feedback_id)
    assert stored.followed_up_at is not None and stored.followed_up_by_id == manager_user.id
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "feedback.called")).all()
    assert [(event.staff_id, event.patient_id) for event in events] == [(manager_user.id, patient[0].id)]
    again = manager.post(f"/admin/feedback/{feedback_id}/called", {})
    assert again.status_code == 409 and "already called" in again.get_data(as_text=True)
    assert manager.post("/admin/feedback/999999/called", {}).status_code == 404
    db.session.rollback()
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "feedback.called")) == 1


def test_the_front_desk_may_not_see_the_call_list_or_record_a_call(desk, browser, patient):
    answer(browser, patient[1], "3")
    answer(browser, patient[1], None, "feedback/call-me")
    db.session.rollback()
    feedback_id = db.session.scalar(select(VisitFeedback.id))
    assert desk.client.get("/admin/feedback").status_code == 403
    assert desk.post(f"/admin/feedback/{feedback_id}/called", {}).status_code == 403
    db.session.rollback()
    assert db.session.scalar(select(VisitFeedback.followed_up_at)) is None


def test_erasure_keeps_the_score_date_and_branch_without_the_patient(patient, manager_user, give_feedback):
    give_feedback(patient[1], 2, call_me=True)
    erase_patient(patient[0].id, "patient_request", Actor(staff_id=manager_user.id))
    db.session.rollback()
    stored = db.session.scalar(select(VisitFeedback))
    assert (stored.patient_id, stored.score, stored.callback_requested_at) == (None, 2, None)
    assert feedback.patients_to_call().rows == []
    today = utcnow().date()
    assert feedback.nps_figures(Scope.for_days(today - timedelta(days=1), today + timedelta(days=1),
                                               timezone.utc)).detractors == 1


def test_an_answer_is_activity_for_the_retention_rule(patient, give_feedback):
    with atomic():
        clinic_settings.get_clinic().retention_months = 12
        long_ago = datetime(2020, 3, 31, 9, 30)
        db.session.execute(update(Patient).values(enrolled_at=long_ago, progress_link_issued_at=long_ago))
    assert patient[0].id in retention.due_patient_ids()
    give_feedback(patient[1], 8, now=utcnow() - timedelta(days=30))
    assert patient[0].id not in retention.due_patient_ids()


def test_the_patient_data_export_holds_their_answers(patient, manager_user, give_feedback):
    give_feedback(patient[1], 5, call_me=True)
    _patient, text = patient_data.patient_data(patient[0].id, Actor(staff_id=manager_user.id))
    assert '"visit_feedback": [' in text and '"score": 5' in text and '"asked_to_be_called_at": "' in text


def test_the_database_refuses_a_score_outside_0_to_10(patient):
    with pytest.raises(Exception), atomic():
        db.session.add(VisitFeedback(patient_id=patient[0].id, score=11))
        db.session.flush()
    assert rows() == 0



def _callers(make_patient, give_feedback, count: int) -> list[str]:
    """``count`` detractors who asked for a call, a minute apart; their names, newest first (the list's order)."""
    start = utcnow() - timedelta(hours=1)
    names = []
    for index in range(count):
        _patient, token = make_patient(full_name=f"Caller {index:02d}")
        give_feedback(token, 3, call_me=True, now=start + timedelta(minutes=index))
        names.insert(0, f"Caller {index:02d}")
    return names


def test_the_call_list_pages_hold_every_caller_once_in_order(make_patient, give_feedback):
    names = _callers(make_patient, give_feedback, 5)
    pages = [feedback.patients_to_call(number, per_page=2) for number in (1, 2, 3)]
    assert [(page.number, page.pages, page.total) for page in pages] == [(1, 3, 5), (2, 3, 5), (3, 3, 5)]
    assert [row.full_name for page in pages for row in page.rows] == names
    assert feedback.patients_to_call(99, per_page=2).number == 3  # past the end: the last page
    assert feedback.patients_to_call(0, per_page=2).rows == pages[0].rows
    assert feedback.patients_to_call().pages == 1  # nobody called and no answers: one empty page
    assert feedback.patients_to_call(per_page=10).rows[0].full_name == names[0]


def test_the_call_list_is_not_capped_the_manager_pages_through_it(manager, make_patient, give_feedback, monkeypatch):
    """It used to stop at 500 rows, silently: the 501st caller was never seen."""
    monkeypatch.setattr(feedback, "CALLS_PER_PAGE", 2)
    names = _callers(make_patient, give_feedback, 5)
    first = manager.get("/admin/feedback").get_data(as_text=True)
    assert "5 patients asked for a call" in first and "Page 1 of 3" in first
    assert names[0] in first and names[1] in first and names[2] not in first
    assert 'href="/admin/feedback?page=2" rel="next"' in first and 'rel="prev"' not in first
    middle = manager.get("/admin/feedback?page=2").get_data(as_text=True)
    assert names[2] in middle and names[3] in middle and names[0] not in middle
    assert 'href="/admin/feedback" rel="prev"' in middle and 'href="/admin/feedback?page=3" rel="next"' in middle
    last = manager.get("/admin/feedback?page=3").get_data(as_text=True)
    assert names[4] in last and 'rel="next"' not in last and "Page 3 of 3" in last
    for nonsense in ("abc", "-1", "0", "²", "99999999999", ""):
        response = manager.get(f"/admin/feedback?page={nonsense}")
        assert response.status_code == 200 and "Page 1 of 3" in response.get_data(as_text=True)
    assert "Page 3 of 3" in manager.get("/admin/feedback?page=40").get_data(as_text=True)


def test_recording_a_call_without_htmx_comes_back_to_the_same_page(manager, make_patient, give_feedback, monkeypatch):
    monkeypatch.setattr(feedback, "CALLS_PER_PAGE", 2)
    _callers(make_patient, give_feedback, 3)
    last = manager.get("/admin/feedback?page=2").get_data(as_text=True)
    action = re.search(r'action="(/admin/feedback/[^"]+)"', last).group(1)
    assert action.endswith("/called?page=2")
    called = manager.post(html.unescape(action), {})
    assert called.status_code == 303 and called.headers["Location"].endswith("/admin/feedback?page=2")


def test_a_single_page_call_list_shows_no_pager(manager, make_patient, give_feedback):
    _callers(make_patient, give_feedback, 2)
    page = manager.get("/admin/feedback").get_data(as_text=True)
    assert "2 patients asked for a call" in page and "Page 1 of" not in page
