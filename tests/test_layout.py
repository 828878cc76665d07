"""The pages fit a front desk's iPad and a patient's phone, in English and in Chinese.

Front desks run the portal on an iPad (768 CSS px wide, portrait) and patients open their pages on phones (390): no
page may scroll sideways, push something off the screen or out of its box, show a wide table without a box of its
own to scroll in, a tap target too small and too crowded to hit (WCAG 2.2 2.5.8) or text under 12 px (charts
included, at the size they are drawn). tests/layout_checks.py measures it; ``python -m tests.layout_checks`` walks
every page of a running demo with the same checks at 360, 390, 768 and 1024 px.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from clinic.models import Referral, Voucher
from clinic.services import invitations, leads
from clinic.services.patients import PatientDetails, enrol_patient
from clinic.services.redemption import redeem_code
from clinic.services.transaction import Actor
from tests.browser_harness import MANAGER, Journey, log_in, new_phone, redeem, watched
from tests.layout_checks import layout_problems

pytestmark = pytest.mark.browser

WIDTHS = (390, 768)
# What a page may show and still pass: an undersized target with room around it meets WCAG 2.5.8.
NOTES = {"small"}
STAFF_PAGES = ("/desk/", "/patients/", "/admin/dashboard", "/admin/checks", "/admin/feedback", "/admin/campaigns", "/admin/campaigns/new", "/cards/",
               "/admin/settings", "/admin/staff", "/admin/audit", "/admin/webhooks", "/admin/api-tokens/",
               "/admin/posters", "/admin/import", "/admin/tiers", "/admin/honours", "/admin/invitations", "/account/security",
               "/account/password", "/api/v1/docs", "/desk/leads")


@pytest.fixture
def journey(chromium, site):
    # The "Call me back" form sent empty on purpose: its 422 page is measured too.
    yield from watched(Journey(chromium, site, "layout"), tolerated=("/call-me#call-me: Failed to load resource: "
                                                                      "the server responded with a status of 422",))


def problems_at_each_width(page) -> list[str]:
    found = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        found += [f"{page.url} at {width}px: {kind} {what} {detail}"
                  for kind, what, detail in layout_problems(page) if kind not in NOTES]
    return found


def test_pages_fit_a_tablet_and_a_phone(journey, site):
    redeemed = redeem(site)
    with site.database() as session:
        # A referrer whose name has no space to break at (a record system's export): the dashboard's top referrers
        # once grew 600 px past a phone's screen for one of these.
        unbroken, _token = enrol_patient(PatientDetails(full_name="W" * 110, phone=new_phone()), Actor())
        # Three friends at once: a burst on the referrals to check, where the name must wrap too.
        for _friend in range(3):
            redeem_code(unbroken.personal_code, PatientDetails(full_name="Friend of W", phone=new_phone()), Actor())
        # A call-back request with a long unbroken name, for the desk's Call-backs page.
        leads.request_call_back(invitations.invitation(unbroken.personal_code), "L" * 60, new_phone(), "yes", "")
        referral_id = session.scalar(select(Referral.id).where(Referral.referrer_id == redeemed.referrer.patient_id))
        voucher_id = session.scalar(select(Voucher.id).where(Voucher.code == redeemed.referrer_voucher_code))
    patient = f"/patients/{redeemed.referrer.patient_id}"
    page = journey.context(phone=True).new_page()
    log_in(page, MANAGER)
    found = []
    for path in (*STAFF_PAGES, f"/desk/redemptions/{referral_id}", f"/desk/redemptions/{referral_id}?print=zh_CN",
                 patient, f"{patient}/welcome", f"{patient}/erase",
                 f"/admin/vouchers/{voucher_id}/void", site.local(redeemed.referrer.progress_url),
                 site.local(redeemed.referrer.progress_url) + "/choices", site.local(redeemed.referrer.invite_url),
                 site.local(redeemed.voucher_url)):
        page.set_viewport_size({"width": 1024, "height": 768})
        page.goto(path)
        found += problems_at_each_width(page)

    # The invite page's "Call me back" form refused (its messages), then sent: the thank-you.
    page.goto(site.local(redeemed.referrer.invite_url))
    page.click("#call-me button[type=submit]")
    page.wait_for_selector("#call-me .problem")
    found += problems_at_each_width(page)
    page.fill("#call-me-name", "Lucy")
    page.fill("#call-me-phone", new_phone())
    page.check("#call-me input[name=consent]")
    page.click("#call-me button[type=submit]")
    page.wait_for_selector(".thanks")
    found += problems_at_each_width(page)

    # The progress page's "How was your visit?" card after a low score and after asking for a call; then the
    # manager's call list with that patient on it.
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(site.local(redeemed.referrer.progress_url))
    page.click('#feedback button[name="score"][value="3"]')
    page.wait_for_selector("#feedback .feedback-thanks")
    found += problems_at_each_width(page)
    page.click("#feedback form button")
    page.wait_for_selector("#feedback .feedback-when")
    found += problems_at_each_width(page)
    page.goto("/admin/feedback")
    page.wait_for_selector("#calls tr.call")
    found += problems_at_each_width(page)

    # The desk after a voucher is scanned: its QR, value, code and "valid until" beside each other.
    page.goto("/desk/")
    page.fill("#code", redeemed.referrer_voucher_code)
    page.press("#code", "Enter")
    page.wait_for_selector("#desk-panel .voucher")
    found += problems_at_each_width(page)
    assert not found, "\n".join(found[:40])


def test_a_managers_top_bar_folds_behind_menu_on_a_phone(journey):
    """Two dozen links took a third of a 390 px screen; on a phone they wait behind "Menu", on a PC they show."""
    page = journey.context(phone=True).new_page()
    log_in(page, MANAGER)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/admin/staff")
    toggle = page.locator(".menu-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert not page.locator(".topbar a[href='/admin/audit']").is_visible()
    assert page.locator(".topbar").bounding_box()["height"] < 844 / 6
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    page.locator(".topbar a[href='/admin/audit']").click()
    page.wait_for_url("**/admin/audit")
    assert not page.locator(".topbar a[href='/admin/staff']").is_visible()  # folded again on the next page

    page.set_viewport_size({"width": 1280, "height": 800})
    assert not page.locator(".menu-toggle").is_visible()
    assert page.locator(".topbar a[href='/admin/staff']").is_visible()


def test_the_top_bar_s_two_language_buttons_read_as_two(journey):
    """After picking a language, "English" and "Clinic's language" sat a space apart: "English 诊所的语言" read as one
    phrase. They are spaced as the bar's other links are."""
    page = journey.context().new_page()
    log_in(page, MANAGER)
    page.set_viewport_size({"width": 1366, "height": 768})
    with page.expect_navigation():
        page.click("form.language-switch button >> nth=0")  # the other language: the clinic's is the default
    buttons = page.locator("form.language-switch button")
    assert buttons.count() == 2
    first, second = buttons.nth(0).bounding_box(), buttons.nth(1).bounding_box()
    links = page.locator(".topbar nav a")
    gap_between_links = links.nth(1).bounding_box()["x"] - (links.nth(0).bounding_box()["x"]
                                                             + links.nth(0).bounding_box()["width"])
    assert second["x"] - (first["x"] + first["width"]) >= gap_between_links - 1
