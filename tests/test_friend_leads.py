"""Call-back requests: the invite page's "Call me back" form, the desk's Call-backs page, conversion by a redemption,
pruning, erasure and the retention rule (clinic/services/leads.py)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, CardStatus, FriendLead, Patient, Referral
from clinic.models._time import utcnow
from clinic.services import erasure, milestones, redemption, retention
from clinic.services.transaction import Actor, atomic
from clinic.web.templating import local_date
from tests.conftest import Browser, counts, friend

FORM = {"name": "Lucy", "phone": "139 7777 0001", "consent": "yes", "website": ""}
THANKS = "The clinic will call you to book your first visit."


def call_me(browser: Browser, code: str, **changes):
    return browser.post(f"/r/{code}/call-me", {**FORM, **changes}, csrf=False)


def all_leads() -> list[FriendLead]:
    found = list(db.session.scalars(select(FriendLead).order_by(FriendLead.id)))
    db.session.rollback()
    return found


def audited(action: str) -> list[AuditEvent]:
    found = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))
    db.session.rollback()
    return found


def test_the_invite_page_offers_the_form_with_its_consent_and_no_token(browser, referrer):
    page = browser.get(f"/r/{referrer.personal_code}").get_data(as_text=True)
    assert f'action="/r/{referrer.personal_code}/call-me#call-me"' in page
    assert "The clinic may call or message me about booking this visit. My number is used for nothing else." in page
    assert 'name="website"' in page and "Call me back" in page
    assert "csrf_token" not in page  # the page is cached a minute and the friend has no session


def test_a_valid_request_stores_one_lead_and_thanks_the_friend_with_the_code(browser, referrer):
    response = call_me(browser, referrer.personal_code.lower())
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert THANKS in page and f"{referrer.personal_code[:4]}-{referrer.personal_code[4:]}" in page
    assert "Wang Li" not in page and "13811112222" not in page  # the referrer is no more than the invite page shows
    assert response.headers["Cache-Control"] == "no-store"
    [lead] = all_leads()
    assert (lead.referrer_id, lead.name, lead.phone, lead.status) == (referrer.id, "Lucy", "13977770001", "new")
    assert lead.consent_at is not None and lead.converted_referral_id is None
    [event] = audited("lead.requested")
    assert event.patient_id == referrer.id and event.ip is None and event.details["by"] == "invite_page"


BAD_FORMS = {
    "empty name": ({"name": "  "}, "Enter the name."),
    "bad phone": ({"phone": "call me maybe"}, "A phone number has only digits"),
    "short phone": ({"phone": "123"}, "A phone number has 6 to 15 digits."),
    "no phone": ({"phone": ""}, "Enter your phone number"),
    "no consent": ({"consent": ""}, "Tick the box to let the clinic call you"),
    "consent spoofed": ({"consent": "on"}, "Tick the box to let the clinic call you"),
    "honeypot": ({"website": "http://spam.example"}, "Your request was not sent."),
    "huge name": ({"name": "x" * 100_000}, "Name can be at most 60 characters."),
    "control characters": ({"name": "Lucy\x00\u202e"}, "Name contains characters that cannot be printed."),
    "markup": ({"name": "<script>alert(1)</script>"}, "A name has no &lt; or &gt; signs."),
    "huge phone": ({"phone": "9" * 100_000}, "A phone number has 6 to 15 digits."),
}


@pytest.mark.parametrize("case", BAD_FORMS, ids=list(BAD_FORMS))
def test_bad_input_is_refused_with_a_message_and_stores_nothing(browser, referrer, case):
    changes, message = BAD_FORMS[case]
    before = counts()
    response = call_me(browser, referrer.personal_code, **changes)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page and 'role="alert"' in page
    assert "<script>alert(1)</script>" not in page
    assert counts() == before and not all_leads()
    if case not in ("honeypot", "huge name"):  # the form comes back with what the friend typed
        assert 'value="' + (changes.get("name") or FORM["name"]).replace("<", "&lt;").replace(">", "&gt;")[:40] in page


def test_unknown_and_mistyped_codes_are_refused_and_store_nothing(browser, referrer):
    unknown = "ABCDEFG" + "0"
    mistyped = referrer.personal_code[:-1] + ("0" if referrer.personal_code[-1] != "0" else "1")
    for code in (unknown, mistyped, "nonsense"):
        response = call_me(browser, code)
        assert response.status_code == 404, code
        assert "We could not find this code" in response.get_data(as_text=True)
    assert not all_leads()


def test_no_campaign_in_force_means_no_form_and_a_refusal(browser, referrer):
    with atomic():
        db.session.scalar(select(Campaign)).ends_at = utcnow() - timedelta(minutes=1)
    assert "call-me" not in browser.get(f"/r/{referrer.personal_code}").get_data(as_text=True)
    response = call_me(browser, referrer.personal_code)
    assert response.status_code == 409
    assert "This code takes no call-back requests now." in response.get_data(as_text=True)
    assert not all_leads()


def test_a_gift_pack_card_takes_no_call_back_requests(browser, referrer):
    from tests.test_bad_input_properties import add_card

    card = add_card(CardStatus.ACTIVATED.value, owner_id=referrer.id)
    assert "call-me" not in browser.get(f"/r/{card.code}").get_data(as_text=True)
    refused = call_me(browser, card.code)
    assert refused.status_code == 409 and "This code takes no call-back requests now." in refused.get_data(as_text=True)
    assert not all_leads()


def test_the_same_phone_twice_is_one_lead_renewed(browser, referrer, desk):
    assert call_me(browser, referrer.personal_code).status_code == 200
    [first] = all_leads()
    with atomic():  # asked a week ago, and the desk called since
        db.session.execute(update(FriendLead).values(consent_at=utcnow() - timedelta(days=7),
                                                     created_at=utcnow() - timedelta(days=7), status="contacted"))
    response = call_me(browser, referrer.personal_code, name="Lucy Chen", phone="+86 139-7777-0001")
    assert response.status_code == 200 and THANKS in response.get_data(as_text=True)
    [lead] = all_leads()
    assert lead.id == first.id and lead.name == "Lucy Chen" and lead.status == "new"
    assert lead.consent_at > lead.created_at
    assert len(audited("lead.requested")) == 1 and len(audited("lead.renewed")) == 1


def test_the_database_holds_one_request_per_phone_and_code_whatever_arrives_at_once(referrer, make_lead):
    """Two requests at the same moment both find nothing to renew: the unique pair leaves one row, and the second
    INSERT (ON CONFLICT DO NOTHING) renews it instead (services/leads.py)."""
    lead = make_lead(referrer, phone="13977770001")
    with pytest.raises(IntegrityError):
        with atomic():
            db.session.add(FriendLead(referrer_id=referrer.id, name="Twin", phone=lead.phone, consent_at=utcnow()))
    assert len(all_leads()) == 1


def test_a_patient_s_phone_gets_the_same_answer_as_anyone_s(browser, referrer, make_patient):
    make_patient(full_name="Zhao Min", phone="13955550000")
    stranger = call_me(browser, referrer.personal_code, phone="13955550001")
    patient = call_me(browser, referrer.personal_code, phone="13955550000")
    assert patient.status_code == stranger.status_code == 200
    assert patient.get_data() == stranger.get_data()
    assert {lead.phone for lead in all_leads()} == {"13955550000", "13955550001"}  # both recorded, nothing more


@pytest.mark.app_settings(RATELIMIT_ENABLED=True, RATELIMIT_CALL_BACKS="2/hour")
def test_the_call_back_limit_answers_429_with_a_clear_message(browser, referrer):
    for number in range(2):
        assert call_me(browser, referrer.personal_code, phone=f"1397777{number:04d}").status_code == 200
    refused = call_me(browser, referrer.personal_code, phone="13977779999")
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "Too many call-back requests from this connection." in refused.get_data(as_text=True)
    assert len(all_leads()) == 2
    assert browser.get(f"/r/{referrer.personal_code}").status_code == 200  # the page itself is not refused


@pytest.mark.parametrize("visitor", ["desk", "manager"])
def test_the_desk_and_managers_see_the_call_backs_with_full_phones(request, referrer, make_lead, visitor):
    make_lead(referrer, name="Lucy", phone="13977770001")
    browser = request.getfixturevalue(visitor)
    page = browser.get("/desk/leads").get_data(as_text=True)
    assert "Lucy" in page and 'href="tel:13977770001"' in page
    assert f'href="/patients/{referrer.id}"' in page
    assert "Wang Li" in page
    assert "Call-backs (1)" in browser.get("/desk/").get_data(as_text=True)


def test_anonymous_visitors_are_sent_to_log_in(browser, referrer, make_lead):
    make_lead(referrer)
    response = browser.get("/desk/leads")
    assert response.status_code == 302 and "/login" in response.location
    assert browser.post(f"/desk/leads/{all_leads()[0].id}", {"status": "booked"}).status_code == 302
    assert all_leads()[0].status == "new"


def test_open_requests_come_first_newest_first(desk, referrer, make_lead):
    old, closed, new = (make_lead(referrer, name=name) for name in ("Old Li", "Closed Wu", "New Ma"))
    with atomic():
        db.session.execute(update(FriendLead).where(FriendLead.id == old.id)
                           .values(consent_at=utcnow() - timedelta(days=2)))
        db.session.execute(update(FriendLead).where(FriendLead.id == closed.id).values(status="not_interested"))
    page = desk.get("/desk/leads").get_data(as_text=True)
    assert page.index("New Ma") < page.index("Old Li") < page.index("Closed Wu")


def test_an_existing_patient_s_request_is_flagged_for_the_desk(desk, referrer, make_lead, make_patient):
    make_patient(full_name="Zhao Min", phone="13955550000")
    make_lead(referrer, phone="13955550000")
    assert "This phone is already a patient" in desk.get("/desk/leads").get_data(as_text=True)


def test_the_desk_records_each_call_audited(desk, desk_user, referrer, make_lead):
    lead = make_lead(referrer)
    response = desk.post(f"/desk/leads/{lead.id}", {"status": "contacted", "note": "No answer, try after 6"},
                         htmx=True)
    assert response.status_code == 200
    row = response.get_data(as_text=True)
    assert f'<tr id="lead-{lead.id}"' in row and "<html" not in row
    assert "No answer, try after 6" in row
    assert desk.post(f"/desk/leads/{lead.id}", {"status": "booked", "note": ""}).status_code == 303
    [changed] = all_leads()
    assert (changed.status, changed.note, changed.status_changed_by_id) == ("booked", "No answer, try after 6",
                                                                            desk_user.id)
    events = audited("lead.status_changed")
    assert [e.details["status"] for e in events] == ["contacted", "booked"]
    assert all(e.staff_id == desk_user.id and e.patient_id == referrer.id for e in events)
    assert "No answer" not in str(events[0].details)  # staff notes stay out of the append-only log


@pytest.mark.parametrize("status", ["", "new", "converted", "BOOKED", "booked\x00", "x" * 5000])
def test_a_bad_status_is_refused_and_changes_nothing(desk, referrer, make_lead, status):
    lead = make_lead(referrer)
    before = counts()
    for htmx in (False, True):
        response = desk.post(f"/desk/leads/{lead.id}", {"status": status}, htmx=htmx)
        assert response.status_code == 422
        assert "Choose contacted, booked or not interested." in response.get_data(as_text=True)
    assert counts() == before and all_leads()[0].status == "new"


def test_a_bad_note_or_an_unknown_request_is_refused(desk, referrer, make_lead):
    lead = make_lead(referrer)
    assert desk.post(f"/desk/leads/{lead.id}", {"status": "booked", "note": "x" * 201}).status_code == 422
    assert desk.post(f"/desk/leads/{lead.id}", {"status": "booked", "note": "a\x00"}).status_code == 422
    assert desk.post("/desk/leads/999999", {"status": "booked"}).status_code == 404
    assert all_leads()[0].status == "new" and not audited("lead.status_changed")


def test_a_redemption_converts_the_friend_s_request_and_no_other_referrer_s(referrer, make_patient, make_lead, actor,
                                                                            desk):
    other, _token = make_patient(full_name="Sun Yue")
    mine = make_lead(referrer, phone="13933334444")
    theirs = make_lead(other, phone="13933334444")
    stranger = make_lead(referrer, phone="13933335555")
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)  # 13933334444
    by_id = {lead.id: lead for lead in all_leads()}
    assert by_id[mine.id].status == "converted" and by_id[mine.id].converted_referral_id == result.referral.id
    assert by_id[theirs.id].status == "new" and by_id[stranger.id].status == "new"
    [event] = audited("redemption")
    assert event.details["call_back"] is True
    # Closed for the desk: no buttons, and a change is refused.
    assert desk.post(f"/desk/leads/{mine.id}", {"status": "booked"}).status_code == 409


def test_a_redemption_without_a_request_says_nothing_of_one(referrer, actor):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    [event] = audited("redemption")
    assert "call_back" not in event.details


def test_prune_deletes_only_old_requests_never_converted(app, referrer, make_lead, actor):
    old, recent, converted = (make_lead(referrer, phone=phone) for phone in ("13900000001", "13900000002",
                                                                             "13933334444"))
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    with atomic():
        db.session.execute(update(FriendLead).where(FriendLead.id.in_([old.id, converted.id]))
                           .values(consent_at=utcnow() - timedelta(days=91)))
        db.session.execute(update(FriendLead).where(FriendLead.id == recent.id)
                           .values(consent_at=utcnow() - timedelta(days=89)))
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["prune-leads", "--dry-run"])
    assert dry.exit_code == 0 and "1 call-back requests" in dry.output and len(all_leads()) == 3
    assert not audited("leads.pruned")
    result = runner.invoke(args=["prune-leads"])
    assert result.exit_code == 0 and "Deleted 1 call-back requests older than 90 days" in result.output
    assert {lead.id for lead in all_leads()} == {recent.id, converted.id}
    [event] = audited("leads.pruned")
    assert event.details["count"] == 1 and event.details["older_than_days"] == 90
    assert runner.invoke(args=["prune-leads", "--days", "0"]).exit_code != 0


def test_erasing_the_referrer_deletes_their_requests_and_erasing_a_friend_their_own(referrer, make_patient, make_lead,
                                                                                   actor):
    other, _token = make_patient(full_name="Sun Yue")
    waiting = make_lead(referrer, phone="13900000001").id
    make_lead(referrer, phone="13933334444")  # converted below
    make_lead(other, phone="13933334444")  # the same friend asked through another code too
    kept = make_lead(other, phone="13900000009").id
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    erasure.erase_patient(result.referral.friend_id, "patient_request", actor)
    assert {lead.id for lead in all_leads()} == {waiting, kept}
    erasure.erase_patient(referrer.id, "patient_request", actor)
    assert [lead.id for lead in all_leads()] == [kept]
    [*_, event] = audited("patient.erased")
    assert event.details["call_back_requests_deleted"] == 1


def test_a_request_is_not_its_referrer_s_activity_for_the_retention_rule(referrer, make_lead):
    with atomic():
        db.session.execute(update(Patient).values(enrolled_at=utcnow() - timedelta(days=800),
                                                  progress_link_issued_at=utcnow() - timedelta(days=800)))
    due = retention.due_query(12, utcnow())
    assert [row.patient_id for row in db.session.execute(due)] == [referrer.id]
    db.session.rollback()
    make_lead(referrer)  # today
    assert [row.patient_id for row in db.session.execute(due)] == [referrer.id]
    db.session.rollback()


def test_the_audit_page_names_the_friend_as_the_actor(manager, referrer, make_lead):
    make_lead(referrer)
    page = manager.get("/admin/audit").get_data(as_text=True)
    assert "Call-back requested on the invite page" in page and "A friend, on the invite page" in page


def test_the_language_switch_of_the_thank_you_leads_back_to_the_invite_page(browser, referrer):
    code = referrer.personal_code
    response = browser.get(f"/r/{code}/call-me?lang=zh_CN")
    assert response.status_code == 303 and response.location == f"/r/{code}?lang=zh_CN#call-me"
    assert browser.get(f"/r/{code}/call-me?lang=<x>").location == f"/r/{code}#call-me"


def test_the_invite_page_form_comes_back_with_field_errors(browser, referrer):
    page = call_me(browser, referrer.personal_code, name="", consent="").get_data(as_text=True)
    assert re.search(r'id="call-me-name"[^>]*aria-invalid="true"', page, re.S)
    assert "Nothing was sent. Please look at the fields marked below." in page


# The desk redeeming a code sees its call-back requests; a manager's approval converts one as a redemption does.

def test_the_desk_looking_up_a_code_sees_its_open_requests_masked(desk, referrer, make_patient, make_lead, actor):
    lucy = make_lead(referrer, name="Lucy", phone="13977770001")
    closed = make_lead(referrer, name="Closed Chen", phone="13977770002")
    desk.post(f"/desk/leads/{closed.id}", {"status": "not_interested"})
    other, _token = make_patient(full_name="Sun Yue")
    make_lead(other, name="Theirs Tang", phone="13977770003")

    page = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)

    assert "Asked to be called back through this code:" in page
    assert f"Lucy, 139****0001, asked to be called back on {_day(lucy.consent_at)}" in page
    assert "13977770001" not in page and "Closed Chen" not in page and "Theirs Tang" not in page
    assert 'id="desk-call-back"' not in page  # no phone typed yet: no friend is named as the one who asked


def test_a_code_with_no_open_request_shows_none(desk, referrer):
    page = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    assert "Referred by" in page and "called back" not in page


def test_the_friend_s_form_with_the_phone_of_a_request_says_they_asked(desk, referrer, make_lead):
    lead = make_lead(referrer, name="Lucy", phone="13977770001")
    form = {"code": referrer.personal_code, "full_name": "", "phone": "139 7777 0001", "display_name": "",
            "external_id": ""}

    response = desk.post("/desk/redeem", form, htmx=True)  # no name: the form comes back

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert (f"This friend asked to be called back on {_day(lead.consent_at)} (Lucy, 139****0001)."
            in page)
    assert all_leads()[0].status == "new"


def test_the_receipt_says_the_friend_had_asked_and_the_request_is_closed(desk, referrer, make_lead):
    lead = make_lead(referrer, name="Lucy", phone="13977770001")
    receipt = desk.post("/desk/redeem", {"code": referrer.personal_code, "full_name": "Lu Xi", "phone": "13977770001",
                                         "display_name": "", "external_id": ""}, htmx=True)
    text = receipt.get_data(as_text=True)
    assert receipt.status_code == 200, text
    assert f"Lu Xi had asked to be called back on {_day(lead.consent_at)}: that request is closed now." in text
    [converted] = all_leads()
    assert converted.status == "converted"
    again = desk.get(f"/desk/redemptions/{converted.converted_referral_id}").get_data(as_text=True)
    assert "had asked to be called back" in again


def test_the_receipt_of_a_converting_redemption_redraws_the_top_bar_s_call_backs_count(desk, referrer, make_lead):
    """The top bar is outside the swapped receipt: without its link out of band it kept counting the closed request."""
    make_lead(referrer, name="Lucy", phone="13977770001")
    make_lead(referrer, name="Other", phone="13977770002")
    assert '<a id="nav-call-backs" href="/desk/leads" class="attention">Call-backs (2)</a>' in desk.get(
        "/desk/").get_data(as_text=True)
    form = {"code": referrer.personal_code, "full_name": "Lu Xi", "phone": "13977770001", "display_name": "",
            "external_id": ""}

    receipt = desk.post("/desk/redeem", form, htmx=True).get_data(as_text=True)

    assert ('<a id="nav-call-backs" href="/desk/leads" class="attention" hx-swap-oob="true">Call-backs (1)</a>'
            in receipt)
    plain = desk.post("/desk/redeem", dict(form, full_name="Ma Li", phone="13977770003"), htmx=True)
    assert plain.status_code == 200 and "nav-call-backs" not in plain.get_data(as_text=True)


def _review_for(referrer, phone: str, make_patient, actor):
    """An existing patient with ``phone`` whom the desk sent for approval as the referrer's friend."""
    existing, _token = make_patient(full_name="Zhou Fan", phone=phone)
    return milestones.send_existing_patient_for_review(referrer.personal_code, existing.id, actor)


def test_approving_an_existing_patient_converts_their_request_in_the_same_transaction(
        referrer, make_patient, make_lead, actor, manager_user):
    lead = make_lead(referrer, phone="13977770001")
    other, _token = make_patient(full_name="Sun Yue")
    theirs = make_lead(other, phone="13977770001")  # the same phone through another referrer's code stays open
    review = _review_for(referrer, "13977770001", make_patient, actor)
    assert {found.id: found.status for found in all_leads()} == {lead.id: "new", theirs.id: "new"}

    milestones.decide_review(review.id, True, "Knows the referrer", Actor(staff_id=manager_user.id))

    by_id = {found.id: found for found in all_leads()}
    referral_id = db.session.scalar(select(Referral.id).where(Referral.friend_id == review.patient_id))
    assert (by_id[lead.id].status, by_id[lead.id].converted_referral_id) == ("converted", referral_id)
    assert by_id[lead.id].status_changed_by_id == manager_user.id
    assert by_id[theirs.id].status == "new"
    [event] = [event for event in audited("redemption") if event.details.get("approved_review") == review.id]
    assert event.details["call_back"] is True


def test_a_rejected_review_or_one_without_a_request_converts_nothing(referrer, make_patient, make_lead, actor,
                                                                    manager_user):
    lead = make_lead(referrer, phone="13977770001")
    rejected = _review_for(referrer, "13977770001", make_patient, actor)
    milestones.decide_review(rejected.id, False, "Not a friend", Actor(staff_id=manager_user.id))
    assert all_leads()[0].status == "new"
    approved = _review_for(referrer, "13977770009", make_patient, actor)
    milestones.decide_review(approved.id, True, "Knows the referrer", Actor(staff_id=manager_user.id))
    assert [(found.id, found.status) for found in all_leads()] == [(lead.id, "new")]
    [event] = [event for event in audited("redemption") if event.details.get("approved_review") == approved.id]
    assert "call_back" not in event.details


def test_a_request_renewed_after_the_approval_stays_converted(referrer, make_patient, make_lead, actor, manager_user):
    """The friend asks again from the invite page once linked: their request was answered, it is not reopened."""
    make_lead(referrer, phone="13977770001")
    review = _review_for(referrer, "13977770001", make_patient, actor)
    milestones.decide_review(review.id, True, "Knows the referrer", Actor(staff_id=manager_user.id))
    make_lead(referrer, phone="13977770001")
    assert [found.status for found in all_leads()] == ["converted"]


def test_the_desk_sending_a_friend_for_approval_is_told_they_asked(desk, referrer, make_patient, make_lead):
    lead = make_lead(referrer, name="Lucy", phone="13977770001")
    make_patient(full_name="Zhou Fan", phone="13977770001")
    form = {"code": referrer.personal_code, "full_name": "Zhou Fan", "phone": "13977770001", "display_name": "",
            "external_id": ""}
    refused = desk.post("/desk/redeem", form, htmx=True)
    assert refused.status_code == 409 and "This friend asked to be called back" in refused.get_data(as_text=True)

    sent = desk.post("/desk/review", form, htmx=True).get_data(as_text=True)

    assert "Sent for manager approval" in sent
    assert f"This friend asked to be called back on {_day(lead.consent_at)} (Lucy, 139****0001)." in sent
    assert "The request is closed when a manager approves." in sent


def _day(moment) -> str:
    """A stored time as the desk's pages write its day (English, the clinic's time zone)."""
    with current_app.test_request_context():
        return local_date(moment)
