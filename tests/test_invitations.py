"""Invitation messages: every patient who agreed to messages gets their referral code and invite link on their phone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Patient, WebhookEndpoint
from clinic.models._time import utcnow
from clinic.services import clinic_settings, erasure, invitation_messages, notifications, redemption, retention
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.services.invitation_messages import Audience, invite_patient, send_invitations
from clinic.services.transaction import Actor, atomic
from tests.conftest import counts, friend, messages_sent
from tests.test_redemption import run_at_once

LONG_AGO = datetime(2020, 3, 31, 9, 30)


def invited_at(patient_id: int) -> datetime | None:
    value = db.session.scalar(select(Patient.last_invited_at).where(Patient.id == patient_id))
    db.session.rollback()
    return value


def end_campaigns() -> None:
    with atomic():
        db.session.execute(update(Campaign).values(ends_at=utcnow() - timedelta(minutes=1)))


def audit_events(action: str) -> list[AuditEvent]:
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()
    db.session.rollback()
    return events


def everything() -> tuple:
    """What an invitation could change: the usual counts, the messages, and every patient's last invitation."""
    invited = db.session.execute(select(Patient.id, Patient.last_invited_at).order_by(Patient.id)).all()
    db.session.rollback()
    return counts(), len(messages_sent()), invited


def test_the_message_tells_the_code_the_link_and_both_rewards_in_the_patients_language(gateway, make_patient):
    chinese, token = make_patient(full_name="Wang Li", messages="sms", language="zh_CN")
    english, _token = make_patient(full_name="Li Na", display_name="Nana", messages="wechat", language="en")
    # Enrolment sent each one; a manager's run a day later finds nobody due (90 days), the button an hour later does.
    assert len(messages_sent("invitation")) == 2
    invite_patient(chinese.id, Actor(), now=utcnow() + timedelta(hours=2))
    [_first, _second, message] = messages_sent("invitation")

    link = f"https://clinic.test/r/{chinese.personal_code}"
    assert message["channel"] == "sms" and message["language"] == "zh_CN"
    assert message["to"]["patient_id"] == chinese.id and message["to"]["phone"] == chinese.phone
    assert message["text"] == (f"Wang Li，您在Test Clinic的专属推荐码是{format_code(chinese.personal_code)}。"
                               f"推荐朋友来院，朋友可得1 bed-day waived，您可得¥200.00代金券。分享链接：{link}")
    assert message["about"]["via"] == "staff"
    assert token not in message["text"] and "/p/" not in message["text"]  # never the private progress link

    [english_message] = [m for m in messages_sent("invitation") if m["to"]["patient_id"] == english.id]
    assert english_message["channel"] == "wechat" and english_message["language"] == "en"
    assert english_message["text"] == (
        f"Nana, your referral code at Test Clinic is {format_code(english.personal_code)}. A friend you recommend "
        f"gets 1 bed-day waived, and you get CN¥200.00 off. Share this link: "
        f"https://clinic.test/r/{english.personal_code}")


def test_the_rewards_say_when_they_are_given_as_the_invite_page_does(gateway, make_patient):
    with atomic():
        db.session.execute(update(Campaign).values(friend_reward_stage="visit", referrer_reward_stage="payment"))
    patient, _token = make_patient(messages="sms", language="en")
    [message] = messages_sent("invitation")
    assert "gets 1 bed-day waived at the first visit, and you get CN¥200.00 off at the first payment." in \
        message["text"]
    other, _token = make_patient(messages="sms", language="zh_CN")
    assert "朋友可得1 bed-day waived（首次就诊时发放），您可得¥200.00代金券（首次缴费时发放）" in \
        messages_sent("invitation")[1]["text"]


def test_the_manager_words_the_invitation_and_unknown_placeholders_are_refused(gateway, manager, make_patient):
    page = manager.get("/admin/notifications").get_data(as_text=True)
    assert 'name="invitation-en"' in page and 'name="invitation-zh_CN"' in page and "{friend_reward}" in page
    refused = manager.post("/admin/notifications", {"invitation-en": "Your link: {progress}"})
    assert refused.status_code == 422 and "Unknown placeholder {progress}" in refused.get_data(as_text=True)
    saved = manager.post("/admin/notifications", {"invitation-en": "{clinic}: code {code}, {link}"})
    assert saved.status_code == 303
    patient, _token = make_patient(messages="sms", language="en")
    assert messages_sent("invitation")[0]["text"] == (f"Test Clinic: code {format_code(patient.personal_code)}, "
                                                      f"https://clinic.test/r/{patient.personal_code}")


@pytest.mark.parametrize("patient_has", [
    {"messages": None},  # no consent
    {"messages": "sms", "phone": None},  # no phone: the enrolment itself refuses consent without one
])
def test_no_consent_or_no_phone_nothing_is_written(gateway, make_patient, patient_has):
    try:
        patient, _token = make_patient(**patient_has)
    except Refused:
        patient, _token = make_patient(**{**patient_has, "messages": None})
    before = everything()
    with pytest.raises(Refused) as refusal:
        invite_patient(patient.id, Actor())
    assert refusal.value.reason == "no_consent" and refusal.value.status == 409
    assert everything() == before and invited_at(patient.id) is None


def test_no_channel_nothing_is_written(gateway, make_patient):
    """Consent on record but the channel set to none (as an old import could leave it): no message."""
    patient, _token = make_patient(messages="sms")
    with atomic():
        db.session.execute(update(Patient).values(preferred_channel="none", last_invited_at=None))
    before = everything()
    with pytest.raises(Refused) as refusal:
        invite_patient(patient.id, Actor())
    assert refusal.value.reason == "no_consent"
    assert everything() == before
    assert send_invitations(Audience(), Actor()).sent == []


def test_the_button_sends_their_code_once_and_is_audited(gateway, desk, make_patient):
    patient, _token = make_patient(messages="sms")
    with atomic():  # enrolled (and sent their code) yesterday
        db.session.execute(update(Patient).values(last_invited_at=utcnow() - timedelta(days=1)))
    page = desk.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Send their code by message" in page

    response = desk.post(f"/patients/{patient.id}/invitation")
    assert response.status_code == 303
    assert [m["about"]["via"] for m in messages_sent("invitation")] == ["enrolment", "staff"]
    assert invited_at(patient.id) > utcnow() - timedelta(minutes=5)
    assert [(e.patient_id, e.details["via"]) for e in audit_events("patient.invited")] == [
        (patient.id, "enrolment"), (patient.id, "staff")]


def _erased(patient):
    erasure.erase_patient(patient.id, "patient_request", Actor())


def _no_campaign(patient):
    end_campaigns()


def _just_invited(patient):
    """Enrolment sent their code a moment ago (a double click, a repeated press)."""


def _no_gateway(patient):
    with atomic():
        db.session.execute(update(Patient).where(Patient.id == patient.id).values(last_invited_at=None))
        db.session.execute(update(WebhookEndpoint).values(enabled=False))


def _no_consent(patient):
    notifications.set_preferences(patient.id, "sms", "zh_CN", False, Actor())


@pytest.mark.parametrize("situation, status, message", [
    (_no_consent, 409, "has not agreed to messages"),
    (_erased, 409, "personal data was erased"),
    (_no_campaign, 409, "No campaign is running"),
    (_just_invited, 429, "wait an hour before sending it again"),
    (_no_gateway, 409, "No webhook endpoint receives notification.requested"),
])
def test_the_button_is_refused_with_a_reason_and_nothing_changes(gateway, desk, make_patient, situation, status,
                                                                  message):
    patient, _token = make_patient(messages="sms")
    situation(patient)
    before = everything()
    response = desk.post(f"/patients/{patient.id}/invitation")
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert everything() == before


def test_the_button_for_an_unknown_patient_is_404(gateway, desk):
    assert desk.post("/patients/99999/invitation").status_code == 404


def _enrolled(patients: list, days_ago: int) -> None:
    with atomic():
        db.session.execute(update(Patient).where(Patient.id.in_([p.id for p in patients]))
                           .values(enrolled_at=utcnow() - timedelta(days=days_ago)))


def _invited(patients: list, days_ago: int | None) -> None:
    moment = None if days_ago is None else utcnow() - timedelta(days=days_ago)
    with atomic():
        db.session.execute(update(Patient).where(Patient.id.in_([p.id for p in patients]))
                           .values(last_invited_at=moment))


def test_the_audience_is_who_agreed_not_erased_not_invited_lately_optionally_enrolled_lately(gateway, make_patient):
    never, _t = make_patient(messages="sms")
    long_ago, _t = make_patient(messages="wechat")
    lately, _t = make_patient(messages="sms")
    new, _t = make_patient(messages="sms")
    silent, _t = make_patient()
    erased, _t = make_patient(messages="sms")
    _enrolled([never, long_ago, lately, silent, erased], 200)
    _invited([never, erased], None)
    _invited([long_ago], 100)
    _invited([lately], 10)
    _invited([new], None)
    erasure.erase_patient(erased.id, "patient_request", Actor())

    assert Audience().count(utcnow()) == 3
    assert Audience(not_within_days=5).count(utcnow()) == 4
    assert Audience(enrolled_within_days=30).count(utcnow()) == 1
    run = send_invitations(Audience(), Actor())
    assert run.sent == sorted([never.id, long_ago.id, new.id]) and run.remaining == 0
    assert {m["to"]["patient_id"] for m in messages_sent("invitation") if m["about"]["via"] == "bulk"} == set(run.sent)
    [event] = audit_events("invitations.sent")
    assert event.details["count"] == 3 and event.details["patients"] == run.sent

    # Pressed again: everyone was just sent their code.
    again = send_invitations(Audience(), Actor())
    assert again.sent == [] and again.audience == 0
    assert len(audit_events("invitations.sent")) == 1


@pytest.mark.parametrize("bad", [{"not_within_days": 0}, {"not_within_days": 3651}, {"enrolled_within_days": 0}])
def test_an_audience_out_of_range_is_refused(bad):
    with pytest.raises(ValueError):
        Audience(**bad)


def test_at_most_a_thousand_per_run_then_the_rest(gateway, make_patient):
    with atomic():
        db.session.add_all(Patient(full_name=f"P{n}", phone=f"139{n:08d}", personal_code=f"T{n:07d}",
                                   progress_token_hash=f"{n:064d}", preferred_channel="sms",
                                   notification_consent=True) for n in range(1001))
    first = send_invitations(Audience(), Actor(), limit=5000)
    assert len(first.sent) == 1000 and first.remaining == 1
    assert "run again for the rest" in first.describe()
    second = send_invitations(Audience(), Actor())
    assert len(second.sent) == 1 and second.remaining == 0
    assert len(messages_sent("invitation")) == 1001
    assert not set(first.sent) & set(second.sent)


def test_two_runs_at_the_same_moment_send_each_patient_one_invitation(app, gateway, make_patient):
    patients = [make_patient(messages="sms")[0] for _ in range(6)]
    _invited(patients, None)
    before = len(messages_sent("invitation"))
    outcomes = run_at_once(app, 2, lambda _: len(send_invitations(Audience(), Actor()).sent))
    assert all(kind == "ok" for kind, _count in outcomes), outcomes
    assert sum(count for _ok, count in outcomes) == 6, outcomes
    sent = [m["to"]["patient_id"] for m in messages_sent("invitation")[before:]]
    assert sorted(sent) == sorted(p.id for p in patients)


def test_a_press_and_a_bulk_run_at_the_same_moment_invite_once(app, gateway, make_patient):
    patient, _token = make_patient(messages="sms")
    _invited([patient], None)
    before = len(messages_sent("invitation"))

    def work(index):
        if index == 0:
            invite_patient(patient.id, Actor())
            return 1
        return len(send_invitations(Audience(), Actor()).sent)

    outcomes = run_at_once(app, 2, work)
    assert sum(count for kind, count in outcomes if kind == "ok") == 1, outcomes
    assert len(messages_sent("invitation")) == before + 1


def test_enrolment_with_consent_sends_exactly_one_invitation(gateway, desk):
    response = desk.post("/patients/new", {"full_name": "Li Na", "phone": "13800138000", "preferred_channel": "sms",
                                           "preferred_language": "en", "notification_consent": "y"})
    assert response.status_code == 303
    patient = db.session.scalar(select(Patient).where(Patient.full_name == "Li Na"))
    [message] = messages_sent("invitation")
    assert message["to"]["patient_id"] == patient.id and message["about"]["via"] == "enrolment"
    assert patient.last_invited_at is not None
    db.session.rollback()

    # Without consent: none. A failed enrolment (the phone is taken): none.
    assert desk.post("/patients/new", {"full_name": "Wu Fan", "phone": "13800138001",
                                       "preferred_channel": "sms", "preferred_language": "en"}).status_code == 303
    before = everything()
    refused = desk.post("/patients/new", {"full_name": "Li Na again", "phone": "13800138000",
                                          "preferred_channel": "sms", "preferred_language": "en",
                                          "notification_consent": "y"})
    assert refused.status_code == 422
    assert everything() == before
    assert len(messages_sent("invitation")) == 1


def test_no_invitation_on_enrolment_without_a_campaign_and_none_for_the_friend_at_the_desk(gateway, make_patient,
                                                                                           actor):
    referrer, _token = make_patient(messages="sms")
    redemption.redeem_code(referrer.personal_code, friend(), actor)  # the desk's form asks no consent
    assert [m["to"]["patient_id"] for m in messages_sent("invitation")] == [referrer.id]
    end_campaigns()
    later, _token = make_patient(messages="sms")
    assert invited_at(later.id) is None
    assert len(messages_sent("invitation")) == 1


def test_an_invited_but_otherwise_inactive_patient_is_still_erased_by_the_retention_rule(gateway, make_patient):
    with atomic():
        clinic_settings.get_clinic().retention_months = 12
    patient, _token = make_patient(messages="sms")
    with atomic():
        db.session.execute(update(Patient).values(enrolled_at=LONG_AGO, progress_link_issued_at=LONG_AGO,
                                                  notification_consent_at=LONG_AGO, last_invited_at=None))
    invite_patient(patient.id, Actor())  # the clinic speaking today, not the patient
    send_invitations(Audience(not_within_days=1), Actor(), now=utcnow() + timedelta(days=2))
    assert retention.due_patient_ids() == [patient.id]
    report = retention.erase_inactive_patients(Actor())
    assert report.erased == [patient.id]
    assert invited_at(patient.id) is None  # erasure blanks it with the rest


def test_the_command_dry_run_changes_nothing_and_the_run_sends(gateway, app, make_patient):
    patients = [make_patient(messages="sms")[0] for _ in range(3)]
    _invited(patients, None)
    runner = app.test_cli_runner()
    before = everything()
    dry = runner.invoke(args=["send-invitations", "--dry-run", "--limit", "2"])
    assert dry.exit_code == 0, dry.output
    assert f"Would send their code to 2 patients: {patients[0].id}, {patients[1].id}." in dry.output
    assert "1 more in the audience" in dry.output
    assert everything() == before

    sent = runner.invoke(args=["send-invitations", "--not-within-days", "30"])
    assert sent.exit_code == 0 and "Sent their code to 3 patients" in sent.output
    assert "Sent their code to 0 patients." in runner.invoke(args=["send-invitations"]).output

    end_campaigns()
    refused = runner.invoke(args=["send-invitations"])
    assert refused.exit_code != 0 and "No campaign is running" in refused.output
    assert runner.invoke(args=["send-invitations", "--limit", "1001"]).exit_code != 0


def test_the_managers_page_shows_who_and_the_message_then_sends(gateway, manager, make_patient):
    patients = [make_patient(full_name="Wang Lixue", messages="sms")[0]] + \
        [make_patient(messages="wechat", language="en")[0] for _ in range(2)]
    _invited(patients, None)
    _enrolled(patients[1:], 60)
    page = manager.get("/admin/invitations").get_data(as_text=True)
    assert "3 patients" in page and "Send to 3 patients" in page
    assert "王**" not in page and "Wang L." in page  # the sample patient, masked
    assert "专属推荐码" in page and "your referral code at Test Clinic" in page
    assert f"https://clinic.test/r/{patients[0].personal_code}" in page
    assert "At most 1000 patients per press" in page

    filtered = manager.get("/admin/invitations?not_within_days=90&enrolled_within_days=30").get_data(as_text=True)
    assert "Send to 1 patient<" in filtered
    defaulted = manager.get("/admin/invitations?not_within_days=&utm_source=x")  # empty: 90 days
    assert defaulted.status_code == 200 and "Send to 3 patients" in defaulted.get_data(as_text=True)

    before = everything()
    unconfirmed = manager.post("/admin/invitations", {"not_within_days": "90", "enrolled_within_days": "30"})
    assert unconfirmed.status_code == 422 and "Tick the box to confirm" in unconfirmed.get_data(as_text=True)
    assert everything() == before

    sent = manager.post("/admin/invitations", {"not_within_days": "90", "enrolled_within_days": "30", "confirm": "y"})
    assert sent.status_code == 303
    assert [m["to"]["patient_id"] for m in messages_sent("invitation") if m["about"]["via"] == "bulk"] == \
        [patients[0].id]
    assert "Send to 0 patients" not in manager.get(sent.headers["Location"]).get_data(as_text=True)  # none left
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "invitations.sent")) == 1


@pytest.mark.parametrize("query", ["not_within_days=0", "not_within_days=abc", "enrolled_within_days=-1",
                                   "not_within_days=99999999999999999999"])
def test_the_managers_page_refuses_bad_numbers(gateway, manager, query):
    response = manager.get(f"/admin/invitations?{query}")
    assert response.status_code == 422
    assert "Send to" not in response.get_data(as_text=True)
    before = everything()
    posted = manager.post("/admin/invitations", {**dict([query.split("=")]), "confirm": "y"})
    assert posted.status_code == 422 and everything() == before


def test_the_managers_page_without_a_campaign_says_so_and_sends_nothing(gateway, manager, make_patient):
    make_patient(messages="sms")
    _invited(list(db.session.scalars(select(Patient))), None)
    end_campaigns()
    page = manager.get("/admin/invitations").get_data(as_text=True)
    assert "No campaign is running" in page and "Send to" not in page
    before = everything()
    refused = manager.post("/admin/invitations", {"not_within_days": "90", "confirm": "y"})
    assert refused.status_code == 409 and "No campaign is running" in refused.get_data(as_text=True)
    assert everything() == before


def test_front_desk_staff_cannot_open_the_invitations_page(desk):
    assert desk.get("/admin/invitations").status_code == 403
    assert desk.post("/admin/invitations", {"not_within_days": "90", "confirm": "y"}).status_code == 403


def test_the_invitation_is_a_message_kind_on_the_notifications_page():
    assert "invitation" in notifications.KINDS
    assert set(notifications.KINDS["invitation"][1]) == {"name", "clinic", "code", "link", "friend_reward", "reward"}
    for language in ("zh_CN", "en"):
        text = notifications.DEFAULT_TEXTS["invitation", language]
        assert set(notifications.PLACEHOLDER.findall(text)) == set(notifications.KINDS["invitation"][1])
    assert "专属推荐码" in notifications.DEFAULT_TEXTS["invitation", "zh_CN"]
    assert invitation_messages.BATCH_LIMIT == 1000
