"""The front desk side in Chinese (issue 7): the desk, patients, cards, referrals and error pages read in zh_CN
for a member of staff who chose it (or when the clinic's default is Chinese), with the clinic's own words,
¥ money and 2026年11月22日 dates; English stays the default. And what the desk needs to be used with a
keyboard, a scanner and a screen reader: the code field has the focus, answers go to live regions."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Patient
from clinic.services import clinic_settings, redemption
from clinic.services.staff import set_language
from clinic.services.transaction import Actor
from tests.conftest import friend
from tests.test_web_desk import FRIEND_FORM, form_key

CHINESE_DAY = r"20\d\d年\d{1,2}月\d{1,2}日"
STATUS_REGION = re.compile(r'<div id="desk-status"[^>]*>', re.S)
OOB_STATUS = re.compile(r'<div id="desk-status" hx-swap-oob="innerHTML">(?P<text>.*?)</div>', re.S)


@pytest.fixture
def zh_desk(desk, desk_user):
    """The desk, logged in as a member of staff whose own language is Chinese (the clinic's stays English)."""
    set_language(desk_user.id, "zh_CN")
    return desk


@pytest.fixture
def wang(make_patient):
    patient, _token = make_patient(full_name="王小明", phone="13811112222")
    return patient


def page(response) -> str:
    return response.get_data(as_text=True)


def test_the_desk_speaks_the_staff_members_own_language(zh_desk):
    desk_page = page(zh_desk.get("/desk/"))
    assert '<html lang="zh-CN">' in desk_page
    assert "<h1>前台</h1>" in desk_page and "扫码或输入推荐码、券码" in desk_page and ">查询</button>" in desk_page
    assert "Front desk" not in desk_page and "Scan or type a code" not in desk_page


def test_the_desk_follows_the_clinics_default_language(desk):
    assert "<h1>Front desk</h1>" in page(desk.get("/desk/")), "English is the default"
    clinic_settings.update_clinic({"language": "zh_CN"}, Actor())
    assert "<h1>前台</h1>" in page(desk.get("/desk/"))


def test_a_scanned_poster_shows_the_chinese_referrer_masked_and_the_offer_in_chinese(zh_desk, wang):
    response = zh_desk.post("/desk/lookup", {"code": f"http://127.0.0.1:5000/r/{wang.personal_code}"}, htmx=True)
    assert response.status_code == 200
    panel = page(response)
    assert "王**" in panel and "王小明" not in panel
    assert "推荐人：<strong>王**</strong>" in panel
    assert "¥200.00" in panel and "CN¥" not in panel
    assert "被推荐人（新患者）信息" in panel and "确认并发放双方代金券" in panel
    assert OOB_STATUS.search(panel)["text"].strip() == "推荐码有效（推荐人：王**），请填写被推荐人信息。"


def test_a_mistyped_code_is_an_alert_in_chinese_and_the_polite_region_says_nothing_more(zh_desk, wang):
    code = wang.personal_code
    wrong = code[:-1] + ("2" if code[-1] != "2" else "3")
    response = zh_desk.post("/desk/lookup", {"code": wrong}, htmx=True)
    assert response.status_code == 422
    panel = page(response)
    assert re.search(r'<div class="alert alert-bad" role="alert"[^>]*>[^<]*[\u4e00-\u9fff]', panel), \
        "the refusal is announced at once, in Chinese"
    assert OOB_STATUS.search(panel)["text"].strip() == "", "said once, by the alert"


def test_a_field_error_is_an_alert_on_the_field_and_not_said_twice(zh_desk, wang):
    response = zh_desk.post("/desk/redeem", {**FRIEND_FORM, "full_name": "", "code": wang.personal_code}, htmx=True)
    assert response.status_code == 422
    panel = page(response)
    assert re.search(r'<p class="field-error" id="full_name-error" role="alert">[^<]*[\u4e00-\u9fff]', panel)
    assert 'aria-invalid="true"' in panel and "data-focus-first" in panel
    assert OOB_STATUS.search(panel)["text"].strip() == ""


def test_redeeming_in_chinese_shows_vouchers_with_chinese_dates(zh_desk, wang):
    lookup = page(zh_desk.post("/desk/lookup", {"code": wang.personal_code}, htmx=True))
    response = zh_desk.post("/desk/redeem", {**FRIEND_FORM, "code": wang.personal_code,
                                             "idempotency_key": form_key(lookup)}, htmx=True)
    assert response.status_code == 200
    panel = page(response)
    assert "完成。Chen Jie已登记，双方代金券已发放。" in panel
    assert re.search("有效期至" + CHINESE_DAY, panel)
    assert "¥200.00" in panel and "CN¥" not in panel
    assert "推荐人王**的奖励" in panel and ">打印凭条</button>" in panel and ">下一位</a>" in panel
    assert '<span class="status status-active">有效</span>' in panel
    assert OOB_STATUS.search(panel)["text"] == "完成。Chen Jie已登记，双方代金券已发放。"
    assert "data-next-patient" in panel
    # The friend's part is printed in the clinic's language (English), the desk's own part stays in Chinese.
    assert "收据以英文打印。" in panel and ">改用简体中文打印</a>" in panel
    printed = re.findall(r'<div lang="en">(.*?)</div>\s*(?:<div class="no-print">|<div class="actions)', panel, re.S)
    assert len(printed) == 2, panel
    assert "Welcome, " in printed[0] and "Your voucher:" in printed[0] and "欢迎" not in printed[0]
    assert "Your own code to share" in printed[1] and "Friends scan this to see your invitation." in printed[1]


def test_spending_in_chinese_is_said_to_the_live_region(zh_desk, wang, actor):
    voucher = redemption.redeem_code(wang.personal_code, friend(), actor).referrer_voucher
    lookup = page(zh_desk.post("/desk/lookup", {"code": voucher.code}, htmx=True))
    assert ">标记为已使用</button>" in lookup and "持有人：王**" in lookup
    spent = page(zh_desk.post("/desk/spend", {"code": voucher.code, "idempotency_key": form_key(lookup)}, htmx=True))
    assert "已使用。请从账单中扣除该代金券。" in spent
    assert OOB_STATUS.search(spent)["text"] == "已使用。请从账单中扣除该代金券。"
    assert '<span class="status status-spent">已使用</span>' in spent


def test_marking_a_visit_from_the_recent_list_in_chinese(zh_desk, wang, actor):
    result = redemption.redeem_code(wang.personal_code, friend(), actor)
    desk_page = page(zh_desk.get("/desk/"))
    assert "最近核销" in desk_page and ">标记已就诊</button>" in desk_page
    assert 'aria-label="标记已就诊：Chen Jie"' in desk_page  # the button's visible words first (WCAG 2.5.3)
    row = page(zh_desk.post(f"/desk/recent/{result.friend.id}/visit", {"idempotency_key": "visit-key-0123456789"},
                            htmx=True))
    assert row.strip().startswith("<tr ") and row.strip().endswith("</tr>"), "a bare row: app.js says its message"
    assert re.search("已就诊 " + CHINESE_DAY, row)
    said = re.search(r'<p class="row-message">(.*?)</p>', row).group(1)
    assert said == "已记录首次就诊。此阶段没有应发放的奖励。", "Chinese puts no space between sentences"


def test_the_patient_page_in_chinese(zh_desk, wang, actor):
    result = redemption.redeem_code(wang.personal_code, friend(), actor)
    patient_page = page(zh_desk.get(f"/patients/{wang.id}"))
    assert "专属推荐码" in patient_page and "出院康复礼包刮刮卡" in patient_page and "推荐海报" in patient_page
    assert re.search("登记于" + CHINESE_DAY, patient_page)
    assert "已推荐的朋友（1）" in patient_page
    assert ">推荐人</td>" in patient_page, "whom a voucher is for, in Chinese"
    assert '<option value="classic">经典</option>' in patient_page
    friend_page = page(zh_desk.get(f"/patients/{result.friend.id}"))
    assert "推荐进度" in friend_page and "首次就诊：尚未" in friend_page
    listing = page(zh_desk.get("/patients/?q=王"))
    assert "王小明" in listing and re.search(r'<td class="nowrap">' + CHINESE_DAY + "</td>", listing)


def test_two_sentences_of_one_paragraph_have_no_space_between_them_in_chinese(zh_desk, wang, make_patient, make_lead):
    """Chinese closes a sentence with 。 and puts no space after it: "…使用）。 推荐进度链接…" read as a typo."""
    patient_page = page(zh_desk.get(f"/patients/{wang.id}"))
    assert "误转发时使用）。推荐进度链接上次生成于" in patient_page
    make_lead(wang, phone="13977770001")
    make_patient(full_name="周凡", phone="13977770001")
    sent = page(zh_desk.post("/desk/review", {"code": wang.personal_code, "full_name": "周凡", "phone": "13977770001",
                                              "display_name": "", "external_id": ""}, htmx=True))
    said = re.search(r'<p id="desk-call-back">(.*?)</p>', sent, re.S).group(1)
    assert "。管理员批准后，该回电请求即关闭。" in said and "。 " not in said


def test_the_welcome_slip_in_chinese(zh_desk):
    response = zh_desk.post("/patients/new", {"full_name": "李华", "phone": "13900001111", "display_name": "",
                                              "external_id": "", "preferred_channel": "sms",
                                              "preferred_language": "zh_CN"})
    assert response.status_code == 303, page(response)
    slip = page(zh_desk.get(response.headers["Location"]))
    assert "李华已登记。请现在为其打印欢迎单。" in slip and ">打印欢迎单</button>" in slip
    # What is printed and handed over is in the clinic's language (English here), marked so, and the desk is told.
    printed = re.search(r'<div lang="en">(.*?)<div class="actions no-print">', slip, re.S)
    assert printed and "Your personal referral code:" in printed[1] and "您的专属推荐码" not in slip
    assert "欢迎单以英文打印。" in slip


def test_the_welcome_slip_prints_in_a_chinese_clinics_language_for_english_staff(desk):
    clinic_settings.update_clinic({"language": "zh_CN"}, Actor())
    response = desk.post("/patients/new", {"full_name": "Li Hua", "phone": "13900001112", "display_name": "",
                                           "external_id": "", "preferred_channel": "sms", "preferred_language": "zh_CN"})
    assert response.status_code == 303
    slip = page(desk.get(response.headers["Location"] + "?lang=en"))  # this member of staff reads English
    assert '<html lang="en">' in slip and ">Print slip</button>" in slip
    assert '<div lang="zh-CN">' in slip and "您的专属推荐码：" in slip and "Your personal referral code" not in slip
    assert "The slip prints in Simplified Chinese." in slip
    # The patient reads English: the desk prints it in English instead.
    english = page(desk.get(response.headers["Location"] + "?lang=en&print=en"))
    assert "Your personal referral code:" in english and "<div lang=" not in english and "您的" not in english
    assert "Print it in 简体中文 instead" in english and "The slip prints in" not in english


def test_a_slip_in_the_pages_own_language_says_nothing_about_it(desk):
    response = desk.post("/patients/new", {"full_name": "Li Hua", "phone": "13900001113", "display_name": "",
                                           "external_id": "", "preferred_channel": "sms", "preferred_language": "en"})
    slip = page(desk.get(response.headers["Location"]))
    assert "Your personal referral code:" in slip
    assert "<div lang=" not in slip and "The slip prints in" not in slip
    assert ">Print it in 简体中文 instead</a>" in slip


def test_the_desk_reprints_a_receipt_in_the_friends_language(desk, referrer):
    offer = page(desk.post("/desk/lookup", {"code": referrer.personal_code}))
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": form_key(offer)})
    receipt = page(desk.get(response.headers["Location"]))
    assert "Your own code to share" in receipt and "<div lang=" not in receipt
    link = re.search(r'<a href="([^"]+)">Print it in 简体中文 instead</a>', receipt)[1]
    chinese = page(desk.get(link.replace("&amp;", "&")))
    assert '<html lang="en">' in chinese and ">Print receipt</button>" in chinese
    assert chinese.count('<div lang="zh-CN">') == 2 and "欢迎您，Chen Jie" in chinese and "您的专属推荐码" in chinese
    assert "Your own code to share" not in chinese and "The receipt prints in Simplified Chinese." in chinese


def test_a_chinese_desk_printing_in_english_names_the_language_in_chinese(desk, referrer):
    offer = page(desk.post("/desk/lookup", {"code": referrer.personal_code}))
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": form_key(offer)})
    english = page(desk.get(response.headers["Location"] + "?lang=zh_CN&print=en"))
    assert "收据以英文打印。" in english and "English打印" not in english


@pytest.mark.parametrize("nonsense", ["xx", "", "zh_TW", "en" * 600, "<script>", "\x00"])
def test_a_print_language_that_is_not_ours_is_refused_with_a_message(desk, referrer, make_patient, nonsense):
    patient, _token = make_patient()
    response = desk.get(f"/patients/{patient.id}/welcome", query_string={"print": nonsense})
    assert response.status_code == 400
    assert "There is no such language to print in." in page(response)


def test_cards_and_errors_in_chinese(manager, manager_user):
    set_language(manager_user.id, "zh_CN")
    cards_page = page(manager.get("/cards/"))
    assert "<h1>刮刮卡</h1>" in cards_page and "印制新批次" in cards_page and ">经典</option>" in cards_page
    missing = manager.get("/patients/999999")
    assert missing.status_code == 404
    assert "<h1>未找到</h1>" in page(missing) and "返回首页" in page(missing)


def test_a_server_error_inside_the_desk_panel_is_an_alert_in_chinese(zh_desk, app, monkeypatch):
    def broken(raw):
        raise RuntimeError("the database went away")
    monkeypatch.setattr("clinic.services.desk.identify_code", broken)
    response = zh_desk.post("/desk/lookup", {"code": "ABCD2345"}, htmx=True)
    assert response.status_code == 500
    body = page(response)
    assert response.headers["HX-Retarget"] == "#request-error", "above the panel, which keeps the friend's form"
    assert 'id="desk-panel"' not in body and 'role="alert"' in body
    assert "出错了（错误 500）。没有做任何更改。" in body


def test_the_desk_is_ready_for_a_scanner_and_a_screen_reader(desk):
    desk_page = page(desk.get("/desk/"))
    assert re.search(r'<input id="code" name="code"[^>]*autofocus', desk_page), "a scan lands in the code field"
    region = STATUS_REGION.search(desk_page).group(0)
    assert 'role="status"' in region and 'aria-live="polite"' in region and "hx-swap-oob" not in region
    assert 'data-no-answer="No answer from the server' in region, "the script's words come from the page"
    assert desk_page.index('id="desk-status"') < desk_page.index('<section id="desk-panel"'), \
        "the live region is outside the panel htmx replaces, so it stays and is heard"
    panel = page(desk.post("/desk/lookup", {"code": "ABC"}, htmx=True))
    assert 'role="alert"' in panel
    assert "<script" not in desk_page.split("</head>")[1] and " hx-on" not in desk_page, "the CSP allows no inline script"


def test_a_full_page_has_no_out_of_band_fragment(desk, referrer):
    """Without htmx (no script) the answer is a whole page: nothing in it is meant for another part."""
    response = desk.post("/desk/lookup", {"code": referrer.personal_code})
    assert response.status_code == 200
    assert "hx-swap-oob" not in page(response)


@pytest.mark.parametrize("clinic_language", ["en", "zh_CN"])
def test_a_friend_registered_at_the_desk_gets_messages_in_the_clinics_language(desk, referrer, app, clinic_language):
    """The desk's form asks no language: the friend's messages follow the clinic's (they were always Chinese)."""
    clinic_settings.update_clinic({"language": clinic_language}, Actor())
    offer = page(desk.post("/desk/lookup", {"code": referrer.personal_code}))
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "code": referrer.personal_code,
                                          "idempotency_key": form_key(offer)})
    assert response.status_code == 303, page(response)
    with app.app_context():
        assert db.session.scalar(select(Patient.preferred_language).where(Patient.full_name == "Chen Jie")) \
            == clinic_language


@pytest.mark.parametrize("clinic_language", ["en", "zh_CN"])
def test_the_enrolment_form_offers_the_clinics_language_for_messages(desk, clinic_language):
    clinic_settings.update_clinic({"language": clinic_language}, Actor())
    form = page(desk.get("/patients/new"))
    selected = re.search(r'<select[^>]*name="preferred_language".*?</select>', form, re.S).group(0)
    assert re.search(rf'<option selected value="{clinic_language}"|<option value="{clinic_language}" selected', selected), selected
