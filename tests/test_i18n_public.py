"""The patient pages and the printed PDFs in Chinese and English, phone first (issue 7).

Languages: the pages speak the clinic's language, switch with ``?lang=`` and remember the choice;
paper is printed in the clinic's language, in a request or in a background job. Phones: the invite
and progress pages weigh under 100 KB with everything they load, and every text colour reads on its
background (WCAG AA) whatever brand colour the clinic picks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Voucher
from clinic.services import cards, colours, jobs, posters, redemption, tiers
from clinic.services.clinic_settings import get_clinic, update_clinic
from clinic.services.transaction import Actor
from clinic.web.public import PAGE_BACKGROUND, brand_palette
from tests.conftest import friend

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_CSS = ROOT / "static" / "css" / "public.css"
PAGE_BUDGET = 100 * 1024
CHINESE_DAY = re.compile(r"\d{4}年\d{1,2}月\d{1,2}日")


def speak(language: str) -> None:
    """Set the clinic's default language, as the settings page does."""
    get_clinic().language = language
    db.session.commit()


@pytest.fixture
def invited(make_patient):
    """A patient who agreed to their name on posters (and so on the invite page their QR opens)."""
    patient, token = make_patient(full_name="王小明", display_name="王小明", phone="13811112222", name_on_posters=True)
    return patient, token


@pytest.fixture
def referred(invited, actor):
    """The referrer with two friends: one redeemed only, one who came and paid."""
    patient, token = invited
    redemption.redeem_code(patient.personal_code, friend(full_name="陈小红", phone="13900000001"), actor)
    redemption.redeem_code(patient.personal_code, friend(full_name="Lucy Wong", phone="13900000002"), actor)
    return patient, token


def pdf_text(pdf: bytes) -> str:
    return subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


# Languages of the pages

def test_the_invite_page_speaks_the_clinic_s_chinese_with_a_switch_to_english(browser, invited):
    patient, _ = invited
    speak("zh_CN")
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page
    assert "王** 向您推荐" in page and "王小明" not in page and "13811112222" not in page
    assert "新朋友专享礼" in page and "请到前台出示此推荐码。" in page
    assert f"{patient.personal_code[:4]}-{patient.personal_code[4:]}" in page
    assert re.search(r'<a href="\?lang=en" hreflang="en" lang="en">English</a>', page)
    assert "recommends" not in page and "?lang=zh_CN" not in page


def test_the_invite_page_of_a_patient_who_kept_their_name_off_posters_says_a_friend_in_chinese(browser, make_patient):
    patient, _ = make_patient(full_name="王小明", display_name="王小明", phone="13811112222")
    speak("zh_CN")
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    assert "您的朋友向您推荐" in page and "王" not in page


def test_english_stays_the_default_with_a_switch_to_chinese(browser, invited):
    patient, _ = invited
    page = browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)
    assert '<html lang="en">' in page and "王** recommends" in page
    assert re.search(r'<a href="\?lang=zh_CN" hreflang="zh-CN" lang="zh-CN">简体中文</a>', page)


def test_the_switch_is_remembered_in_a_cookie(browser, invited):
    patient, token = invited
    speak("zh_CN")
    switched = browser.get(f"/r/{patient.personal_code}?lang=en")
    assert "王** recommends" in switched.get_data(as_text=True)
    assert "lang=en" in switched.headers["Set-Cookie"] and "HttpOnly" in switched.headers["Set-Cookie"]
    assert "Cookie" in switched.headers["Vary"]  # a cached invite page must follow the cookie
    assert "Hello 王小明" in browser.get(f"/p/{token}").get_data(as_text=True)  # the next page, no ?lang
    assert "王小明，您好" in browser.get(f"/p/{token}?lang=zh_CN").get_data(as_text=True)
    assert "王** 向您推荐" in browser.get(f"/r/{patient.personal_code}").get_data(as_text=True)


def test_labels_from_imported_macros_follow_each_page_s_language(browser, referred):
    """The macros a template imports are evaluated once per process; their labels must not keep the first
    page's language (one worker printed "有效" on English voucher pages until it was recycled)."""
    patient, _ = referred
    code = db.session.scalars(select(Voucher.code).where(Voucher.patient_id == patient.id)).first()

    def badge(language: str) -> str:
        page = browser.get(f"/v/{code}?lang={language}").get_data(as_text=True)
        return re.search(r'class="status status-active">([^<]*)<', page).group(1)

    assert [badge("en"), badge("zh_CN"), badge("en"), badge("zh_CN")] == ["active", "有效", "active", "有效"]


def test_the_progress_page_in_chinese_masks_names_and_shows_yuan_and_chinese_dates(browser, referred, actor):
    patient, token = referred
    speak("zh_CN")
    response = browser.get(f"/p/{token}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and '<html lang="zh-CN">' in page
    assert "<title>推荐进度 · Test Clinic</title>" in page
    assert "陈**" in page and "陈小红" not in page and "Lucy W." in page and "Lucy Wong" not in page
    assert "您的专属推荐码" in page and "已推荐" in page and "已就诊" in page and "已缴费" in page
    assert "¥200.00" in page and "CN¥" not in page  # the referrer's vouchers, in Chinese money
    assert CHINESE_DAY.search(page) and not re.search(r"\d{4}-\d{2}-\d{2}", page)
    # Text for the share script comes from the page, in the reader's language.
    assert 'data-copied="链接已复制，可粘贴到聊天中发送。"' in page and ">复制链接<" in page
    assert '<a href="?lang=en"' in page


def test_the_progress_page_shows_the_invite_qr_from_a_url_that_names_only_the_code(browser, invited):
    """Shown when the phone cannot share: an image the phone may keep (the page itself is no-store)."""
    patient, token = invited
    page = browser.get(f"/p/{token}").get_data(as_text=True)
    source = re.search(r'<details class="qr-box" id="invite-qr" data-open-without-share>.*?'
                       r'<img src="([^"]+)"[^>]*loading="lazy"', page, re.S).group(1)
    assert source == f"/r/{patient.personal_code}/qr.svg" and token not in source
    assert page.count("<svg") == 0  # no voucher yet: nothing drawn inline
    answer = browser.get(source)
    assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
    assert answer.headers["Cache-Control"] == "public, max-age=86400"
    svg = answer.get_data(as_text=True)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox=') and "<path" in svg
    assert browser.get("/r/not-a-code/qr.svg").status_code == 404
    assert browser.get("/r/2222-2222-2222/qr.svg").status_code == 404  # a voucher's shape, not a personal code


def test_unknown_codes_and_links_say_so_in_chinese(browser):
    speak("zh_CN")
    assert "我们找不到这个推荐码" in browser.get("/r/ZZZZZZZZ").get_data(as_text=True)
    assert "此链接无效" in browser.get("/p/" + "x" * 32).get_data(as_text=True)
    assert "我们找不到这张代金券" in browser.get("/v/2222-2222-2222").get_data(as_text=True)


# Phone first: weight and contrast

def _assets(page: str) -> list[str]:
    """Every stylesheet, script and (non-inline) image a page makes the browser load."""
    links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    scripts = re.findall(r'<script[^>]* src="([^"]+)"', page)
    images = [src for src in re.findall(r'<img[^>]* src="([^"]+)"', page) if not src.startswith("data:")]
    return [url.replace("&amp;", "&") for url in links + scripts + images]


@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_the_invite_and_progress_pages_weigh_under_100_kb_with_everything_they_load(browser, referred, language):
    patient, token = referred
    speak(language)
    for path in (f"/r/{patient.personal_code}", f"/p/{token}"):
        response = browser.get(path)
        page = response.get_data(as_text=True)
        total = len(response.data)
        for url in _assets(page):
            asset = browser.get(url)
            assert asset.status_code == 200, url
            total += len(asset.data)
            assert b"@font-face" not in asset.data, f"{url}: no web fonts on phone pages"
        assert "htmx" not in page, f"{path}: htmx is not needed here"
        assert total < PAGE_BUDGET, f"{path} in {language}: {total} bytes"


@pytest.mark.parametrize("brand", ["#0f766e", "#ffeb3b", "#fde047", "#00bcd4", "#ff9800", "#e91e63", "#1e88e5",
                                   "#777777", "#ffffff", "#000000", "#7c3aed"])
def test_the_brand_palette_reads_on_the_brand_and_on_the_page(brand):
    palette = {name: colours.parse_hex(value) for name, value in brand_palette(brand).items()}
    assert colours.contrast_ratio(palette["--on-brand"], palette["--brand"]) >= 4.5
    for background in (PAGE_BACKGROUND, "#ffffff"):
        assert colours.contrast_ratio(palette["--brand-text"], colours.parse_hex(background)) >= 4.5
    # The dashboard's bars on its white cards: each stands out at 3:1 (WCAG 1.4.11), the lighter ones (registered)
    # visibly lighter than the solid ones (paid), and the figures written on them read.
    assert colours.contrast_ratio(palette["--brand-tint"], colours.WHITE) >= 3
    assert colours.contrast_ratio(palette["--brand-text"], colours.WHITE) >= 3
    assert colours.relative_luminance(palette["--brand-tint"]) > 1.4 * colours.relative_luminance(palette["--brand-text"])
    assert colours.contrast_ratio(palette["--on-brand-tint"], palette["--brand-tint"]) >= 4.5
    assert colours.contrast_ratio(colours.WHITE, palette["--brand-text"]) >= 4.5


def test_a_light_brand_colour_gets_dark_text_and_an_ochre_for_links(browser):
    update_clinic({"brand_colour": "#ffeb3b"}, Actor())
    css = browser.get("/brand.css?palette=1").get_data(as_text=True)
    variables = dict(re.findall(r"(--[\w-]+): (#[0-9a-f]{6});", css))
    assert variables["--brand"] == "#ffeb3b" and variables["--on-brand"] == "#111827"
    assert colours.contrast_ratio(colours.parse_hex(variables["--on-brand"]), (255, 235, 59)) >= 4.5
    brand_text, page = colours.parse_hex(variables["--brand-text"]), colours.parse_hex(PAGE_BACKGROUND)
    assert colours.contrast_ratio(brand_text, page) >= 4.5
    assert browser.get("/brand.css").get_data(as_text=True).strip() == ":root { --brand: #ffeb3b; }"


def _css_rules(css: str) -> list[tuple[str, dict[str, str]]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        declarations = dict((name.strip(), value.strip()) for name, _, value in
                            (part.partition(":") for part in body.split(";") if ":" in part))
        rules.append((" ".join(selector.split()), declarations))
    return rules


def _colour(value: str, variables: dict[str, str]) -> tuple[int, int, int] | None:
    value = value.replace("!important", "").strip()
    match = re.fullmatch(r"var\((--[\w-]+)\)", value)
    if match:
        value = variables[match.group(1)]
    if re.fullmatch(r"#[0-9a-fA-F]{3}", value):
        value = "#" + "".join(c * 2 for c in value[1:])
    return colours.parse_hex(value) if re.fullmatch(r"#[0-9a-fA-F]{6}", value) else None


@pytest.mark.parametrize("brand", ["#0f766e", "#ffeb3b", "#00bcd4", "#e91e63"])
def test_every_text_colour_of_the_public_pages_reads_on_its_background(brand):
    """Each rule setting a colour in public.css, against its own background, or the page's and the cards'
    (the brand colour inside .hero): at least 4.5:1, for a dark and for a light brand colour."""
    rules = _css_rules(PUBLIC_CSS.read_text(encoding="utf-8"))
    variables = {**next(d for s, d in rules if s == ":root"), **brand_palette(brand)}
    assert variables["--bg"] == PAGE_BACKGROUND
    checked = []
    for selector, declarations in rules:
        if "color" not in declarations:
            continue
        text = _colour(declarations["color"], variables)
        own = declarations.get("background") or declarations.get("background-color")
        if own:
            backgrounds = [own]
        elif ".hero" in selector:
            backgrounds = ["var(--brand)"]
        else:
            backgrounds = ["var(--bg)", "var(--card)"]
        for background in backgrounds:
            ratio = colours.contrast_ratio(text, _colour(background, variables))
            checked.append((selector, background, round(ratio, 2)))
            assert ratio >= 4.5, f"{selector}: {declarations['color']} on {background} is {ratio:.2f}:1 with {brand}"
    assert len(checked) >= 20 and any(s == ".hero" for s, _, _ in checked)


# Paper in the clinic's language

@pytest.fixture
def chinese_clinic(app):
    update_clinic({"name": "港湾口腔 Harbour Dental", "phone": "+86 21 5555 0100"}, Actor())
    speak("zh_CN")


def test_a_poster_prints_in_chinese_for_a_chinese_clinic_even_for_an_english_reader(app, chinese_clinic, invited):
    patient, _ = invited
    with app.test_request_context("/?lang=en"):  # someone reading English asks for it
        text = " ".join(pdf_text(posters.poster_pdf(patient, "classic", "A4")).split())
    assert "推荐码" in text and "用手机相机扫码，或到前台出示此推荐码。" in text and "王小明 邀请您" in text
    assert "Scan with" not in text and "港湾口腔 Harbour Dental" in text


def test_the_english_poster_stays_english(app, invited):
    patient, _ = invited
    text = " ".join(pdf_text(posters.poster_pdf(patient, "bold", "A5")).split())
    assert "Scan with your phone camera" in text and "推荐码" not in text


def test_a_card_batch_printed_by_a_background_job_is_in_the_clinic_s_chinese(app, chinese_clinic, actor):
    batch = cards.create_batch(2, "classic", False, actor)
    jobs.submit(cards.run_batch, batch.id)  # a thread with its own application context and no request
    jobs.wait_for_all()
    db.session.rollback()
    path = cards.batch_pdf_path(db.session.get(type(batch), batch.id))
    text = " ".join(pdf_text(Path(path).read_bytes()).split())
    assert "把这张卡送给朋友" in text and "刮开此处" in text and "Give this card" not in text
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    assert "NotoSansCJK" in fonts.replace("-", "")


def test_a_certificate_in_chinese_carries_the_chinese_honour_and_day(app, chinese_clinic, invited):
    patient, _ = invited
    text = " ".join(pdf_text(tiers.certificate_pdf(patient, "Referrer of the year 2026", "2026", 3,
                                                   title_zh="2026年度最佳推荐人")).split())
    assert "荣誉证书" in text.replace(" ", "")  # letter-spaced: pdftotext sees a space between the glyphs
    assert "2026年度最佳推荐人" in text and "授予" in text
    assert "感谢您推荐 3 位新朋友信任并选择我们。" in text and CHINESE_DAY.search(text)
    assert "Referrer of the year" not in text and "Certificate of honour" not in text
