"""Pages anyone can open: invite, progress, voucher, health; privacy and caching headers."""

import html
import io
import re

import pytest

from clinic.services import codes, redemption, vouchers
from clinic.services.patients import rotate_progress_link
from clinic.services.transaction import Actor
from clinic.services.urls import invite_url
from tests.conftest import friend
from tests.test_web_admin import SETTINGS, image_bytes


@pytest.fixture
def invited(make_patient):
    """A patient who agreed to their name on posters (and so on the invite page their QR opens)."""
    patient, token = make_patient(full_name="王小明", display_name="王小明", phone="13811112222", name_on_posters=True)
    return patient, token


def test_the_invite_page_shows_the_offer_the_masked_referrer_and_the_code(browser, invited):
    patient, _ = invited
    response = browser.get(f"/r/{patient.personal_code}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "王**" in page and "王小明" not in page
    assert "1 bed-day waived" in page
    assert f"{patient.personal_code[:4]}-{patient.personal_code[4:]}" in page
    assert "Show this code at the front desk" in page
    assert "13811112222" not in page


@pytest.mark.app_settings(INVITE_OPENS_FLUSH_SECONDS=3600)
def test_the_invite_page_names_nobody_without_the_patient_s_consent(app, browser, make_patient):
    """Posters of a patient who did not agree to their name say "A friend invites you"; the page their QR opens
    used to say "王** recommends" all the same. And the page still costs one statement (its opens are written in
    batches, clinic/services/invite_opens.py, here held until the end)."""
    from sqlalchemy import event

    from clinic.extensions import db

    patient, _ = make_patient(full_name="王小明", display_name="小明", phone="13811112222")
    url = f"/r/{patient.personal_code}"
    browser.get(url)  # the process's first read of the settings snapshot takes more queries
    queries = []

    def count(connection, cursor, statement, *args):
        if not statement.startswith("BEGIN"):  # SQLite's explicit BEGIN (services/transaction.py)
            queries.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        page = browser.get(url).get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(queries) == 1
    assert app.extensions["invite_opens"].write() == 2
    assert "A friend recommends" in page and "recommends" not in page.replace("A friend recommends", "")
    assert "王" not in page and "小" not in page


@pytest.mark.parametrize("form", [str.lower, lambda c: f"{c[:4]}-{c[4:]}", lambda c: c.replace("1", "I")])
def test_the_invite_page_accepts_typed_variants_of_the_code(browser, invited, form):
    patient, _ = invited
    assert browser.get(f"/r/{form(patient.personal_code)}").status_code == 200


# A well-formed code with a valid check symbol that nobody holds (fixed, so parallel workers collect the same tests).
UNUSED_CODE = "ABCDEFG" + codes.check_symbol("ABCDEFG")


@pytest.mark.parametrize("path", ["/r/ZZZZZZZZ", "/r/2222-2222", "/r/" + UNUSED_CODE,
                                  "/r/<script>", "/r/" + "A" * 3000, "/r/王小明", "/r/a/b/c"])
def test_unknown_invite_codes_get_a_friendly_404(browser, path):
    response = browser.get(path)
    assert response.status_code == 404
    assert "could not find this code" in response.get_data(as_text=True)


def test_the_progress_page_is_private_and_shows_friends_and_rewards(app, browser, invited, actor):
    patient, token = invited
    result = redemption.redeem_code(patient.personal_code, friend(full_name="Lucy Wong"), actor)
    vouchers.spend_voucher(result.friend_voucher.code, actor)
    response = browser.get(f"/p/{token}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = response.get_data(as_text=True)
    assert "Lucy W." in page and "Lucy Wong" not in page
    assert f"https://clinic.test/r/{patient.personal_code}" in page
    assert "data-share-url" in page and "js/app.js" in page
    voucher = result.referrer_voucher
    assert f"{voucher.code[:4]}-{voucher.code[4:8]}-{voucher.code[8:]}" in page
    assert page.count("<svg") == 0  # the one active voucher's QR is an image of its own, fetched when shown
    assert re.findall(r'<img src="(/v/[^"]+/qr\.svg)"[^>]*loading="lazy"', page) == [f"/v/{voucher.code}/qr.svg"]
    assert "CN¥200.00 off" in page


def test_a_voucher_qr_is_served_from_a_url_that_names_only_the_code(app, browser, invited, actor):
    """Kept by the phone only (private): a voucher code is worth money to whoever holds it."""
    from clinic.services.qr import qr_svg
    from clinic.services.urls import voucher_url

    patient, _ = invited
    code = redemption.redeem_code(patient.personal_code, friend(), actor).referrer_voucher.code
    answer = browser.get(f"/v/{code}/qr.svg")
    assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
    assert answer.headers["Cache-Control"] == "private, max-age=86400"
    assert answer.get_data(as_text=True) == str(qr_svg(voucher_url(code))).replace(
        "<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    assert "https://clinic.test/v/" in voucher_url(code)
    for bad in ("not-a-code", patient.personal_code, "2222-2222-222"):  # nonsense, a personal code, a typo
        assert browser.get(f"/v/{bad}/qr.svg").status_code == 404


def test_the_progress_page_reads_friends_and_vouchers_only_when_there_are_some(app, browser, invited, actor):
    """A patient just given their link (the usual reader) costs one query; one with a friend, three."""
    from sqlalchemy import event

    from clinic.extensions import db

    patient, token = invited
    queries = []

    def count(connection, cursor, statement, *args):
        if not statement.startswith("BEGIN"):  # SQLite's explicit BEGIN (services/transaction.py)
            queries.append(statement)

    browser.get(f"/p/{token}")  # the process's first read of the settings snapshot takes three queries more
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert "Nobody yet" in browser.get(f"/p/{token}").get_data(as_text=True)
        alone = len(queries)
        redemption.redeem_code(patient.personal_code, friend(full_name="Lucy Wong"), actor)
        queries.clear()
        page = browser.get(f"/p/{token}").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert alone == 1
    assert len(queries) == 3 and "Lucy W." in page and "Nobody yet" not in page


def test_rotated_and_unknown_progress_tokens_get_the_same_404(browser, invited):
    patient, token = invited
    rotate_progress_link(patient.id, Actor())
    stale = browser.get(f"/p/{token}")
    unknown = browser.get("/p/" + "x" * 32)
    assert stale.status_code == unknown.status_code == 404
    assert stale.get_data() == unknown.get_data()
    assert stale.headers["Cache-Control"] == "no-store"
    assert browser.get("/p/" + "y" * 500).status_code == 404


def test_a_server_error_on_a_private_link_logs_its_route_not_its_token(browser, invited, monkeypatch, caplog):
    _patient, token = invited

    def broken(raw_token):
        raise RuntimeError("the database went away")
    monkeypatch.setattr("clinic.services.progress.progress_page", broken)
    assert browser.get(f"/p/{token}?phone=13812345678").status_code == 500
    assert "Unhandled error on GET /p/<token>" in caplog.text and "the database went away" in caplog.text
    assert token not in caplog.text and "13812345678" not in caplog.text


def test_a_scanned_voucher_qr_shows_its_value_but_nobody_s_name(browser, referrer, actor):
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).friend_voucher
    page = browser.get(f"/v/{voucher.code}").get_data(as_text=True)
    assert "1 bed-day waived" in page and "Chen" not in page and "Wang" not in page
    assert browser.get("/v/2222-2222-2222").status_code == 404


def test_every_page_carries_a_strict_content_security_policy(browser, invited):
    patient, token = invited
    for path in ["/login", f"/r/{patient.personal_code}", f"/p/{token}", "/r/unknown", "/"]:
        response = browser.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        page = response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", page), f"inline script on {path}"
        assert " style=" not in page and "<style" not in page, f"inline style on {path}"
        assert " hx-on" not in page


def test_htmx_is_configured_for_a_strict_csp(desk):
    page = desk.get("/desk/").get_data(as_text=True)
    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'", page).group(1)
    assert '"allowEval":false' in config and '"includeIndicatorStyles":false' in config
    assert '"historyCacheSize":0' in config
    assert "vendor/htmx-2.0.11.min.js" in page


def test_healthz(browser):
    response = browser.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_healthz_says_503_when_the_database_is_gone(app, browser, monkeypatch):
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    def broken(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(Session, "connection", broken)
    response = browser.get("/healthz")
    assert response.status_code == 503 and response.get_json()["status"] == "error"


def test_unknown_pages_and_methods_are_friendly(browser):
    assert browser.get("/no/such/page").status_code == 404
    assert browser.client.put("/login").status_code == 405
    assert browser.client.delete("/desk/lookup").status_code == 405


def test_livez_answers_without_touching_the_database(browser, monkeypatch):
    from clinic.extensions import db

    def no_database(*args, **kwargs):
        raise AssertionError("livez must not query the database")

    monkeypatch.setattr(db.session, "execute", no_database)
    response = browser.get("/livez")
    assert response.status_code == 200 and response.text == "ok\n"


def test_fixed_links_are_built_once_per_script_root(app):
    """templating.fixed_url remembers a static link, but not across the path prefix a proxy mounts the app at."""
    from clinic.web.templating import fixed_url

    for prefix in ("", "/clinic", ""):
        with app.test_request_context("/", base_url=f"http://localhost{prefix}/"):
            assert fixed_url("static", filename="css/public.css") == f"{prefix}/static/css/public.css"
            assert fixed_url("public.brand_css", palette=1) == f"{prefix}/brand.css?palette=1"


def test_pages_escape_what_they_print_as_jinja_does(app):
    """Templates print through escape_output (clinic/web/templating.py): text and other values escaped, Markup and
    objects with ``__html__`` as they are, and a ``{% autoescape false %}`` block left alone."""
    from markupsafe import Markup

    class Safe:
        def __html__(self):
            return "<i>safe</i>"

    source = "{{ text }}|{{ number }}|{{ markup }}|{{ safe }}|{% autoescape false %}{{ text }}{% endautoescape %}"
    with app.test_request_context("/"):
        rendered = app.jinja_env.from_string(source).render(
            text="<b>&'\"", number=7, markup=Markup("<b>ok</b>"), safe=Safe())
    assert rendered == "&lt;b&gt;&amp;&#39;&#34;|7|<b>ok</b>|<i>safe</i>|<b>&'\""


def _meta(page: str, key: str) -> str | None:
    """The content of the page's <meta property|name="key">, unescaped; None without one."""
    found = re.search(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)">', page)
    return html.unescape(found[1]) if found else None


def test_a_shared_invite_link_previews_the_clinic_the_masked_friend_and_the_gift(browser, invited):
    """Chat apps show a link's Open Graph title and description: what the page itself shows, masked as there."""
    patient, _ = invited
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    clinic = _meta(page, "og:site_name")
    assert _meta(page, "og:title") == f"An invitation to {clinic}"
    assert _meta(page, "og:description") == f"王** recommends {clinic}. Your welcome gift: 1 bed-day waived"
    assert _meta(page, "description") == _meta(page, "og:description")
    assert _meta(page, "og:url") == invite_url(patient.personal_code)  # the printed, canonical address
    assert _meta(page, "robots") == "noindex" and _meta(page, "og:image") is None  # no logo
    chinese = browser.get(f"/r/{patient.personal_code}?lang=zh_CN").get_data(as_text=True)
    assert _meta(chinese, "og:description").startswith(f"王**向您推荐{clinic}。您的见面礼：")
    assert "王小明" not in page + chinese and "13811112222" not in page + chinese


def test_a_shared_invite_link_of_someone_who_kept_their_name_says_a_friend(browser, make_patient):
    patient, _ = make_patient(full_name="王小明", display_name="王小明", name_on_posters=False)
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    assert _meta(page, "og:description").startswith("A friend recommends ")
    assert "王" not in page


def test_a_shared_invite_link_shows_the_clinic_logo_at_its_public_address(manager, browser, invited):
    response = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(image_bytes("PNG")), "logo.png")},
                            content_type="multipart/form-data")
    assert response.status_code in (200, 303), response.get_data(as_text=True)[:500]
    patient, _ = invited
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    image = _meta(page, "og:image")
    assert re.fullmatch(r"https://refer\.harbour\.example/uploads/logo-[0-9a-f]{16}\.png", image), image
    assert browser.get(image.removeprefix("https://refer.harbour.example")).status_code == 200
    assert _meta(page, "og:url") == f"https://refer.harbour.example/r/{patient.personal_code}"
