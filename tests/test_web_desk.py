"""The desk page through HTTP, as htmx and as a plain form: look up, redeem, print, spend."""

import re

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Patient, Voucher
from clinic.services import redemption, vouchers
from clinic.services.transaction import Actor
from clinic.services.urls import voucher_url
from tests.conftest import counts, friend
from tests.test_redemption import wrong_check

FRIEND_FORM = {"full_name": "Chen Jie", "phone": "139 3333 4444", "display_name": "", "external_id": ""}


def form_key(page: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)


def test_the_desk_page_has_one_autofocused_code_field(desk):
    page = desk.get("/desk/").get_data(as_text=True)
    assert re.search(r'<input id="code" name="code"[^>]*autofocus', page)
    assert 'hx-trigger="input changed delay:300ms"' in page
    assert 'aria-live="polite"' in page


def test_a_scanned_poster_url_shows_the_masked_referrer_and_the_offer(desk, referrer):
    response = desk.post("/desk/lookup", {"code": f"https://clinic.test/r/{referrer.personal_code}"}, htmx=True)
    assert response.status_code == 200
    panel = response.get_data(as_text=True)
    assert panel.lstrip().startswith('<section id="desk-panel"')
    assert "Wang L." in panel and "Wang Li" not in panel
    assert "1 bed-day waived" in panel
    assert 'name="idempotency_key"' in panel


@pytest.mark.parametrize("code_for, status, message", [
    (lambda r: wrong_check(r.personal_code), 422, "looks mistyped"),
    (lambda r: "2222-2222", 422, "looks mistyped"),
    (lambda r: "ABC", 422, "wrong number of characters"),
    (lambda r: "<b>hi</b>", 422, "only letters and digits"),
    (lambda r: "0000000" + "0", 404, "No patient holds this code"),
])
def test_lookup_explains_what_is_wrong(desk, referrer, code_for, status, message):
    response = desk.post("/desk/lookup", {"code": code_for(referrer)}, htmx=True)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


def test_a_code_lookup_reads_without_opening_a_database_transaction(desk, referrer):
    """The lookup before each redemption only reads: no BEGIN, and so on PostgreSQL no ROLLBACK at its end, which
    would make psycopg drop the redemption's prepared statements (transaction.read_only_session)."""
    from sqlalchemy import event

    from clinic.services.transaction import NO_BEGIN

    begun = []

    def on_begin(connection):
        options = connection.get_execution_options()
        begun.append(bool(options.get(NO_BEGIN)) or options.get("isolation_level") == "AUTOCOMMIT")

    code, token = referrer.personal_code, desk.csrf_token()
    db.session.commit()
    event.listen(db.engine, "begin", on_begin)
    try:
        response = desk.post("/desk/lookup", {"code": code}, htmx=True, csrf=False, headers={"X-CSRFToken": token})
    finally:
        event.remove(db.engine, "begin", on_begin)
    assert response.status_code == 200 and "Code accepted" in response.get_data(as_text=True)
    assert begun and all(begun), "every connection of the lookup read outside a database transaction"


@pytest.mark.parametrize("path", ["/desk/", "/patients/", "/admin/dashboard", "/admin/audit"])
def test_a_staff_page_opened_with_get_reads_without_opening_a_database_transaction(manager, path):
    """So on PostgreSQL it ends without a ROLLBACK, which would drop the connection's prepared statements."""
    from sqlalchemy import event

    from clinic.services.transaction import NO_BEGIN

    begun = []

    def on_begin(connection):
        options = connection.get_execution_options()
        begun.append(bool(options.get(NO_BEGIN)) or options.get("isolation_level") == "AUTOCOMMIT")

    db.session.commit()
    event.listen(db.engine, "begin", on_begin)
    try:
        response = manager.get(path)
    finally:
        event.remove(db.engine, "begin", on_begin)
    assert response.status_code == 200
    assert begun and all(begun), "every connection of the page read outside a database transaction"


def test_redeeming_through_htmx_shows_both_vouchers_ready_to_print(desk, referrer):
    lookup = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": form_key(lookup)}, htmx=True)
    assert response.status_code == 200
    panel = response.get_data(as_text=True)
    issued = db.session.scalars(select(Voucher).order_by(Voucher.id)).all()
    assert len(issued) == 2
    shown = lambda voucher: f"{voucher.code[:4]}-{voucher.code[4:8]}-{voucher.code[8:]}" in panel  # noqa: E731
    friend_voucher, referrer_voucher = sorted(issued, key=lambda voucher: voucher.beneficiary != "friend")
    assert shown(friend_voucher)
    # The referrer is not at the desk: their voucher's value is shown, never its code (all it takes to spend it).
    assert not shown(referrer_voucher) and voucher_url(referrer_voucher.code) not in panel
    assert f'id="voucher-{referrer_voucher.id}"' in panel
    assert panel.count('<svg') == 3  # the friend's voucher, invite link and progress link
    # The new row goes on top of the list the desk shows; the other rows are not drawn again.
    assert 'hx-swap-oob="afterbegin:#recent-rows"' in panel and panel.count('<tr id="recent-') == 1
    for svg in re.findall(r"<svg[^>]*>", panel):
        assert "viewBox" in svg and " width=" not in svg, "a fixed-size QR is cropped when CSS shrinks it"
    assert "data-print" in panel and "data-next-patient" in panel
    assert 'class="card printable"' in panel


def test_a_double_click_shows_the_same_result_and_creates_nothing_twice(desk, referrer):
    lookup = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    form = {**FRIEND_FORM, "code": referrer.personal_code, "idempotency_key": form_key(lookup)}
    first = desk.post("/desk/redeem", form, htmx=True).get_data(as_text=True)
    before = counts()
    second = desk.post("/desk/redeem", form, htmx=True)
    assert second.status_code == 200
    assert "already done" in second.get_data(as_text=True)
    codes_in = lambda page: set(re.findall(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", page))  # noqa: E731
    assert codes_in(second.get_data(as_text=True)) == codes_in(first)
    assert counts() == before


def test_without_javascript_the_redemption_redirects_to_its_result(desk, referrer):
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": "plain-form-key-0123456789"})
    assert response.status_code == 303
    page = desk.get(response.headers["Location"]).get_data(as_text=True)
    assert "both vouchers are issued" in page
    assert "/p/" in page or "<svg" in page


@pytest.mark.parametrize("changes, field_message", [
    ({"full_name": ""}, "Enter the full name"),
    ({"full_name": "x" * 121}, "at most 120 characters"),
    ({"phone": "call me"}, "only digits"),
    ({"phone": "123"}, "6 to 15 digits"),
    ({"phone": "13811112222"}, "own code"),
    ({"full_name": "Bad\x00Name"}, "cannot be printed"),
    ({"display_name": "y" * 61}, "at most 60"),
])
def test_bad_friend_details_re_render_the_form_with_the_error(desk, referrer, changes, field_message):
    before = counts()
    response = desk.post("/desk/redeem", {**FRIEND_FORM, **changes, "code": referrer.personal_code}, htmx=True)
    assert response.status_code in (409, 422)
    page = response.get_data(as_text=True)
    assert field_message in page
    assert 'name="full_name"' in page, "the form stays so that the desk can correct it"
    assert counts() == before


def test_a_friend_who_is_already_a_patient_is_refused_on_the_phone_field(desk, referrer, make_patient):
    make_patient(full_name="Chen Jie", phone="13933334444")
    before = counts()
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code}, htmx=True)
    assert response.status_code == 409
    assert "already registered" in response.get_data(as_text=True)
    assert counts() == before


@pytest.mark.parametrize("name", ["王小明", "Zoë 🎉 Smith", "<script>alert('x')</script>", "Robert'); DROP TABLE patients;--"])
def test_unusual_names_are_stored_as_typed_and_escaped_on_every_page(desk, manager, referrer, name):
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "full_name": name, "code": referrer.personal_code}, htmx=True)
    assert response.status_code == 200
    patient = db.session.scalar(select(Patient).where(Patient.full_name == name))
    assert patient is not None
    for page in (response, desk.get(f"/patients/{patient.id}"), desk.get("/patients/?q=" + name[:3]),
                 manager.get("/admin/audit"), desk.get("/desk/")):
        assert page.status_code == 200
        assert "<script>alert('x')</script>" not in page.get_data(as_text=True)


def test_spending_a_voucher_at_the_desk(desk, referrer, actor):
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).friend_voucher
    lookup = desk.post("/desk/lookup", {"code": voucher.code.lower()}, htmx=True).get_data(as_text=True)
    assert "Mark spent" in lookup and "Chen J." in lookup
    key = form_key(lookup)
    spent = desk.post("/desk/spend", {"code": voucher.code, "idempotency_key": key}, htmx=True)
    assert spent.status_code == 200 and "Spent." in spent.get_data(as_text=True)
    assert "data-next-patient" in spent.get_data(as_text=True)
    replay = desk.post("/desk/spend", {"code": voucher.code, "idempotency_key": key}, htmx=True)
    assert replay.status_code == 200 and "Already marked spent" in replay.get_data(as_text=True)
    again = desk.post("/desk/spend", {"code": voucher.code, "idempotency_key": "another-key-0123456789"}, htmx=True)
    assert again.status_code == 409 and "already spent" in again.get_data(as_text=True)
    assert db.session.scalar(select(db.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "voucher.spent")) == 1


def test_looking_up_a_used_voucher_says_why_it_cannot_be_spent(desk, referrer, actor, manager_user):
    """A spent or void voucher showed only a small badge and no "Mark spent" button: the desk had to guess why."""
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    fresh = desk.post("/desk/lookup", {"code": result.friend_voucher.code}, htmx=True).get_data(as_text=True)
    assert "Mark spent" in fresh and 'class="alert alert-bad"' not in fresh
    vouchers.spend_voucher(result.friend_voucher.code, actor)
    spent = desk.post("/desk/lookup", {"code": result.friend_voucher.code}, htmx=True).get_data(as_text=True)
    assert 'role="alert" data-reason="already_spent">This voucher was already spent on ' in spent
    assert "Mark spent" not in spent
    vouchers.void_voucher(result.referrer_voucher.id, "Issued in error", Actor(staff_id=manager_user.id))
    void = desk.post("/desk/lookup", {"code": result.referrer_voucher.code}, htmx=True).get_data(as_text=True)
    assert "This voucher was voided: Issued in error." in void and "Mark spent" not in void


def test_nonsense_at_the_spend_endpoint_is_a_clear_4xx(desk):
    for code in ["", "!!!", "A" * 10000, "https://clinic.test/v/"]:
        response = desk.post("/desk/spend", {"code": code}, htmx=True)
        assert 400 <= response.status_code < 500
        assert 'class="alert alert-bad"' in response.get_data(as_text=True)


def test_a_refused_code_at_the_confirm_step_is_audited(desk, referrer):
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": wrong_check(referrer.personal_code)}, htmx=True)
    assert response.status_code == 422
    last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome, last.reason) == ("redemption", "refused", "mistyped_code")
