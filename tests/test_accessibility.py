"""Accessibility (WCAG 2.2 AA) in a real browser, in English and in Chinese: axe-core's rules on the pages patients,
friends and staff use, and what axe cannot see by itself (a brand colour the clinic picks, zoomed phone pages).

Patients open their progress link and friends an invite on small phones, often with large text or a screen reader;
the desk works from the keyboard and a USB scanner. axe-core comes with axe-playwright-python (PyPI); it is
evaluated by Playwright, which the page's Content-Security-Policy does not block, so the pages are checked as
served. The servers are tests/browser_harness.py's, shared with tests/test_browser_journeys.py.
"""

from __future__ import annotations

import re

import pytest
from axe_playwright_python.base import AXE_SCRIPT
from playwright.sync_api import expect
from sqlalchemy import select

from clinic.models import Patient, Referral
from clinic.services import clinic_settings
from clinic.services.branches import create_branch, list_branches
from clinic.services.cards import print_personal_card
from clinic.services.milestones import record_payment, record_visit
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.tiers import TierRules, create_tier, list_tiers
from clinic.services.transaction import Actor
from tests.browser_harness import (
    DESK,
    MANAGER,
    PEOPLE,
    Journey,
    enrol,
    ensure_campaign,
    log_in,
    new_phone,
    redeem,
    restore_look,
    watched,
)

pytestmark = pytest.mark.browser

# What fails a page: a violation of any level axe-core reports, minor ones included.
EVERY_IMPACT = {"minor", "moderate", "serious", "critical"}
# Brand colours a clinic may pick, each unreadable under white text or as text on white.
HARD_BRAND_COLOURS = {"yellow": "#facc15", "lime": "#84cc16", "pale": "#e0f2fe"}
# A form sent with errors on purpose comes back with 422 and its errors, which Chromium logs as a failed resource.
REFUSED_FORM = "the server responded with a status of 422"


@pytest.fixture
def journey(chromium, site, request):
    name = f"a11y-{request.node.originalname.removeprefix('test_')}"
    yield from watched(Journey(chromium, site, name), (REFUSED_FORM,))


def axe(page, rules: list[str] | None = None) -> list[dict]:
    """axe-core's violations on the page as it is now (``rules``: only these).

    With WCAG 2.5.3 (label in name), which this axe-core still marks experimental and leaves out by default.
    """
    page.evaluate(AXE_SCRIPT + "\n;0")
    options = {"resultTypes": ["violations"], "rules": {"label-content-name-mismatch": {"enabled": True}}}
    if rules:
        options["runOnly"] = {"type": "rule", "values": rules}
    return page.evaluate("options => axe.run(document, options).then(results => results.violations)", options)


def describe(violations: list[dict]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"{violation['impact']}: {violation['id']} ({violation['help']})")
        for node in violation["nodes"][:5]:
            summary = " ".join(node.get("failureSummary", "").split())[:200]
            lines.append(f"    {' '.join(map(str, node['target']))}: {summary}")
    return "\n".join(lines)


def expect_accessible(page, impacts=EVERY_IMPACT, rules: list[str] | None = None) -> None:
    found = [violation for violation in axe(page, rules) if violation["impact"] in impacts]
    assert not found, f"{page.url}\n{describe(found)}"


def expect_named_pictures(page) -> None:
    """Every picture a screen reader meets says what it is: axe-core checks <img> and role=img, not a bare <svg>
    (a QR code drawn inline), which Chromium still exposes as an image without a name."""
    pictures = page.locator("main img:not([alt='']), main svg:not([aria-hidden=true])")
    assert pictures.count(), f"{page.url}: no picture to check"
    for picture in pictures.all():
        expect(picture).to_have_accessible_name(re.compile(r"\S"))


def phone_pages(site) -> dict[str, str]:
    """The pages patients and friends open on a phone: a referrer's progress (a friend, a voucher), a new patient's,
    the new patient's privacy choices, the invite, and the voucher page with its 12-symbol code."""
    redeemed = redeem(site)
    newcomer = enrol(site)
    return {"progress": site.local(redeemed.referrer.progress_url), "progress-new": site.local(newcomer.progress_url),
            "choices": site.local(newcomer.progress_url) + "/choices",
            "invite": site.local(redeemed.referrer.invite_url), "voucher": site.local(redeemed.voucher_url)}


# What sticks out of the page on the right, outside a box that scrolls on its own.
STICKING_OUT = """() => [...document.querySelectorAll("body *")]
  .filter(element => !element.closest(".table-wrap, .chart-scroll")
          && element.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .map(element => element.tagName.toLowerCase() + (element.className ? "." + element.className : "")).slice(0, 5)"""


def expect_no_sideways_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px: {page.evaluate(STICKING_OUT)}"


# A tier the referrers of these tests are on their way to, named in the clinic's language (the journeys check
# that a Chinese page shows no English word).
TIER_NAMES = {"en": "Gold", "zh_CN": "金卡会员"}


def ensure_tier(site) -> None:
    with site.database():
        if not any(tier.name == TIER_NAMES[site.language] for tier in list_tiers()):
            create_tier(TierRules(name=TIER_NAMES[site.language], min_paid_referrals=3), Actor())


def field_error_text(page, field) -> str:
    return " ".join(page.locator(f"#{field.get_attribute('id')}-error, [id^='{field.get_attribute('id')}-error-']")
                    .all_inner_texts())


# Every keyboard stop's focus outline, and the contrast between its colour and what is behind it (WCAG 2.4.7 and
# 1.4.11: at least 3:1). The outline is drawn around the element, so what is behind it is its parent's background.
FOCUS_RINGS = """() => {
  const rgb = colour => (colour.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => [r, g, b].map(c => c / 255).map(c => c <= 0.04045 ? c / 12.92
    : ((c + 0.055) / 1.055) ** 2.4).reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const contrast = (a, b) => {
    const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
    return (x + .05) / (y + .05);
  };
  const behind = element => { for (let node = element.parentElement; node; node = node.parentElement) {
      const colour = rgb(getComputedStyle(node).backgroundColor);
      if (colour.length < 4 || colour[3] > 0) return colour; } return [255, 255, 255]; };
  const element = document.activeElement, style = getComputedStyle(element);
  return {what: element.tagName + " " + (element.innerText || element.name || element.id || "").trim().slice(0, 30),
          style: style.outlineStyle, width: parseFloat(style.outlineWidth),
          contrast: contrast(rgb(style.outlineColor), behind(element))};
}"""


@pytest.mark.parametrize("colour", HARD_BRAND_COLOURS.values(), ids=HARD_BRAND_COLOURS.keys())
def test_pages_stay_readable_on_any_brand_colour(journey, site, colour):
    """The brand colour fills the top bar, the buttons and the patients' hero boxes and colours the links: whichever
    colour the manager picks in the settings, their text reads at WCAG AA (4.5:1)."""
    pages = phone_pages(site)
    with site.database():
        clinic_settings.update_clinic({"brand_colour": colour}, Actor())
    try:
        phone = journey.context(phone=True).new_page()
        for url in pages.values():
            phone.goto(url)
            expect_accessible(phone, rules=["color-contrast"])
        page = journey.staff_page(MANAGER)
        for path in ("/desk/", "/admin/dashboard", "/admin/settings", "/admin/reviews", "/patients/new"):
            page.goto(path)
            expect_accessible(page, rules=["color-contrast"])
        desk = journey.staff_page(DESK)
        expect_accessible(desk, rules=["color-contrast"])
    finally:
        restore_look(site)


@pytest.mark.parametrize("colour", ["#0f766e", HARD_BRAND_COLOURS["yellow"], "#1d4ed8"], ids=["teal", "yellow", "blue"])
def test_the_keyboard_focus_is_always_visible(journey, site, colour):
    """Front-desk staff work from the keyboard: each stop Tab reaches, in the top bar (on the brand colour) and on
    the page, shows a focus outline of at least 2 px at 3:1 or more against what is behind it."""
    with site.database():
        clinic_settings.update_clinic({"brand_colour": colour}, Actor())
    try:
        page = journey.staff_page(MANAGER)
        page.goto("/desk/")
        weak, seen = [], set()
        for _ in range(60):
            page.keyboard.press("Tab")
            ring = page.evaluate(FOCUS_RINGS)
            if ring["what"] in seen or ring["what"].startswith("BODY"):
                continue
            seen.add(ring["what"])
            if ring["style"] == "none" or ring["width"] < 2 or ring["contrast"] < 3:
                weak.append(ring)
        assert len(seen) > 15, seen
        assert not weak, "focus outlines that do not show:\n" + "\n".join(map(str, weak))
    finally:
        restore_look(site)


def test_phone_pages_fit_a_small_phone(journey, site):
    page = journey.context(phone=True).new_page()
    for name, url in phone_pages(site).items():
        page.goto(url)
        expect_no_sideways_scroll(page)
        journey.shot(page, name)


def test_phone_pages_reflow_at_200_percent_zoom(journey, site):
    """A 360 px phone zoomed to 200 % lays pages out 180 CSS px wide (WCAG 1.4.4, 1.4.10): nothing scrolls
    sideways, and a big code wraps (after a dash where it can) instead of running off the screen."""
    context = journey.browser.new_context(viewport={"width": 180, "height": 370}, device_scale_factor=4,
                                          is_mobile=True, has_touch=True, base_url=site.base_url)
    journey.watch.attach(context)
    try:
        page = context.new_page()
        for name, url in phone_pages(site).items():
            page.goto(url)
            expect_no_sideways_scroll(page)
            journey.shot(page, f"zoom-{name}")
    finally:
        context.close()


def test_phone_pages_follow_the_readers_text_size(journey, site):
    """A reader who set a large default font (twice the usual 16 px) gets all of the page's text larger, not
    only the parts sized in rem: the body text follows it too."""
    page = journey.context(phone=True).new_page()
    session = page.context.new_cdp_session(page)
    session.send("Page.enable")
    session.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 26}})
    for name, url in phone_pages(site).items():
        page.goto(url)
        size = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
        assert size >= 32, f"{name}: the body text stays {size}px"
        expect_no_sideways_scroll(page)
        journey.shot(page, f"large-text-{name}")


def test_phone_pages_pass_axe(journey, site):
    """The patient's and the friend's pages have no axe-core violation at all, whatever its impact: a page heading
    to jump to, every control named, every figure said."""
    ensure_tier(site)
    page = journey.context(phone=True).new_page()
    for name, url in phone_pages(site).items():
        page.goto(url)
        for details in page.locator("details").all():  # the QR codes, as a patient opens them
            details.evaluate("details => { details.open = true; }")
        expect_accessible(page)
        assert page.locator("h1").count() == 1, f"{name}: one main heading"
        if name not in ("invite", "choices"):  # the invite page has no picture without a logo, the choices none
            expect_named_pictures(page)
        if name.startswith("progress"):
            # The bar towards the next tier says what it measures; a friend's milestones are said as words,
            # not as the ✓ and ○ drawn for the eye.
            expect(page.locator("#tier progress")).to_have_accessible_name(re.compile(TIER_NAMES[site.language]))
            assert "○" not in page.locator("main").aria_snapshot() and "✓" not in page.locator("main").aria_snapshot()


def test_desk_pages_pass_axe(journey, site):
    """The front desk through a redemption, from the keyboard as a scanner drives it: the code, Enter, the friend's
    form sent empty (its errors), filled, Enter, the receipt; then a voucher looked up, and a mistyped code."""
    ensure_campaign(site)
    for _ in range(2):  # the recent list, with a visit to mark
        redeem(site)
    referrer = enrol(site)
    page = journey.context().new_page()
    page.goto("/login")
    expect_accessible(page)
    page.fill("input[name=email]", DESK)
    page.fill("input[name=password]", "not the password")
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    expect_accessible(page)
    log_in(page, DESK)
    expect_accessible(page)
    page.keyboard.type(referrer.invite_url, delay=5)
    page.keyboard.press("Enter")
    page.locator("#desk-panel [name=full_name]").wait_for()
    expect_accessible(page)
    # "Working…" shows while the form is being sent: until then a screen reader does not read it either.
    expect(page.locator("#desk-panel .htmx-indicator")).to_be_hidden()
    page.keyboard.press("Enter")
    page.locator("#desk-panel .field-error").wait_for()
    expect_accessible(page)
    page.keyboard.type(PEOPLE[site.language]["friend"][0])
    page.keyboard.press("Tab")
    page.keyboard.type(new_phone())
    page.keyboard.press("Enter")
    page.locator("#receipt").wait_for()
    expect_accessible(page)
    expect_named_pictures(page)
    journey.shot(page, "receipt")
    page.keyboard.type(redeem(site).voucher_url, delay=5)
    page.keyboard.press("Enter")
    page.locator("#desk-panel form[action$='/desk/spend']").wait_for()
    expect_accessible(page)
    page.keyboard.type(referrer.code[:-1] + ("0" if referrer.code[-1] != "0" else "1"), delay=5)
    page.keyboard.press("Enter")
    page.locator("#desk-panel [role=alert]").wait_for()
    expect_accessible(page)


def test_manager_pages_pass_axe(journey, site):
    ensure_campaign(site)
    ensure_tier(site)
    redeemed = redeem(site)
    with site.database():  # the patient page's tables of cards and vouchers, each with a column of links
        batch_id = print_personal_card(redeemed.referrer.patient_id, "classic", Actor()).id
    page = journey.staff_page(MANAGER)
    for path in (f"/patients/{redeemed.referrer.patient_id}", f"/cards/batches/{batch_id}",
                 "/patients/", f"/patients/{redeemed.referrer.patient_id}/welcome",
                 "/admin/dashboard", "/admin/settings", "/admin/campaigns", "/admin/campaigns/new", "/admin/audit",
                 "/cards/", "/admin/staff", "/admin/branches", "/admin/reviews", "/admin/posters", "/admin/import",
                 "/admin/tiers", "/admin/honours", "/admin/webhooks", "/admin/notifications", "/admin/api-tokens/"):
        page.goto(path)
        expect_accessible(page)
    page.goto("/patients/new")
    with page.expect_navigation():
        page.locator("main form button[type=submit]").click()
    assert page.locator(".field-error").count(), "the enrol form sent empty shows its errors"
    expect_accessible(page)


def test_form_errors_and_hints_are_said_with_their_field(journey, site):
    """A form sent back with errors puts the keyboard on the first field to correct, and a screen reader says the
    field's error (and its hint) with it, not only somewhere on the page."""
    page = journey.context().new_page()
    page.goto("/login")
    page.fill("input[name=email]", MANAGER)
    page.fill("input[name=password]", "not the password")
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    focused = page.locator(":focus")
    expect(focused).to_have_attribute("name", "password")  # not the e-mail field, which autofocus would pick
    expect(focused).to_have_accessible_description(field_error_text(page, focused))

    log_in(page, MANAGER)
    page.goto("/patients/new")
    page.fill("#full_name", PEOPLE[site.language]["referrer"][0])
    page.fill("#phone", "12")
    with page.expect_navigation():
        page.locator("main form button[type=submit]").click()
    focused = page.locator(":focus")
    expect(focused).to_have_attribute("name", "phone")
    expect(focused).to_have_accessible_description(field_error_text(page, focused))
    for field in page.locator("main [aria-invalid=true]").all():
        expect(field).to_have_accessible_description(re.compile(r"\S"))
    # A hint is part of its field's description too (the display name says what friends see).
    expect(page.locator("#display_name")).to_have_accessible_description(re.compile(r"\S"))


def test_staff_pages_let_the_keyboard_skip_the_top_bar(journey, site):
    """A manager's top bar has some twenty stops: the first Tab offers to skip them (WCAG 2.4.1), the bar is a
    named navigation landmark, and it says which page is open."""
    page = journey.staff_page(MANAGER)
    page.goto("/admin/settings")
    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_attribute("href", "#main")
    assert skip.is_visible() and skip.bounding_box()["width"] > 20, "the skip link shows when it has the focus"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('main') !== null"), "the next stop is in the page"
    navigation = page.get_by_role("navigation")
    expect(navigation).to_have_count(1)
    expect(navigation).to_have_accessible_name(re.compile(r"\S"))
    expect(navigation.locator("[aria-current=page]")).to_have_attribute("href", "/admin/settings")


def test_staff_pages_fit_a_phone(journey, site):
    """A nurse or a manager on a phone, or a desk PC zoomed to 400 %: 320 CSS px wide (WCAG 1.4.10). Wide tables
    scroll inside their own box (which the keyboard can reach), the page itself never sideways."""
    ensure_campaign(site)
    redeem(site)
    context = journey.context(phone=True)
    page = context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    log_in(page, MANAGER)
    for path in ("/desk/", "/patients/", "/admin/staff", "/admin/branches", "/admin/api-tokens/", "/admin/campaigns",
                 "/admin/audit", "/cards/", "/admin/dashboard", "/admin/settings", "/admin/webhooks", "/patients/new"):
        page.goto(path)
        expect_no_sideways_scroll(page)
        expect_accessible(page)


# The ids a field is described by: its own, or its group's (a fieldset of checkboxes says its errors once, on entry).
DESCRIBED_BY = "field => field.getAttribute('aria-describedby') || field.closest('fieldset')?.getAttribute('aria-describedby')"


def expect_errors_said_with_their_fields(page) -> None:
    """Each error message on the page is the description (aria-describedby) of the field it is about, which says it
    with its name; a field marked invalid is described by its errors; the keyboard starts on the first such field."""
    errors = page.locator("main .field-error")
    assert errors.count(), f"{page.url}: no error shown"
    for error in errors.all():
        error_id = error.get_attribute("id")
        assert error_id, f"{page.url}: an error without an id, which no field can point at: {error.inner_text()}"
        described = page.locator(f"main [aria-describedby~='{error_id}']")
        assert described.count(), f"{page.url}: no field is described by its error “{error.inner_text()}”"
        for element in described.all():
            expect(element).to_have_accessible_description(re.compile(re.escape(error.inner_text().strip())))
    for field in page.locator("main [aria-invalid=true]").all():
        ids = (field.evaluate(DESCRIBED_BY) or "").split()
        assert any(page.locator(f"[id='{i}'].field-error").count() for i in ids), \
            f"{page.url}: {field.get_attribute('name')} is marked invalid but does not say why"
    first = page.locator("main .field-error").first.get_attribute("id")
    focused = page.locator(":focus")
    expect(focused).to_have_count(1)
    assert first in (focused.evaluate(DESCRIBED_BY) or "").split(), \
        f"{page.url}: the keyboard is not on the first field to correct but on {focused.evaluate('f => f.outerHTML')[:200]}"


def submit(page, form: str) -> None:
    with page.expect_navigation():
        page.locator(f"{form} button[type=submit]").first.click()


def stale_poster_consent(journey, site):
    """The patient agrees to have their name printed, but another member of staff removed the name meanwhile."""
    patient_id = enrol(site).patient_id
    with site.database() as session:
        session.get(Patient, patient_id).name_on_posters = False
        session.commit()
    page = journey.staff_page(MANAGER)
    page.goto(f"/patients/{patient_id}")
    with site.database() as session:
        session.get(Patient, patient_id).display_name = ""
        session.commit()
    submit(page, f"form[action$='/patients/{patient_id}/poster-consent']")
    return page


def unknown_card_serial(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto(f"/patients/{enrol(site).patient_id}")
    page.fill("#serial", "B001-00O3X")  # mistyped: a letter O for a zero, and a stray X
    submit(page, "form[action*='/cards/activate/']")
    return page


def message_settings_on_an_unknown_channel(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto(f"/patients/{enrol(site).patient_id}")
    page.locator("#preferred_channel").evaluate("select => { select.options[0].value = 'pigeon'; select.selectedIndex = 0; }")
    submit(page, "#messages form")
    return page


def webhook_without_events(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto("/admin/webhooks")
    page.fill("#url", "https://his.example/hooks")
    submit(page, "main form[method=post]")
    return page


def branch_without_name(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto("/admin/branches")
    submit(page, "form[action$='/admin/branches']")
    return page


def staff_sent_to_a_branch_gone_meanwhile(journey, site):
    with site.database():
        if not list_branches():
            create_branch("North", "", Actor())
    page = journey.staff_page(MANAGER)
    page.goto("/admin/branches")
    page.locator("select[name^=branch-]").first.evaluate("select => { select.options[1].value = '999999'; "
                                                        "select.selectedIndex = 1; }")
    submit(page, "form[action$='/branches/staff']")
    return page


def notification_with_an_unknown_placeholder(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto("/admin/notifications")
    page.locator("main textarea").first.fill("Hello {nobody}")
    submit(page, "main form[method=post]")
    return page


def card_batch_of_an_unknown_design(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto("/cards/")
    page.locator("#design").evaluate("select => { select.options[0].value = 'gold-leaf'; select.selectedIndex = 0; }")
    submit(page, "form[action$='/cards/batches']")
    return page


def api_token_without_name_or_scope(journey, site):
    page = journey.staff_page(MANAGER)
    page.goto("/admin/api-tokens/")
    submit(page, "main form[method=post]")
    return page


def batch_void_without_reason(journey, site):
    ensure_campaign(site)  # the one that covers cards
    with site.database():
        batch_id = print_personal_card(enrol(site).patient_id, "classic", Actor()).id
    page = journey.staff_page(MANAGER)
    page.goto(f"/cards/batches/{batch_id}")
    submit(page, "form[action$='/void']")
    return page


# The forms whose fields are drawn by hand (no WTForms form), each sent back with an error.
FORMS_WITH_AN_ERROR = {"poster-consent": stale_poster_consent, "card-serial": unknown_card_serial,
                       "message-settings": message_settings_on_an_unknown_channel,
                       "webhook": webhook_without_events, "branch": branch_without_name,
                       "staff-branch": staff_sent_to_a_branch_gone_meanwhile,
                       "notifications": notification_with_an_unknown_placeholder,
                       "card-batch": card_batch_of_an_unknown_design, "api-token": api_token_without_name_or_scope,
                       "batch-void": batch_void_without_reason}


@pytest.mark.parametrize("form", FORMS_WITH_AN_ERROR.values(), ids=FORMS_WITH_AN_ERROR.keys())
def test_hand_drawn_form_errors_are_said_with_their_field(journey, site, form):
    """Forms checked without WTForms tie their errors to their fields as templates/_macros.html's field() does: a
    screen reader says the error with the field, the field is marked invalid, and the keyboard starts there."""
    page = form(journey, site)
    assert page.locator("main .field-error").count(), "the form came back with its error"
    journey.shot(page, form.__name__.replace("_", "-"))
    expect_errors_said_with_their_fields(page)
    expect_accessible(page)


# What the search's live region says, per language: one patient found, several, none.
FOUND = {"en": ("1 patient found", "{n} patients found", "No patient matches “{q}”."),
         "zh_CN": ("找到1位患者", "找到{n}位患者", "没有与“{q}”匹配的患者。")}


def test_patient_search_results_are_announced(journey, site):
    """htmx swaps the results under the search field as staff type: a live region, which stays in place (a region
    put in the page with its text is not read), says how many patients were found."""
    referrer = enrol(site)
    name = f"{PEOPLE[site.language]['friend'][0]} {new_phone()}"  # a name no other test gives
    with site.database():
        for _ in range(3):
            enrol_patient(PatientDetails(full_name=name, phone=new_phone()), Actor())
    one, many, none = FOUND[site.language]
    page = journey.staff_page(DESK)
    page.goto("/patients/")
    region = page.locator("#patient-count")
    expect(region).to_have_attribute("role", "status")
    assert not region.evaluate("region => region.closest('#patient-rows')"), "the region is not what htmx replaces"
    region.evaluate("region => { region.dataset.kept = 'yes'; }")
    for step, query, said in (("one", referrer.code, one), ("several", name, many.format(n=3)),
                              ("none", "zqzqzq", none.format(q="zqzqzq"))):
        page.fill("#q", query)
        expect(page.locator("#patient-count[data-kept=yes]")).to_have_text(said)
        journey.shot(page, step)
    expect_accessible(page)


# Each bar, bar segment and legend swatch of the dashboard's charts against the card behind it (WCAG 1.4.11: 3:1).
CHART_FILLS = """() => {
  const rgb = colour => (colour.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => [r, g, b].map(c => c / 255).map(c => c <= 0.04045 ? c / 12.92
    : ((c + 0.055) / 1.055) ** 2.4).reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const contrast = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
                               return (x + .05) / (y + .05); };
  const over = (colour, alpha, ground) => colour.slice(0, 3).map((c, i) => c * alpha + ground[i] * (1 - alpha));
  const card = [255, 255, 255];
  return [...document.querySelectorAll(".chart rect:not(.bar-hit):not(.share-none), .swatch, .spark rect")]
    .map(element => {
      const style = getComputedStyle(element);
      const svg = element instanceof SVGElement;
      const colour = rgb(svg ? style.fill : style.backgroundColor);
      const alpha = (colour.length > 3 ? colour[3] : 1) * parseFloat(svg ? style.fillOpacity : "1") *
                    parseFloat(style.opacity);
      return {what: element.getAttribute("class"), contrast: contrast(over(colour, alpha, card), card)};
    });
}"""


@pytest.mark.parametrize("colour", [*HARD_BRAND_COLOURS.values(), "#1d4ed8"], ids=[*HARD_BRAND_COLOURS, "blue"])
def test_dashboard_charts_stand_out_on_any_brand_colour(journey, site, colour):
    """The dashboard draws its bars in the brand colour: a pale or yellow brand still gives bars that stand out from
    the white card at 3:1 (WCAG 1.4.11), the lighter "registered" bars included."""
    redeemed = redeem(site)
    with site.database() as session:
        friend_id = session.scalar(select(Referral.friend_id).where(Referral.referrer_id == redeemed.referrer.patient_id))
        record_visit(friend_id, Actor())
        record_payment(friend_id, 30000, Actor())
        clinic_settings.update_clinic({"brand_colour": colour}, Actor())
    try:
        page = journey.staff_page(MANAGER)
        page.goto("/admin/dashboard")
        fills = page.evaluate(CHART_FILLS)
        drawn = {fill["what"] for fill in fills}
        assert {"bar-registered", "bar-paid", "funnel-bar funnel-bar-1", "share-code"} <= drawn, drawn
        faint = [fill for fill in fills if fill["contrast"] < 3]
        assert not faint, "chart parts that do not stand out from the card:\n" + "\n".join(map(str, faint))
        expect_accessible(page)
        journey.shot(page, f"dashboard-{colour.lstrip('#')}")
    finally:
        restore_look(site)
