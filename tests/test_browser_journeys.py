"""The main journeys in a real browser (Debian's Chromium driven by Playwright), in English and in Chinese.

Each journey is one test, run once per language against that language's clinic (tests/browser_harness.py:
the real app under gunicorn on 127.0.0.1, a fresh SQLite database made by the real migrations). The
journeys do not depend on each other's order: what one needs from an earlier one (a campaign, an enrolled
patient, a redeemed friend) is seeded through the services when it is missing. Every page's console
must stay free of errors and Content-Security-Policy violations; every step leaves a screenshot in
test-artifacts/screenshots/<lang>/ (with UPDATE_SCREENSHOTS=1 the README's pictures are refreshed too).

SQLite only, even when TEST_DATABASE_URL is set: what is under test here is the browser's side (pages,
htmx, focus, CSP, languages), which is the same on both databases; the database's side (concurrency,
exactly-once) is proven on both by tests/test_gunicorn_races.py and the service tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest
import zxingcpp
from playwright.sync_api import expect
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Patient, Referral, Voucher
from clinic.services.patients import PatientDetails
from clinic.services.privacy import mask_name
from clinic.services.redemption import redeem_code
from clinic.services.transaction import Actor
from tests.browser_harness import (
    CAMPAIGNS,
    DESK,
    LANGUAGES,
    MANAGER,
    PEOPLE,
    PUBLIC_ADDRESSES,
    Journey,
    enrol,
    ensure_campaign,
    log_in,
    new_phone,
    redeem,
    watched,
)

pytestmark = pytest.mark.browser

HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}
# A few of the clinic's own words (DESIGN.md's glossary) each page shows in Chinese. Every other check is
# made on ids, names, data- attributes and URLs, so that it holds in any language.
CHINESE = {
    "settings": ["诊所设置"],
    "campaigns": ["活动"],
    "enrol": ["专属推荐码"],
    "invite": ["前台"],
    "desk": ["扫码"],
    "offer": ["代金券"],
    "receipt": ["代金券", "核销"],
    "progress": ["推荐", "奖励"],
    "spend": ["代金券"],
    "cards": ["刮刮卡"],
}
# English a Chinese page may show: the time zone's name, file formats, the language switch's own name.
ENGLISH_ALLOWED = {"Asia", "Shanghai", "Singapore", "WebP", "English", "Noto", "Sans"}
# Each test's short name, for its screenshots: test-artifacts/screenshots/<lang>/<name>-<step>.png
JOURNEYS = {
    "test_manager_sets_up_the_clinic": "setup",
    "test_desk_enrols_a_patient_and_prints_the_welcome_slip": "enrol",
    "test_friend_opens_the_invite_on_a_phone": "invite",
    "test_desk_redeems_by_scanning": "redeem",
    "test_patient_sees_progress_on_a_phone": "progress",
    "test_desk_spends_the_voucher": "spend",
    "test_card_batch_runs_and_downloads": "cards",
    "test_long_unbroken_names_print_at_full_size": "long-names",
}
# The name and brand colour the manager gives the clinic (it starts as tests/browser_harness.CLINIC_LOOKS).
SET_UP = {"en": ("Riverside Family Dental", "#7c3aed"), "zh_CN": ("康宁口腔门诊部", "#0e7490")}
CARD_WORDS = {"en": "friend", "zh_CN": "朋友"}
# A real family name (60 letters, no space: the form's limit for a name on posters), and a longer full name.
LONG_NAME = "Wolfeschlegelsteinhausenbergerdorffvoralternwarengewissenhaft"[:60]
LONG_FULL_NAME = "Hubertwolfeschlegelsteinhausenbergerdorffvoralternwarengewissenhaftschaferswessenschafewarenwohl"
RECEIPT_QR_MM = 22  # the QR codes print 30 mm wide (the symbol a little less): a shrunk slip has them under 20
RECENT_ROWS = 10  # what the desk lists of its latest redemptions
CARD_BATCH_SIZE = 12  # two A4 sheets: enough for the job to report progress, small enough to be quick


@pytest.fixture
def browser(chromium):
    """Debian's Chromium (tests/browser_harness.py), under the name these journeys have always used."""
    return chromium


@pytest.fixture
def journey(request, browser, site):
    """The journey's browsers; after the test, no page may have logged an error or a CSP violation."""
    yield from watched(Journey(browser, site, JOURNEYS[request.node.originalname]))


def expect_language(page, language: str, words: list[str]) -> None:
    """The page is in ``language``: its <html lang>; in Chinese, the given words and no English sentence left."""
    assert page.locator("html").get_attribute("lang") == HTML_LANG[language], page.url
    if language == "zh_CN":
        text = page.locator("main").inner_text()
        missing = [word for word in words if word not in text]
        assert not missing, f"{path_of(page)} does not say {missing}:\n{text[:800]}"
        english = untranslated(text)
        assert not english, f"{path_of(page)} still shows English: {english}"


def untranslated(text: str) -> list[str]:
    """English words in a page's text, leaving out URLs, codes and abbreviations (QR, PDF, CSV)."""
    text = re.sub(r"\S+://\S+|\S+@\S+", " ", text)
    words = re.findall(r"[A-Za-z][A-Za-z'’]+", text)
    return sorted({word for word in words if not word.isupper() and word not in ENGLISH_ALLOWED})


def expect_no_horizontal_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px on a phone"


def path_of(page) -> str:
    return re.sub(r"^https?://[^/]+", "", page.url)


def printed_pages(journey, page, step: str) -> int:
    """How many pages Chromium prints the page on, at the size its CSS asks (an 80 mm receipt roll).

    The PDF is kept beside the journey's screenshots, to look at.
    """
    path = journey.folder / f"{journey.name}-{step}.pdf"
    pdf = pdfium.PdfDocument(page.pdf(path=str(path), prefer_css_page_size=True))
    try:
        return len(pdf)
    finally:
        pdf.close()


def printed_qr_widths_mm(journey, step: str) -> list[float]:
    """The width of each QR symbol on the first page of a printout saved by printed_pages, in millimetres."""
    dpi = 200
    pdf = pdfium.PdfDocument(journey.folder / f"{journey.name}-{step}.pdf")
    try:
        image = pdf[0].render(scale=dpi / 72).to_pil()
    finally:
        pdf.close()
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    return [(r.position.top_right.x - r.position.top_left.x) / dpi * 25.4 for r in found]


def printed_text(journey, step: str) -> str:
    pdf = pdfium.PdfDocument(journey.folder / f"{journey.name}-{step}.pdf")
    try:
        return "".join(page.get_textpage().get_text_range() for page in pdf)
    finally:
        pdf.close()


def follow(page, selector: str) -> None:
    """Click a link or a submit button and wait for the page it leads to."""
    with page.expect_navigation():
        page.locator(selector).first.click()


def test_manager_sets_up_the_clinic(journey, site):
    language = journey.language
    page = journey.context().new_page()
    page.goto("/login")
    journey.shot(page, "login")
    log_in(page, MANAGER)
    if language == "zh_CN":
        # The clinic's default language greets everyone; the switch in the top bar is each person's own.
        expect_language(page, "zh_CN", [])
        follow(page, "form.language-switch button[value=en]")
        expect_language(page, "en", [])
        follow(page, "form.language-switch button[value=zh_CN]")
    expect_language(page, language, [])

    follow(page, "header.topbar a[href='/admin/settings']")
    name, colour = SET_UP[language]
    assert page.input_value("#name") != name
    page.fill("#name", name)
    page.fill("#phone", "021 5555 0199")
    page.fill("#brand_colour", colour)
    page.select_option("#language", language)  # the clinic's default language
    page.fill("#public_base_url", PUBLIC_ADDRESSES[language])
    journey.shot(page, "settings")
    follow(page, "main form button[type=submit]")
    assert path_of(page) == "/admin/settings"
    expect_language(page, language, CHINESE["settings"])
    assert page.input_value("#name") == name
    assert page.input_value("#language") == language
    assert page.locator("header.topbar .brand").inner_text().strip() == name
    assert colour in page.request.get("/brand.css").text()
    journey.shot(page, "settings-saved")

    follow(page, "header.topbar a[href='/admin/campaigns']")
    in_force = page.locator("#campaigns tr:has(.in-force)")
    if in_force.count():
        follow(page, "#campaigns tr:has(.in-force) td a")
    else:
        follow(page, "main a[href='/admin/campaigns/new']")
    terms = CAMPAIGNS[language]
    page.fill("#name", terms["name"])
    page.check("#referrer_reward_kind-0")  # money off
    page.fill("#referrer_reward_amount", terms["referrer_amount"])
    page.check("#referrer_reward_stage-0")  # at the redemption
    page.check("#friend_reward_kind-1")  # a named service
    page.fill("#friend_reward_label", terms["friend_label"])
    page.check("#friend_reward_stage-0")
    page.fill("#voucher_valid_days", "90")
    journey.shot(page, "campaign")
    follow(page, "main form button[type=submit]")
    assert path_of(page) == "/admin/campaigns"
    in_force = page.locator("#campaigns tr:has(.in-force)")
    assert in_force.count() == 1
    row = in_force.inner_text()
    assert terms["name"] in row and terms["friend_label"] in row and "200" in row
    expect_language(page, language, CHINESE["campaigns"])
    journey.shot(page, "campaigns")

    # A friend's phone, not logged in, gets the clinic's language.
    public = journey.context(phone=True).new_page()
    public.goto("/login")
    expect_language(public, language, [])


def test_desk_enrols_a_patient_and_prints_the_welcome_slip(journey, site):
    ensure_campaign(site)
    language = journey.language
    page = journey.staff_page(DESK)
    expect_language(page, language, [])
    follow(page, "header.topbar a[href='/patients/new']")
    full_name, display_name = PEOPLE[language]["referrer"]
    phone = new_phone()
    page.fill("#full_name", full_name)
    page.fill("#display_name", display_name)
    page.check("#name_on_posters")
    page.fill("#phone", phone)
    journey.shot(page, "form")
    follow(page, "main form button[type=submit]")
    assert re.fullmatch(r"/patients/\d+/welcome", path_of(page)), page.url

    slip = page.locator("#welcome-slip")
    with site.database():
        patient = db.session.scalar(select(Patient).where(Patient.phone == phone))
        assert patient is not None and patient.full_name == full_name
        code = patient.personal_code
    assert slip.locator(".code-xl").inner_text().replace("-", "").strip() == code
    assert slip.locator("svg").count() >= 2  # the invite QR and the progress QR
    assert slip.locator("a[href*='/p/']").count() == 1
    assert f"{PUBLIC_ADDRESSES[language]}/r/{code}" in slip.inner_text()
    expect_language(page, language, CHINESE["enrol"])
    journey.shot(page, "welcome")

    page.evaluate("() => { window.__printed = 0; window.print = () => { window.__printed += 1; }; }")
    page.click("#welcome-slip [data-print]")
    assert page.evaluate("window.__printed") == 1
    page.emulate_media(media="print")
    assert not page.locator("header.topbar").is_visible()
    assert not page.locator("#welcome-slip [data-print]").is_visible()
    journey.shot(page, "welcome-print")
    assert printed_pages(journey, page, "welcome") == 1  # the slip alone, no blank page after it


def test_friend_opens_the_invite_on_a_phone(journey, site):
    ensure_campaign(site)
    language = journey.language
    referrer = enrol(site)
    page = journey.context(phone=True).new_page()
    page.goto(site.local(referrer.invite_url))
    expect_language(page, language, CHINESE["invite"])
    assert page.locator(".big-code").inner_text().replace("-", "").strip() == referrer.code
    assert mask_name(PEOPLE[language]["referrer"][1]) in page.locator(".hero").inner_text()
    assert CAMPAIGNS[language]["friend_label"] in page.locator(".offer").inner_text()
    code_size = page.locator(".big-code").evaluate("code => parseFloat(getComputedStyle(code).fontSize)")
    assert code_size >= 28, f"the code to show at the desk is small on a phone: {code_size}px"
    expect_no_horizontal_scroll(page)
    journey.shot(page, "phone")


def test_desk_redeems_by_scanning(journey, site):
    ensure_campaign(site)
    language = journey.language
    for _ in range(RECENT_ROWS):  # a busy desk: its list of recent redemptions is full
        redeem(site)
    referrer = enrol(site)
    page = journey.staff_page(DESK)
    assert path_of(page) == "/desk/"
    expect_language(page, language, CHINESE["desk"])
    assert page.evaluate("document.activeElement.id") == "code"
    # A USB scanner types the QR's URL and presses Enter.
    page.keyboard.type(referrer.invite_url, delay=5)
    page.keyboard.press("Enter")
    redeem_form = page.locator("#desk-panel form[action$='/desk/redeem']")
    redeem_form.wait_for()
    expect_language(page, language, CHINESE["offer"])
    journey.shot(page, "offer")
    full_name, display_name = PEOPLE[language]["friend"]
    redeem_form.locator("[name=full_name]").fill(full_name)
    redeem_form.locator("[name=phone]").fill(new_phone())
    redeem_form.locator("[name=display_name]").fill(display_name)
    redeem_form.locator("button[type=submit]").click()
    receipt = page.locator("#receipt")
    receipt.wait_for()
    vouchers = receipt.locator(".voucher")
    assert vouchers.count() == 2
    assert CAMPAIGNS[language]["friend_label"] in vouchers.nth(0).inner_text()
    assert "200" in vouchers.nth(1).inner_text()
    # Ready for the next patient: the code field is empty and has the focus.
    # Not wait_for_function: when it has to poll, Playwright evaluates its string with eval, which the CSP refuses.
    expect(page.locator("#code")).to_be_focused()
    assert page.input_value("#code") == ""
    with site.database():
        referral = db.session.scalar(select(Referral).where(Referral.referrer_id == referrer.patient_id))
        assert referral is not None
        issued = {(v.beneficiary, v.patient_id) for v in db.session.scalars(
            select(Voucher).where(Voucher.referral_id == referral.id))}
        assert issued == {("referrer", referrer.patient_id), ("friend", referral.friend_id)}
        referral_id = referral.id
    expect_language(page, language, CHINESE["receipt"])
    journey.shot(page, "done")
    # The receipt alone on one page: the desk's list of recent redemptions (hidden in print) adds no blank page,
    # neither under the desk nor on the receipt's own page.
    assert printed_pages(journey, page, "receipt") == 1
    page.goto(f"/desk/redemptions/{referral_id}")
    assert page.locator("#receipt").count() == 1
    assert printed_pages(journey, page, "receipt-page") == 1


def test_patient_sees_progress_on_a_phone(journey, site):
    language = journey.language
    redeemed = redeem(site)
    page = journey.context(phone=True).new_page()
    page.goto(site.local(redeemed.referrer.progress_url))
    expect_language(page, language, CHINESE["progress"])
    friends = page.locator(".friend-list li")
    assert friends.count() == 1
    assert mask_name(redeemed.friend_name) in friends.inner_text()
    assert page.locator("#funnel strong").first.inner_text() == "1"
    rewards = page.locator(".reward-list li")
    assert rewards.count() == 1
    assert "200" in rewards.inner_text() and rewards.locator(".status-active").count() == 1
    assert redeemed.referrer_voucher_code[:4] in rewards.inner_text()
    expect_no_horizontal_scroll(page)
    journey.shot(page, "phone")


def test_desk_spends_the_voucher(journey, site):
    language = journey.language
    redeemed = redeem(site)
    page = journey.staff_page(DESK)
    page.keyboard.type(redeemed.voucher_url, delay=5)
    page.keyboard.press("Enter")
    spend_form = page.locator("#desk-panel form[action$='/desk/spend']")
    spend_form.wait_for()
    assert page.locator("#desk-panel .status-active").count() == 1
    journey.shot(page, "voucher")
    spend_form.locator("button[type=submit]").click()
    page.locator("#desk-panel [data-next-patient] .status-spent").wait_for()
    # Not wait_for_function: when it has to poll, Playwright evaluates its string with eval, which the CSP refuses.
    expect(page.locator("#code")).to_be_focused()
    with site.database():
        voucher = db.session.scalar(select(Voucher).where(Voucher.code == redeemed.referrer_voucher_code))
        assert voucher.status == "spent"
    expect_language(page, language, CHINESE["spend"])
    journey.shot(page, "spent")


def test_long_unbroken_names_print_at_full_size(journey, site):
    """A name longer than the 80 mm roll is wide wraps inside the slip: Chromium does not shrink the whole
    slip to fit it (its QR codes then print too small to scan well) nor cut the name off."""
    ensure_campaign(site)
    page = journey.staff_page(DESK)
    page.goto("/patients/new")
    page.fill("#full_name", LONG_FULL_NAME)
    page.fill("#display_name", LONG_NAME)
    page.fill("#phone", new_phone())
    follow(page, "main form button[type=submit]")
    assert re.fullmatch(r"/patients/\d+/welcome", path_of(page)), page.url
    code = page.locator("#welcome-slip .code-xl").inner_text().replace("-", "").strip()

    with site.database():
        result = redeem_code(code, PatientDetails(full_name=LONG_FULL_NAME, display_name=LONG_NAME,
                                                  phone=new_phone()), Actor())
        referral_id = result.referral.id
    for step, path in (("welcome", None), ("receipt", f"/desk/redemptions/{referral_id}")):
        if path:
            page.goto(path)
        assert printed_pages(journey, page, step) == 1
        widths = printed_qr_widths_mm(journey, step)
        assert len(widths) >= 2 and min(widths) >= RECEIPT_QR_MM, f"{step}: QR codes {widths} mm wide"
        assert LONG_NAME in re.sub(r"\s", "", printed_text(journey, step)), f"{step}: the name is cut"


# Records what the batch page shows each time htmx replaces it: the progress bar, then the download link.
PROGRESS_RECORDER = """
window.__batch = [];
new MutationObserver(function () {
  var bar = document.querySelector("#batch-status progress");
  var pdf = document.querySelector("#batch-status a[href$='cards.pdf']");
  var seen = bar ? [Number(bar.value), Number(bar.max)] : (pdf ? "done" : null);
  var last = window.__batch[window.__batch.length - 1];
  if (seen && JSON.stringify(seen) !== JSON.stringify(last)) { window.__batch.push(seen); }
}).observe(document, {childList: true, subtree: true});
"""


def test_card_batch_runs_and_downloads(journey, site):
    ensure_campaign(site)
    language = journey.language
    context = journey.context()
    context.add_init_script(PROGRESS_RECORDER)
    page = context.new_page()
    log_in(page, MANAGER)
    follow(page, "header.topbar a[href='/cards/']")
    expect_language(page, language, CHINESE["cards"])
    page.fill("#size", str(CARD_BATCH_SIZE))
    follow(page, "form[action$='/cards/batches'] button[type=submit]")
    assert re.fullmatch(r"/cards/batches/\d+", path_of(page)), page.url
    journey.shot(page, "running")
    download_link = page.locator("#batch-status a[href$='cards.pdf']")
    download_link.wait_for(timeout=120_000)
    seen = page.evaluate("window.__batch")
    bars = [value for value in seen if value != "done"]
    assert bars, f"the batch page never showed its progress bar: {seen}"
    assert all(maximum == CARD_BATCH_SIZE and 0 <= value <= maximum for value, maximum in bars), seen
    assert [value for value, _ in bars] == sorted(value for value, _ in bars), f"the bar went backwards: {seen}"
    assert seen[-1] == "done"
    journey.shot(page, "done")

    # The link downloads the file (the `download` attribute), as a person clicking it would.
    with page.expect_download(timeout=60_000) as started:
        download_link.click()
    download = started.value
    assert download.suggested_filename.endswith(".pdf"), download.suggested_filename
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"%PDF")
    pdf = pdfium.PdfDocument(data)
    try:
        assert len(pdf) >= 2  # 12 cards: two sheets of ten
        text = pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()
    assert CARD_WORDS[language] in text, text[:300]  # printed in the clinic's language


def test_the_watch_sees_csp_violations_and_script_errors(browser, sites):
    """The negative control: a page breaking the CSP or throwing is reported, so a clean journey means clean."""
    journey = Journey(browser, sites(LANGUAGES[0]), "control")
    page = journey.context(phone=True).new_page()
    page.goto("/login")
    page.evaluate("""() => {
      const inline = document.createElement("script");
      inline.textContent = "window.ran = true";
      document.body.append(inline);
      const picture = document.createElement("img");
      picture.src = "https://example.com/tracker.png";
      document.body.append(picture);
      setTimeout(() => { throw new Error("boom"); });
    }""")
    page.wait_for_timeout(300)
    assert page.evaluate("window.ran") is None  # blocked
    problems = "\n".join(journey.close())
    assert "Content Security Policy violation: script-src-elem" in problems
    assert "Content Security Policy violation: img-src blocked https://example.com/tracker.png" in problems
    assert "page error: Error: boom" in problems or "page error: boom" in problems, problems
