"""The services' words in Chinese and English: refusals, form errors, audit labels and API errors (issue 7).

A refusal's reason code is the same in both languages (the API's contract, the audit log's key);
only its message follows the reader: a staff member's own language on pages, Accept-Language on the API.
"""

from __future__ import annotations

import contextvars
import html
import re
from types import SimpleNamespace

import pytest
from flask import has_app_context
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent
from clinic.services import api_tokens
from clinic.services import staff as staff_service
from clinic.services.transaction import Actor
from clinic.web.templating import audit_details, audit_label, campaign_reward
from tests.conftest import Browser

FRIEND_FORM = {"full_name": "Chen Jie", "phone": "139 3333 4444", "display_name": "", "external_id": ""}
UNKNOWN_CODE = "00000000"  # a well-formed personal code nobody holds


def logged_in(app, staff, language: str | None = None) -> Browser:
    if language:
        staff_service.set_language(staff.id, language)
    browser = Browser(app.test_client())
    browser.login(staff.email)
    return browser


def form_key(page: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)


@pytest.mark.parametrize("language, expected, not_expected", [
    ("zh_CN", "没有患者持有这个推荐码。请与被推荐人核对。", "No patient holds this code"),
    (None, "No patient holds this code. Check it with the friend.", "没有患者"),
])
def test_an_unknown_code_at_the_desk_is_explained_in_the_staff_members_language(app, desk_user, language, expected,
                                                                                not_expected):
    desk = logged_in(app, desk_user, language)
    response = desk.post("/desk/lookup", {"code": UNKNOWN_CODE}, htmx=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 404
    assert expected in page and not_expected not in page


def test_a_mistyped_code_is_explained_in_chinese(app, desk_user):
    """The code checker's messages are marked at import time and read in the request's language."""
    desk = logged_in(app, desk_user, "zh_CN")
    page = desk.post("/desk/lookup", {"code": "ABC"}, htmx=True).get_data(as_text=True)
    assert "码的位数不对：专属推荐码为 8 位，刮刮卡和代金券码为 12 位。" in page


@pytest.mark.parametrize("language, expected", [
    ("zh_CN", "患者不能核销自己的推荐码：此人就是推荐码的持有人。"),
    ("en", "A patient cannot redeem their own code: this is the code's owner."),
])
def test_a_self_referral_is_refused_in_the_staff_members_language_with_an_english_reason(
        app, desk_user, referrer, language, expected):
    desk = logged_in(app, desk_user, language)
    lookup = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "phone": referrer.phone, "code": referrer.personal_code,
                                          "idempotency_key": form_key(lookup)}, htmx=True)
    assert response.status_code == 422
    assert expected in html.unescape(response.get_data(as_text=True))
    reasons = db.session.scalars(select(AuditEvent.reason).where(AuditEvent.action == "redemption")).all()
    assert reasons == ["self_referral"]


def test_the_friends_details_are_checked_in_chinese(app, desk_user, referrer):
    desk = logged_in(app, desk_user, "zh_CN")
    lookup = desk.post("/desk/lookup", {"code": referrer.personal_code}, htmx=True).get_data(as_text=True)
    response = desk.post("/desk/redeem", {**FRIEND_FORM, "full_name": "", "phone": "12",
                                          "code": referrer.personal_code, "idempotency_key": form_key(lookup)},
                         htmx=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "请填写姓名。" in page
    assert "电话号码为 6 到 15 位数字。" in page


@pytest.mark.parametrize("language, expected", [
    ("zh_CN", ["请填写诊所名称。", "未知时区：请使用 Asia/Shanghai 这样的名称。"]),
    (None, ["Enter the clinic's name.", "Unknown time zone: use a name like Asia/Shanghai."]),
])
def test_settings_form_errors_follow_the_managers_language(app, manager_user, language, expected):
    manager = logged_in(app, manager_user, language)
    response = manager.post("/admin/settings", {"name": "", "brand_colour": "#123456", "currency": "CNY",
                                                "timezone": "Mars/Olympus", "language": "en"})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 422
    for message in expected:
        assert message in page


def test_the_audit_log_names_actions_in_chinese(app, manager_user):
    manager = logged_in(app, manager_user, "zh_CN")
    page = manager.get("/admin/audit").get_data(as_text=True)
    assert ">登录<" in page  # the manager's own log-in


@pytest.mark.parametrize("language, label, enrolled, details, reward", [
    ("zh_CN", "代金券已使用", "已登记", "金额: ¥200.00", "¥200.00代金券，核销推荐码时"),
    ("en", "Voucher spent", "Enrolled", "amount: CN¥200.00", "CN¥200.00 off, when the code is redeemed"),
])
def test_audit_labels_details_and_campaign_rewards_are_in_the_readers_language(app, language, label, enrolled,
                                                                               details, reward):
    from clinic.services.clinic_settings import default_campaign

    spent = SimpleNamespace(details={"amount": 20000, "currency": "CNY"})
    with app.test_request_context(f"/?lang={language}"):
        assert audit_label("voucher.spent") == label
        assert audit_label("patient.enrolled") == enrolled
        assert audit_label("some.future_action") == "some.future_action"
        assert audit_details(spent) == details
        # An amount without its currency (a first payment recorded before it carried one) is the clinic's.
        assert audit_details(SimpleNamespace(details={"amount": 20000})) == details
        assert campaign_reward(default_campaign(), "referrer") == reward


def api_call(app, token: str, path: str, body: dict, language: str | None = None):
    headers = {"Authorization": f"Bearer {token}"}
    if language:
        headers["Accept-Language"] = language
    response = contextvars.Context().run(app.test_client().post, path, json=body, headers=headers)
    if has_app_context():
        db.session.rollback()
    return response


@pytest.mark.parametrize("body, status, code, english, chinese", [
    ({"code": UNKNOWN_CODE}, 404, "unknown_code", "No patient holds this code. Check it with the friend.",
     "没有患者持有这个推荐码。请与被推荐人核对。"),
    ({"code": 5}, 422, "validation_error", "code must be a string.", "code 必须是字符串。"),
    ({"code": "ABC"}, 422, "wrong_length",
     "That code has the wrong number of characters: personal codes have 8, card and voucher codes 12.",
     "码的位数不对：专属推荐码为 8 位，刮刮卡和代金券码为 12 位。"),
])
def test_api_errors_are_english_unless_chinese_is_asked_for_and_keep_their_code(app, manager_user, body, status, code,
                                                                                 english, chinese):
    token = api_tokens.create_token("Hospital HIS", api_tokens.SCOPES, Actor(staff_id=manager_user.id))[1]
    staff_service.set_language(manager_user.id, "zh_CN")  # the token's creator's language does not matter
    answers = {language: api_call(app, token, "/api/v1/codes/validate", body, language)
               for language in (None, "zh-CN", "zh-CN,zh;q=0.9,en;q=0.8", "fr")}
    for language, answer in answers.items():
        assert answer.status_code == status, (language, answer.get_json())
        assert answer.get_json()["error"]["code"] == code
    assert answers[None].get_json()["error"]["message"] == english
    assert answers["fr"].get_json()["error"]["message"] == english
    assert answers["zh-CN"].get_json()["error"]["message"] == chinese
    assert answers["zh-CN,zh;q=0.9,en;q=0.8"].get_json()["error"]["message"] == chinese


def test_the_money_limit_and_a_currency_without_decimals_read_in_chinese(app, desk_user, manager_user, referrer,
                                                                         actor):
    from clinic.services import clinic_settings, redemption
    from tests.conftest import friend

    clinic_settings.update_clinic({"currency": "JPY"}, Actor())
    friend_id = redemption.redeem_code(referrer.personal_code, friend(), actor).friend.id
    desk = logged_in(app, desk_user, "zh_CN")
    too_much = html.unescape(desk.post(f"/patients/{friend_id}/payment", {"amount": "2147483648"}).get_data(
        as_text=True))
    assert "金额不能超过 JP¥2,147,483,647。" in too_much
    decimals = html.unescape(desk.post(f"/patients/{friend_id}/payment", {"amount": "1.5"}).get_data(as_text=True))
    assert "JPY 金额没有小数：请填写整数。" in decimals
    token = api_tokens.create_token("Hospital HIS", api_tokens.SCOPES, Actor(staff_id=manager_user.id))[1]
    answer = api_call(app, token, f"/api/v1/patients/{friend_id}/payment", {"amount": 2**31}, "zh-CN")
    assert answer.get_json()["error"]["message"] == (
        "amount 必须是以最小货币单位计的整数，范围 0 到 2147483647（即 JP¥2,147,483,647）。")


def test_the_apis_own_errors_are_in_chinese_when_asked(app):
    response = contextvars.Context().run(app.test_client().get, "/api/v1/patients/1",
                                         headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 401
    assert response.get_json()["error"] == {"code": "unauthorized", "field": None,
                                            "message": "请发送有效的 API 令牌：Authorization: Bearer <token>。"}


@pytest.mark.parametrize("patient_language, reader_language, reward, expires", [
    ("zh_CN", "en", "¥200.00代金券", r"有效期至\d{4}年\d{1,2}月\d{1,2}日。"),
    ("en", "zh_CN", "CN¥200.00 off", r"valid until \d{4}-\d{2}-\d{2}\. "),
])
def test_a_patients_message_is_in_their_own_language_whatever_the_desk_reads(app, referrer, actor, monkeypatch,
                                                                              patient_language, reader_language,
                                                                              reward, expires):
    from clinic.services import notifications, redemption, webhooks
    from tests.conftest import friend

    sent = []
    monkeypatch.setattr(webhooks, "subscribed", lambda event_type: True)
    monkeypatch.setattr(webhooks, "emit", lambda event_type, data: sent.append((event_type, data)))
    notifications.set_preferences(referrer.id, "sms", patient_language, True, Actor())
    with app.test_request_context(f"/desk/redeem?lang={reader_language}"):
        redemption.redeem_code(referrer.personal_code, friend(), actor)
    [message] = [data for event_type, data in sent
                 if event_type == notifications.EVENT and data["template"] == "reward_earned"]
    assert message["language"] == patient_language
    assert reward in message["text"] and re.search(expires, message["text"]), message["text"]


TEMPLATE_MESSAGES = ('{{ _("Copy link") }}|{{ _("Hello %(name)s", name=who) }}|{{ pgettext("friends", "visited") }}|'
                     '{% autoescape false %}{{ _("Hello %(name)s", name=who) }}{% endautoescape %}|'
                     '{{ ngettext("%(num)d card", "%(num)d cards", 2, num=2) }}')


@pytest.mark.parametrize("language, expected", [
    ("en", "Copy link|Hello &lt;b&gt;Li|visited|Hello <b>Li|2 cards"),
    ("zh_CN", "复制链接|&lt;b&gt;Li，您好|已就诊|<b>Li，您好|2 cards"),
])
def test_templates_translate_escape_and_format_as_jinja_does_in_each_language(app, language, expected):
    """The finished-message tables (clinic/i18n.py) are per language, and variables are still escaped."""
    from flask import render_template_string
    from flask_babel import force_locale

    with app.test_request_context("/"):
        for other in ("zh_CN", "en", language):  # both tables filled first, in the same process
            with force_locale(other):
                rendered = render_template_string(TEMPLATE_MESSAGES, who="<b>Li")
    assert rendered == expected


def test_a_template_compiled_for_one_language_prints_the_next_readers_language(app):
    """Templates' literal messages compile to filters (clinic/i18n.py, LiteralMessages) that translate when the
    page is rendered: never folded into the compiled template in the language of the page that compiled it."""
    from flask_babel import force_locale

    source = TEMPLATE_MESSAGES + '|{{ _("Copy link").upper() }}|{{ _("Copy link")|length }}|{{ (_("Copy link")) }}'
    with app.test_request_context("/"):
        with force_locale("zh_CN"):
            template = app.jinja_env.from_string(source)
            chinese = template.render(who="<b>Li")
        with force_locale("en"):
            english = template.render(who="<b>Li")
    assert chinese == "复制链接|&lt;b&gt;Li，您好|已就诊|<b>Li，您好|2 cards|复制链接|4|复制链接"
    assert english == "Copy link|Hello &lt;b&gt;Li|visited|Hello <b>Li|2 cards|COPY LINK|9|Copy link"


@pytest.mark.parametrize("language, expected", [
    ("en", "changes: referrer's reward amount CN¥0.00 → CN¥200.00, friend's reward kind money off → a named service, "
           "card: friend's reward name — → “1 bed-day waived”, ends — → 2026-11-25 08:33, "
           "friend rewarded when the code is redeemed → at the friend's first visit, "
           "covers Personal codes and scratch cards → Scratch cards only, yearly cap on reward value — → CN¥1,000.00, "
           "managers need two-step login yes → no"),
    ("zh_CN", "更改: 推荐人奖励金额 ¥0.00 → ¥200.00, 被推荐人奖励类型 现金抵扣 → 指定服务, "
              "刮刮卡：被推荐人奖励名称 — → “1 bed-day waived”, 结束时间 — → 2026年11月25日 08:33, "
              "被推荐人奖励时机 核销推荐码时 → 被推荐人首次就诊时, "
              "适用范围 专属推荐码和刮刮卡 → 仅刮刮卡, 每年奖励金额上限 — → ¥1,000.00, 管理员须开启两步验证 是 → 否"),
])
def test_a_changed_setting_reads_as_money_names_and_times_not_python(app, language, expected):
    """A campaign's change read "referrer reward amount 0 → 20000, card friend reward label None → '1 bed-day
    waived', ends at None → '2026-11-25T00:33:02.376029'": minor units, Python's None and quotes, an ISO moment, and
    the settings' names untranslated in Chinese."""
    changed = SimpleNamespace(details={"currency": "CNY", "changes": {
        "referrer_reward_amount": [0, 20000], "friend_reward_kind": ["money", "service"],
        "card_friend_reward_label": [None, "1 bed-day waived"], "ends_at": [None, "2026-11-25T00:33:02.376029"],
        "friend_reward_stage": ["redemption", "visit"], "covers": ["both", "cards"],
        "cap_value_per_year": [None, 100000], "managers_need_two_step": [True, False]}})
    with app.test_request_context(f"/?lang={language}"):
        assert audit_details(changed) == expected
