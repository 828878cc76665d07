"""Enrolment, search, the patient page, the welcome slip and rotating the progress link."""

import html
import re

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Patient
from clinic.services import codes, milestones, redemption
from clinic.services import patients as patient_service
from tests.conftest import counts, friend

ENROL = {"full_name": "Li Na", "display_name": "Na", "phone": "+86 138-0013-8000", "external_id": "MRN-77"}


def progress_link(page: str) -> str:
    return re.search(r'href="https://clinic\.test(/p/[A-Za-z0-9_\-]+)"', page).group(1)


def test_enrolment_creates_a_code_and_shows_the_progress_link_on_the_welcome_slip(desk):
    response = desk.post("/patients/new", ENROL)
    assert response.status_code == 303
    slip = desk.get(response.headers["Location"]).get_data(as_text=True)
    patient = db.session.scalar(select(Patient).where(Patient.full_name == "Li Na"))
    assert patient.phone == "13800138000"  # one spelling: the clinic's own country code is dropped
    assert codes.has_valid_check(patient.personal_code)
    assert f"{patient.personal_code[:4]}-{patient.personal_code[4:]}" in slip
    assert slip.count("<svg") == 2  # invite QR and progress QR
    link = progress_link(slip)
    progress = desk.get(link)
    assert progress.status_code == 200 and "Hello Na" in progress.get_data(as_text=True)


def test_rotating_the_progress_link_stops_the_old_one_at_once(desk):
    slip = desk.get(desk.post("/patients/new", ENROL).headers["Location"]).get_data(as_text=True)
    old_link = progress_link(slip)
    patient = db.session.scalar(select(Patient))
    response = desk.post(f"/patients/{patient.id}/progress-link")
    assert response.status_code == 303
    new_link = progress_link(desk.get(response.headers["Location"]).get_data(as_text=True))
    assert new_link != old_link
    assert desk.get(new_link).status_code == 200
    stale = desk.get(old_link)
    assert stale.status_code == 404
    assert desk.get("/p/never-issued-token-000000000000").get_data(as_text=True) == stale.get_data(as_text=True)


def test_the_progress_token_is_stored_only_as_a_hash(desk):
    slip = desk.get(desk.post("/patients/new", ENROL).headers["Location"]).get_data(as_text=True)
    token = progress_link(slip).removeprefix("/p/")
    patient = db.session.scalar(select(Patient))
    assert token not in patient.progress_token_hash
    assert len(token) >= 22  # at least 128 random bits in url-safe base64


BAD_PATIENT_DETAILS = [
    ({"full_name": ""}, "Enter the full name"),
    ({"full_name": "   "}, "Enter the full name"),
    ({"full_name": "x" * 10_000}, "at most 120"),
    ({"phone": "12ab34"}, "only digits"),
    ({"phone": "+" + "1" * 20}, "6 to 15 digits"),
    ({"external_id": "e" * 65}, "at most 64"),
    ({"display_name": "Bad\u202eName"}, "cannot be printed"),
]


@pytest.mark.parametrize("changes, message", BAD_PATIENT_DETAILS)
def test_bad_enrolment_input_re_renders_with_the_error_and_keeps_values(desk, changes, message):
    before = counts()
    response = desk.post("/patients/new", {**ENROL, **changes})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert 'value="MRN-77"' in page or "external_id" in changes
    assert counts() == before


def test_enrolling_the_same_phone_twice_is_refused(desk):
    desk.post("/patients/new", ENROL)
    before = counts()
    response = desk.post("/patients/new", {**ENROL, "external_id": ""})
    assert response.status_code == 422
    assert "already registered" in response.get_data(as_text=True)
    assert counts() == before


@pytest.mark.parametrize("query_for", [
    lambda p: "Li N", lambda p: "li na", lambda p: "0013", lambda p: "MRN-77",
    lambda p: p.personal_code.lower(), lambda p: f"{p.personal_code[:4]}-{p.personal_code[4:]}",
    lambda p: p.personal_code[:4],
])
def test_live_search_finds_by_name_phone_record_number_and_code(desk, make_patient, query_for):
    make_patient(full_name="Somebody Else", phone="13999999999")
    desk.post("/patients/new", ENROL)
    patient = db.session.scalar(select(Patient).where(Patient.full_name == "Li Na"))
    rows = desk.get("/patients/", query_string={"q": query_for(patient)}, htmx=True).get_data(as_text=True)
    assert rows.lstrip().startswith('<div id="patient-rows">')
    assert "Li Na" in rows and "Somebody Else" not in rows
    assert "138****8000" in rows or "+86****8000" in rows or "+86" in rows


def test_live_search_says_how_many_it_found(desk, make_patient, monkeypatch):
    """The sentence a screen reader hears after each search (#patient-count, filled out of band into the page's live
    region; tests/test_accessibility.py checks it is read): a count, and at the limit that the list is cut."""
    monkeypatch.setattr(patient_service, "SEARCH_LIMIT", 2)
    for name in ("Li Na", "Li Na", "Li Na", "Wang Wu"):
        make_patient(full_name=name)

    def said(query: str) -> str:
        rows = desk.get("/patients/", query_string={"q": query}, htmx=True).get_data(as_text=True)
        found = re.search(r'<p id="patient-count" hx-swap-oob="innerHTML">([^<]*)</p>', rows)
        return html.unescape(found.group(1)) if found else rows

    assert said("Wang Wu") == "1 patient found"
    assert said("Li Na") == "The first 2 patients found: type more to narrow the search."
    assert said("Nobody") == "No patient matches “Nobody”."
    assert said("") == "The 2 newest patients"
    page = desk.get("/patients/", query_string={"q": "Wang Wu"}).get_data(as_text=True)
    assert '<p id="patient-count" class="muted" role="status">1 patient found</p>' in page
    assert "hx-swap-oob" not in page


@pytest.mark.parametrize("query", ["%", "_", "\\", "'", "<script>", "王", "🎉", "x" * 5000, "\x00"])
def test_search_survives_any_query(desk, make_patient, query):
    make_patient(full_name="Li Na")
    response = desk.get("/patients/", query_string={"q": query}, htmx=True)
    assert response.status_code == 200
    assert "<script>" not in response.get_data(as_text=True).replace("&lt;script&gt;", "")


def test_the_patient_page_shows_the_timeline(desk, referrer, actor):
    from clinic.services import redemption
    from tests.conftest import friend

    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    page = desk.get(f"/patients/{referrer.id}").get_data(as_text=True)
    assert "Chen Jie" in page and "voucher.issued" in page and "redemption" in page
    assert "138****2222" in page and "13811112222" not in page
    friend_page = desk.get(f"/patients/{result.friend.id}").get_data(as_text=True)
    assert "Wang Li" in friend_page


def test_unknown_patient_pages_are_404(desk):
    assert desk.get("/patients/999999").status_code == 404
    assert desk.get("/patients/999999/welcome").status_code == 404
    assert desk.post("/patients/999999/progress-link").status_code == 404


def test_a_refused_poster_consent_is_said_on_the_consent_form(desk, referrer):
    """Agreeing to a name on posters for a patient without a display name (a page opened before it was removed)
    used to be a flash after a redirect; now it is the patient's page with the message at the form, 422."""
    before = counts()
    response = desk.post(f"/patients/{referrer.id}/poster-consent", {"name_on_posters": "yes"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    form = page[page.index(f'action="/patients/{referrer.id}/poster-consent"'):]
    form = form[:form.index("</form>")]
    assert ('<p class="field-error" id="name_on_posters-error" role="alert">Add a display name first: it is the name '
            'a poster would show.</p>') in form
    # The way to a display name, which the message describes (the consent's button is gone without one).
    assert re.search(rf'<a href="/patients/{referrer.id}/details" [^>]*aria-describedby="name_on_posters-error"', form)
    assert 'role="status"' not in page
    assert counts() == before and db.session.get(Patient, referrer.id).name_on_posters is False


def test_the_patient_page_says_where_each_referred_friend_is_and_its_timeline_reads_for_people(desk, actor, referrer):
    """Staff see which friends came and paid (the referrer's next reward may wait on it), and the timeline names the
    campaign and the referrer and groups the code as printed, instead of database ids."""
    came = redemption.redeem_code(referrer.personal_code, friend("Came Once", "13900000001"), actor).friend
    paid = redemption.redeem_code(referrer.personal_code, friend("Paid Too", "13900000002"), actor).friend
    redemption.redeem_code(referrer.personal_code, friend("Not Yet", "13900000003"), actor)
    milestones.record_visit(came.id, actor)
    milestones.record_payment(paid.id, 68000, actor)

    page = " ".join(html.unescape(desk.get(f"/patients/{referrer.id}").get_data(as_text=True)).split())
    friends = re.search(r"Friends they referred \(3\)</h2>(.*?)</ul>", page).group(1)
    states = dict(re.findall(r">([A-Za-z ]+)</a> · <span class=\"nowrap\">[\d-]+ [\d:]+</span> · "
                             r"(?:<span class=\"(?:muted|nowrap)\">)?([A-Za-z]+ ?[\w-]*)", friends))
    assert states["Came Once"].startswith("Visited ") and states["Paid Too"].startswith("Paid ")
    assert states["Not Yet"] == "not visited"
    # Each date keeps to one line (a Chinese one broke as "2026年11" / "月25日"): the line breaks at " · " only.
    assert re.search(r'· <span class="nowrap">Paid [\d-]+</span>', friends)
    assert re.search(r'· <span class="nowrap">Visited [\d-]+</span>', friends)
    timeline = re.search(r'<ul class="timeline">(.*?)</ul>', page).group(1)
    code = codes.format_code(referrer.personal_code)
    assert f"code: {code}; referrer: {referrer.full_name}; campaign: Bring a friend" in timeline
    assert "campaign id" not in timeline and "referrer id" not in timeline
    assert "rewards paid: none" in timeline  # the payment paid nothing more: all was paid at redemption


def test_the_timeline_says_who_a_voucher_is_for_and_its_kind_in_the_reader_s_language(desk, actor, referrer):
    """The stored words ("friend", "service") showed untranslated in a Chinese timeline."""
    redemption.redeem_code(referrer.personal_code, friend("Chen Jie", "13900000001"), actor)
    assert desk.post("/account/language", {"language": "zh_CN", "next": "/desk/"}).status_code == 303
    page = html.unescape(desk.get(f"/patients/{referrer.id}").get_data(as_text=True))
    timeline = re.search(r'<ul class="timeline">(.*?)</ul>', page, re.S).group(1)
    assert "受益方: 被推荐人" in timeline and "受益方: 推荐人" in timeline
    assert "类型: 指定服务" in timeline and "类型: 现金抵扣" in timeline
    assert not re.search(r": (friend|referrer|service|money)\b", timeline)
