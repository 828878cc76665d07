"""The manager's pages in Chinese and English, and the clinic's default language (issue 7).

The settings page sets the clinic's default language: patient pages, printed PDFs and staff who have
not chosen their own language follow it; a value that is not one of ours is refused and changes nothing.
The manager's pages speak the clinic's words in Chinese (活动, 分院, 操作日志 …), with money in yuan
(¥, not CN¥) and Chinese dates; English stays the default.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Clinic, Staff
from clinic.services import milestones, redemption
from clinic.services.branches import create_branch
from clinic.services.clinic_settings import update_clinic
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import friend

SETTINGS = {"name": "港湾口腔 Harbour Dental", "phone": "+86 21 5555 0100", "address": "88 Harbour Road",
            "brand_colour": "#123456", "currency": "CNY", "language": "en", "timezone": "Asia/Shanghai",
            "public_base_url": ""}
CHINESE_DAY = re.compile(r"\d{4}年\d{1,2}月\d{1,2}日")
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def clinic_language() -> str:
    language = db.session.get(Clinic, 1).language
    db.session.rollback()
    return language


def settings_changes() -> int:
    count = db.session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action == "settings.changed"))
    db.session.rollback()
    return count


def speak(language: str, manager_user) -> None:
    """The clinic's default language, set as the settings page sets it."""
    update_clinic({"language": language}, Actor(staff_id=manager_user.id))


def text(response) -> str:
    return response.get_data(as_text=True)


def test_the_settings_page_offers_the_languages_named_in_themselves(manager):
    page = text(manager.get("/admin/settings"))
    assert "Default language" in page and '<select aria-describedby="language-hint" id="language" name="language">' in page
    assert '<option selected value="en">English</option>' in page and '<option value="zh_CN">简体中文</option>' in page


def test_the_settings_page_changes_the_default_language_and_the_next_pages_speak_it(manager, desk, referrer):
    response = manager.post("/admin/settings", {**SETTINGS, "language": "zh_CN"})
    assert response.status_code == 303 and clinic_language() == "zh_CN"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed")
                              .order_by(AuditEvent.id.desc()).limit(1))
    assert event.details["changes"]["language"] == ["en", "zh_CN"]
    page = text(manager.get("/admin/settings"))
    assert '<html lang="zh-CN">' in page and "诊所设置" in page and "默认语言" in page
    assert "设置已保存。" in page, "the flash is said in the new language"
    assert '<option selected value="zh_CN">简体中文</option>' in page
    # The clinic's number is a telephone (电话); a patient's phone, in the patient lists, is their mobile (手机号).
    assert '<label for="phone">电话</label>' in page and "手机号" not in page
    assert "<th>手机号</th>" in text(manager.get("/patients/"))
    # A desk member who chose no language of their own, and a patient's friend, follow the clinic.
    desk_page = text(desk.get("/desk/"))
    assert '<html lang="zh-CN">' in desk_page and "前台" in desk_page
    invite = manager.client.application.test_client().get(f"/r/{referrer.personal_code}")
    assert '<html lang="zh-CN">' in text(invite)
    # Back to English from the same page.
    assert manager.post("/admin/settings", {**SETTINGS, "language": "en"}).status_code == 303
    page = text(manager.get("/admin/settings"))
    assert '<html lang="en">' in page and "Clinic settings" in page and "Settings saved." in page


def test_staff_who_chose_their_own_language_keep_it(manager, manager_user):
    speak("zh_CN", manager_user)
    assert "诊所设置" in text(manager.get("/admin/settings"))
    staff = db.session.get(Staff, manager_user.id)
    staff.language = "en"
    db.session.commit()
    page = text(manager.get("/admin/settings"))
    assert '<html lang="en">' in page and "Clinic settings" in page


def test_staff_can_go_back_to_the_clinics_language(manager, manager_user):
    speak("zh_CN", manager_user)
    page = text(manager.get("/admin/settings"))
    assert "诊所设置" in page and "诊所的语言" not in page, "nothing to go back to yet"
    assert manager.post("/account/language", {"language": "en", "next": "/admin/settings"}).status_code == 303
    page = text(manager.get("/admin/settings"))
    assert '<html lang="en">' in page and 'name="language" value="">Clinic\'s language</button>' in page
    assert manager.post("/account/language", {"language": "", "next": "/admin/settings"}).status_code == 303
    assert db.session.get(Staff, manager_user.id, populate_existing=True).language is None
    page = text(manager.get("/admin/settings"))
    assert '<html lang="zh-CN">' in page and "诊所设置" in page


@pytest.mark.parametrize("language", ["fr", "", "zh", "zh-CN", "EN", "zh_CN\x00", "<script>alert(1)</script>"])
def test_a_language_not_offered_is_refused_and_nothing_changes(manager, language):
    before = settings_changes()
    response = manager.post("/admin/settings", {**SETTINGS, "name": "Renamed", "language": language})
    assert response.status_code == 422
    page = text(response)
    assert "Choose one of the languages offered." in page and 'id="language-error"' in page
    assert "<script>alert(1)</script>" not in page
    assert clinic_language() == "en" and settings_changes() == before
    assert db.session.get(Clinic, 1).name != "Renamed"


def test_the_refusal_is_said_in_the_clinic_s_language(manager, manager_user):
    speak("zh_CN", manager_user)
    response = manager.post("/admin/settings", {**SETTINGS, "language": "fr"})
    assert response.status_code == 422 and "请选择所列语言之一。" in text(response)
    assert clinic_language() == "zh_CN"


def test_the_service_refuses_a_language_not_offered(app, manager_user):
    with pytest.raises(Refused) as refusal:
        update_clinic({"language": "fr", "name": "Renamed"}, Actor(staff_id=manager_user.id))
    assert refusal.value.reason == "bad_language" and refusal.value.field == "language"
    assert clinic_language() == "en" and db.session.get(Clinic, 1).name != "Renamed"


@pytest.fixture
def chinese_programme(manager_user, referrer, actor):
    """A Chinese clinic with a branch, a redeemed code (vouchers outstanding) and its audit trail."""
    speak("zh_CN", manager_user)
    create_branch("东区", "", Actor(staff_id=manager_user.id))
    return redemption.redeem_code(referrer.personal_code, friend(full_name="陈小红"), actor)


@pytest.mark.parametrize("url, words", [
    ("/admin/campaigns", ["活动", "新建活动", "专属推荐码", "推荐人："]),
    ("/admin/audit", ["操作日志", "操作", "结果", "全部"]),
    ("/admin/branches", ["分院", "添加分院", "员工所属分院", "管理员", "前台"]),
    ("/admin/staff", ["员工", "角色", "在所有设备上退出", "管理员"]),
    ("/admin/tiers", ["VIP", "专属特权", "添加等级"]),
    ("/admin/honours", ["年度最佳推荐人", "查看排名", "全部分院"]),
    ("/admin/reviews", ["待处理", "已处理"]),
    ("/admin/webhooks", ["接收端", "添加接收端", "最近投递"]),
    ("/admin/notifications", ["消息通知", "保存消息"]),
    ("/admin/api-tokens/", ["API令牌", "创建令牌"]),
    ("/admin/import", ["从表格导入患者", "下载模板（CSV）"]),
    ("/admin/posters", ["批量打印推荐海报", "下载推荐海报（PDF）"]),
    ("/leaderboard", ["推荐排行榜", "感谢您把我们推荐给亲友。"]),
])
def test_manager_pages_speak_the_clinic_s_chinese_words(manager, chinese_programme, url, words):
    response = manager.get(url)
    assert response.status_code == 200
    page = text(response)
    assert '<html lang="zh-CN">' in page
    missing = [word for word in words if word not in page]
    assert not missing, f"{url} lacks {missing}"


def test_the_dashboard_in_chinese_shows_yuan_and_chinese_days(manager, chinese_programme):
    page = text(manager.get("/admin/dashboard"))
    assert "转介绍数据看板" in page and "已推荐" in page and "已就诊" in page and "已缴费" in page
    assert "活动效果对比" in page and "推荐人：¥200.00代金券" in page
    liability = re.search(r'id="stat-liability">(.*?)</span>', page, re.S).group(1)
    assert liability.strip().startswith("¥") and "CN¥" not in page
    period = re.search(r'class="muted period-line">(.*?)</p>', page, re.S).group(1)
    assert len(CHINESE_DAY.findall(period)) == 2 and not ISO_DAY.search(period)
    assert "Friends registered" not in page and "Outstanding liability" not in page and "Campaigns compared" not in page


def test_the_audit_log_in_chinese_dates_its_events_in_chinese(manager, chinese_programme):
    page = text(manager.get("/admin/audit"))
    rows = re.findall(r'<tr><td class="nowrap">(.*?)</td>', page)
    assert rows and all(CHINESE_DAY.match(row) for row in rows)


def test_the_honours_page_in_chinese_names_the_referrer_of_the_year(manager, chinese_programme, actor):
    milestones.record_payment(chinese_programme.referral.friend_id, 120000, actor)
    page = text(manager.get("/admin/honours"))
    year = re.search(r"(\d{4})年度最佳推荐人", page)
    assert year, "the winner's title in Chinese"
    assert "1 位被推荐人已就诊并缴费" in page and "荣誉证书（PDF）" in page and "<th>排行榜</th>" in page
    assert CHINESE_DAY.search(page), "the last payment's day in Chinese"


def test_english_stays_the_default_on_the_manager_pages(manager, referrer, actor):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    page = text(manager.get("/admin/dashboard"))
    assert '<html lang="en">' in page and "Referral dashboard" in page
    assert re.search(r'id="stat-liability">\s*CN¥', page)
    period = re.search(r'class="muted period-line">(.*?)</p>', page, re.S).group(1)
    assert len(ISO_DAY.findall(period)) == 2 and not CHINESE_DAY.search(period)
    audit = text(manager.get("/admin/audit"))
    assert "Audit log" in audit and re.search(r'<tr><td class="nowrap">\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}</td>', audit)


def test_the_api_reference_translates_its_chrome_not_the_api(manager):
    """Under /api/ the language is the browser's Accept-Language; the API's own descriptions stay as written."""
    page = text(manager.get("/api/v1/docs", headers={"Accept-Language": "zh-CN,zh;q=0.9"}))
    assert "<h2>错误码</h2>" in page and "<h3>参数</h3>" in page and "<th>必填</th>" in page
    assert "<code>POST /api/v1/patients</code>" in page
    english = text(manager.get("/api/v1/docs"))
    assert "<h2>Error codes</h2>" in english and "<th>Required</th>" in english
