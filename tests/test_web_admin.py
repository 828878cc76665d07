"""Manager pages: clinic settings with logo upload, the campaign, voiding, and the audit log."""

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Clinic, Voucher
from clinic.services import redemption
from clinic.services.money import MAX_AMOUNT_MINOR
from tests.conftest import counts, friend
from tests.test_importer import counted_statements

SETTINGS = {"name": "港湾口腔 Harbour Dental", "phone": "+86 21 5555 0100", "address": "88 Harbour Road",
            "brand_colour": "#123456", "currency": "CNY", "timezone": "Asia/Shanghai",
            "public_base_url": "https://refer.harbour.example"}
CAMPAIGN_FORM = {"name": "Spring", "referrer_reward_kind": "money", "referrer_reward_amount": "150.50",
                 "referrer_reward_label": "", "friend_reward_kind": "service", "friend_reward_amount": "",
                 "friend_reward_label": "¥200 meal voucher", "voucher_valid_days": "60"}


def image_bytes(fmt: str = "PNG", size=(64, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def clinic_row() -> dict:
    clinic = db.session.get(Clinic, 1)
    values = {c.name: getattr(clinic, c.name) for c in Clinic.__table__.columns}
    db.session.rollback()
    return values


def test_settings_are_saved_and_audited(manager):
    response = manager.post("/admin/settings", SETTINGS)
    assert response.status_code == 303
    clinic = clinic_row()
    assert clinic["name"] == "港湾口腔 Harbour Dental" and clinic["brand_colour"] == "#123456"
    assert clinic["public_base_url"] == "https://refer.harbour.example"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed")
                              .order_by(AuditEvent.id.desc()).limit(1))
    assert event.details["changes"]["name"][1] == "港湾口腔 Harbour Dental"
    assert manager.get("/brand.css").get_data(as_text=True).strip() == ":root { --brand: #123456; }"


def test_qr_codes_and_links_use_the_configured_public_address(manager, referrer):
    manager.post("/admin/settings", SETTINGS)
    page = manager.get(f"/patients/{referrer.id}").get_data(as_text=True)
    assert f"https://refer.harbour.example/r/{referrer.personal_code}" in page


@pytest.mark.parametrize("changes, message", [
    ({"name": ""}, "Enter the clinic"),
    ({"name": "n" * 121}, "longer than 120"),
    ({"brand_colour": "red; } body { display:none"}, "A colour like"),
    ({"brand_colour": ""}, "Pick a colour"),
    ({"currency": "BTC"}, "Not a valid choice"),
    ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
    ({"public_base_url": "javascript:alert(1)"}, "A web address like"),
    ({"public_base_url": "https://evil.example/\"><script>"}, "A web address like"),
    ({"phone": "<script>alert(1)</script>"}, "Digits, spaces"),
    ({"address": "a" * 301}, "longer than 300"),
    ({"name": "Clinic\u202eevil"}, "cannot be printed"),
])
def test_bad_settings_re_render_with_the_error_and_change_nothing(manager, changes, message):
    before = clinic_row()
    response = manager.post("/admin/settings", {**SETTINGS, **changes})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert "<script>alert(1)</script>" not in page
    assert clinic_row() == before


def campaign_amounts() -> tuple:
    campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)))
    return campaign.referrer_reward_amount, campaign.friend_reward_amount, campaign.cap_value_per_year


def test_a_new_currency_before_any_referral_keeps_the_amounts_the_manager_typed(manager):
    """Campaign amounts are minor units of the clinic's currency: CNY 100.00 is 10000, which in JPY (no decimals)
    would read ¥10,000. The currency change moves them so that the same number shows, and says so in the audit."""
    from clinic.services.transaction import atomic

    with atomic():
        db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True))).cap_value_per_year = 500_00
    before = campaign_amounts()
    response = manager.post("/admin/settings", {**SETTINGS, "currency": "JPY"})
    assert response.status_code == 303
    assert campaign_amounts() == tuple(amount // 100 for amount in before)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed")
                              .order_by(AuditEvent.id.desc()))
    assert event.details["changes"]["currency"] == ["CNY", "JPY"] and event.details["campaign_amounts"]
    assert manager.post("/admin/settings", {**SETTINGS, "currency": "CNY"}).status_code == 303
    assert campaign_amounts() == before


def test_the_currency_stays_once_friends_were_referred_or_an_amount_cannot_be_shown(manager, referrer, actor):
    from clinic.services.transaction import atomic

    with atomic():
        db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True))).referrer_reward_amount = 199_99
    before_amounts, before_row = campaign_amounts(), clinic_row()
    cannot_show = manager.post("/admin/settings", {**SETTINGS, "currency": "JPY"})
    assert cannot_show.status_code == 422 and "199.99" in cannot_show.get_data(as_text=True)
    assert (campaign_amounts(), clinic_row()) == (before_amounts, before_row)

    redemption.redeem_code(referrer.personal_code, friend(), actor)
    refused = manager.post("/admin/settings", {**SETTINGS, "currency": "USD"})
    assert refused.status_code == 422 and "cannot change once friends have been referred" in refused.get_data(
        as_text=True)
    assert (campaign_amounts(), clinic_row()) == (before_amounts, before_row)


def test_a_new_currency_is_refused_when_an_amount_would_not_fit_its_column(manager, backend):
    """¥2,000,000,000 in JPY would become CN¥2,000,000,000.00, 200,000,000,000 fen: more than the column holds
    (on PostgreSQL a 500, "integer out of range")."""
    from clinic.services.transaction import atomic

    assert manager.post("/admin/settings", {**SETTINGS, "currency": "JPY"}).status_code == 303
    with atomic():
        db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True))).referrer_reward_amount = 2 * 10**9
    before_amounts, before_row = campaign_amounts(), clinic_row()
    refused = manager.post("/admin/settings", {**SETTINGS, "currency": "CNY"})
    assert refused.status_code == 422
    assert "more than CNY amounts can be (at most 21474836.47): change it first" in refused.get_data(as_text=True)
    assert (campaign_amounts(), clinic_row()) == (before_amounts, before_row)


def test_a_logo_upload_is_checked_and_re_encoded(manager):
    data = {**SETTINGS, "logo": (io.BytesIO(image_bytes("PNG")), "logo.png")}
    response = manager.post("/admin/settings", data, content_type="multipart/form-data")
    assert response.status_code == 303
    filename = clinic_row()["logo_filename"]
    assert filename.endswith(".png")
    served = manager.get(f"/uploads/{filename}")
    assert served.status_code == 200 and served.data.startswith(b"\x89PNG")
    assert manager.get("/uploads/../instance/secret_key").status_code == 404


def test_a_replaced_logo_is_deleted_and_one_whose_settings_were_refused_is_not_kept(manager, app, referrer, actor):
    folder = Path(app.config["UPLOAD_FOLDER"])
    for _ in range(3):
        assert manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(image_bytes("PNG")), "logo.png")},
                            content_type="multipart/form-data").status_code == 303
    assert [path.name for path in folder.iterdir()] == [clinic_row()["logo_filename"]]

    redemption.redeem_code(referrer.personal_code, friend(), actor)  # the currency may no longer change
    refused = manager.post("/admin/settings", {**SETTINGS, "currency": "USD",
                                               "logo": (io.BytesIO(image_bytes("PNG")), "logo.png")},
                           content_type="multipart/form-data")
    assert refused.status_code == 422
    assert [path.name for path in folder.iterdir()] == [clinic_row()["logo_filename"]]


@pytest.mark.parametrize("mode, fmt", [("CMYK", "JPEG"), ("P", "PNG"), ("I;16", "PNG"), ("LA", "WEBP")])
def test_a_logo_in_any_colour_mode_is_taken(manager, mode, fmt):
    """A print designer's CMYK JPEG, a palette or 16-bit PNG: converted to a mode its format can store."""
    buffer = io.BytesIO()
    Image.new(mode, (40, 20)).save(buffer, format=fmt)
    response = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(buffer.getvalue()), "logo")},
                            content_type="multipart/form-data")
    assert response.status_code == 303
    served = manager.get(f"/uploads/{clinic_row()['logo_filename']}")
    with Image.open(io.BytesIO(served.data)) as stored:
        assert stored.format == fmt and stored.size == (40, 20)


def test_a_logo_the_server_cannot_store_is_told_as_the_server_s_fault(manager, app, tmp_path, caplog):
    """An upload folder the app's user may not write: 503 with a message for the manager and the reason in the log,
    not "not an image"; nothing changed."""
    before = clinic_row()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app.config["UPLOAD_FOLDER"] = str(blocker / "uploads")
    response = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(image_bytes("PNG")), "logo.png")},
                            content_type="multipart/form-data")
    assert response.status_code == 503
    assert "could not be stored on the server" in response.get_data(as_text=True)
    assert "NotADirectoryError" in caplog.text
    assert clinic_row() == before


@pytest.mark.parametrize("payload, name", [
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "logo.svg"),
    (b"GIF89a not really", "logo.gif"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "broken.png"),
    (image_bytes("PNG", (400, 300))[:500], "truncated.png"),  # accepted while WeasyPrint's import allowed it
    (b"", "empty.png"),
    (b"#!/bin/sh\nrm -rf /", "logo.png"),
])
def test_bad_logo_uploads_are_refused_with_a_message(manager, payload, name):
    before = clinic_row()
    response = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(payload), name)},
                            content_type="multipart/form-data")
    assert response.status_code == 422
    assert "logo" in response.get_data(as_text=True).lower()
    assert clinic_row() == before


def test_oversized_images_and_uploads_are_refused(manager):
    before = clinic_row()
    huge = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(image_bytes("PNG", (5000, 10))), "w.png")},
                        content_type="multipart/form-data")
    assert huge.status_code == 422 and "4000 pixels" in huge.get_data(as_text=True)
    far_too_big = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(b"0" * (11 * 1024 * 1024)),
                                                                        "big.png")}, content_type="multipart/form-data")
    assert far_too_big.status_code == 413
    assert clinic_row() == before


@pytest.mark.parametrize("megabytes", [1.01, 2, 9.9])
def test_a_logo_over_1_mb_is_refused_at_its_field_and_the_rest_of_the_form_is_kept(manager, megabytes):
    """Werkzeug used to refuse such a form (a photo from a phone) before it was read: a bare "Too large" page, and
    everything the manager had typed was lost. Up to 10 MB the form is read and the logo refused next to it."""
    before = clinic_row()
    photo = image_bytes("JPEG", (40, 20))
    photo += b"\0" * (int(megabytes * 1024 * 1024) - len(photo))
    response = manager.post("/admin/settings", {**SETTINGS, "logo": (io.BytesIO(photo), "photo.jpg")},
                            content_type="multipart/form-data")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert ('<p class="field-error" id="logo-error" role="alert">The logo file can be at most 1 MB: save it with fewer '
            'pixels, or as a JPEG or WebP.</p>') in page
    assert 'value="港湾口腔 Harbour Dental"' in page and 'value="https://refer.harbour.example"' in page
    assert "88 Harbour Road" in page
    assert clinic_row() == before


def test_the_settings_page_says_which_logos_it_takes(manager):
    page = manager.get("/admin/settings").get_data(as_text=True)
    assert '<p class="hint" id="logo-hint">PNG, JPEG or WebP, at most 1 MB and 4000 pixels on a side.</p>' in page


def test_the_campaign_form_sets_the_rewards_in_minor_units(manager):
    response = manager.post("/admin/campaign", CAMPAIGN_FORM)
    assert response.status_code == 303
    campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)))
    assert (campaign.referrer_reward_kind, campaign.referrer_reward_amount) == ("money", 15050)
    assert (campaign.friend_reward_kind, campaign.friend_reward_label) == ("service", "¥200 meal voucher")
    assert campaign.voucher_valid_days == 60
    page = manager.get("/admin/campaign", follow_redirects=True).get_data(as_text=True)
    assert 'value="150.50"' in page


@pytest.mark.parametrize("currency, largest, over, limit", [
    ("CNY", "21,474,836.47", "21474836.48", "CN¥21,474,836.47"),
    ("JPY", "2,147,483,647", "2147483648", "¥2,147,483,647"),
])
def test_campaign_amounts_and_caps_go_up_to_what_their_column_holds(manager, currency, largest, over, limit):
    """The payment form's limit, in the clinic's currency: ¥1,500,000 in JPY is an ordinary reward for a hospital."""
    assert manager.post("/admin/settings", {**SETTINGS, "currency": currency}).status_code == 303
    form = {**CAMPAIGN_FORM, "referrer_reward_amount": largest, "cap_value_per_year": largest}
    assert manager.post("/admin/campaign", form).status_code == 303
    assert campaign_amounts() == (MAX_AMOUNT_MINOR, 0, MAX_AMOUNT_MINOR)
    for field in ("referrer_reward_amount", "cap_value_per_year"):
        refused = manager.post("/admin/campaign", {**form, field: over})
        assert refused.status_code == 422 and f"The amount cannot be more than {limit}." in refused.get_data(
            as_text=True)
    assert campaign_amounts() == (MAX_AMOUNT_MINOR, 0, MAX_AMOUNT_MINOR)


def test_the_campaign_can_pay_different_rewards_for_scratch_cards(manager):
    form = {**CAMPAIGN_FORM, "card_rewards_differ": "y", "card_referrer_reward_kind": "service",
            "card_referrer_reward_label": "¥200 meal voucher", "card_friend_reward_kind": "money",
            "card_friend_reward_amount": "50"}
    assert manager.post("/admin/campaign", form).status_code == 303
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.card_referrer_reward_label, campaign.card_friend_reward_amount) == ("¥200 meal voucher", 5000)
    page = manager.get("/admin/campaign", follow_redirects=True).get_data(as_text=True)
    assert re.search(r'name="card_rewards_differ"[^>]*checked|checked[^>]*name="card_rewards_differ"', page)
    assert manager.post("/admin/campaign", CAMPAIGN_FORM).status_code == 303
    assert db.session.scalar(select(Campaign)).card_referrer_reward_kind is None
    refused = manager.post("/admin/campaign", {**form, "card_friend_reward_amount": "lots"})
    assert refused.status_code == 422 and "as a number" in refused.get_data(as_text=True)


@pytest.mark.parametrize("changes, message", [
    ({"name": ""}, "Name the campaign"),
    ({"referrer_reward_amount": "abc"}, "as a number"),
    ({"referrer_reward_amount": "-5"}, "cannot be negative"),
    ({"referrer_reward_amount": "1.234"}, "at most 2 decimal places"),
    ({"referrer_reward_amount": "1e9"}, "cannot be more than"),
    ({"referrer_reward_amount": "NaN"}, "cannot be negative"),
    ({"referrer_reward_amount": "0"}, "reward of nothing"),
    ({"friend_reward_label": ""}, "Name the service"),
    ({"friend_reward_label": "x" * 81}, "1 to 80 characters"),
    ({"friend_reward_label": "free\x00meal"}, "cannot be printed"),
    ({"name": "Spring\x07"}, "cannot be printed"),
    ({"friend_reward_kind": "bitcoin"}, "Not a valid choice"),
    ({"voucher_valid_days": "0"}, "Between 1 and 3650"),
    ({"voucher_valid_days": "ten"}, "Not a valid integer"),
    ({"voucher_valid_days": "99999999999999999999"}, "Between 1 and 3650"),
])
def test_bad_campaign_input_is_refused_and_changes_nothing(manager, changes, message):
    before = db.session.scalar(select(Campaign)).updated_at
    db.session.rollback()
    response = manager.post("/admin/campaign", {**CAMPAIGN_FORM, **changes})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(Campaign)).updated_at == before


def test_a_manager_voids_a_voucher_with_a_reason(manager, referrer, actor):
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    assert manager.get(f"/admin/vouchers/{voucher.id}/void").status_code == 200
    before = counts()
    refused = manager.post(f"/admin/vouchers/{voucher.id}/void", {"reason": ""})
    assert refused.status_code == 422 and "Say why" in refused.get_data(as_text=True)
    assert counts() == before
    done = manager.post(f"/admin/vouchers/{voucher.id}/void", {"reason": "Patient asked to cancel"})
    assert done.status_code == 303
    assert db.session.get(Voucher, voucher.id).void_reason == "Patient asked to cancel"
    again = manager.post(f"/admin/vouchers/{voucher.id}/void", {"reason": "Twice"})
    assert again.status_code == 422 and "voided" in again.get_data(as_text=True)
    assert manager.post("/admin/vouchers/99999/void", {"reason": "nope"}).status_code == 404


def test_the_audit_log_names_many_patients_without_a_query_each(manager, make_patient, actor):
    referrers = [make_patient(full_name=f"Referrer {n}")[0] for n in range(12)]
    for n, patient in enumerate(referrers):
        redemption.redeem_code(patient.personal_code, friend(f"Friend {n}", f"1393333{n:04d}"), actor)
    with counted_statements() as statements:
        page = manager.get("/admin/audit", query_string={"action": "redemption"}).get_data(as_text=True)
    assert all(f"Referrer {n}" in page for n in range(12))
    patient_reads = [s for s in statements if "FROM patients" in s]
    assert len(patient_reads) == 1, "\n".join(s.replace("\n", " ")[:60] + s.replace("\n", " ")[-60:] for s in statements)


def test_the_audit_log_filters_by_action_and_outcome(manager, referrer, actor):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    with pytest.raises(Exception):
        redemption.redeem_code("2222-2222", friend(), actor)
    page = manager.get("/admin/audit", query_string={"action": "redemption", "outcome": "refused"}).get_data(as_text=True)
    assert "mistyped_code" in page and "voucher.issued</td>" not in page
    everything = manager.get("/admin/audit").get_data(as_text=True)
    assert "voucher.issued" in everything and "login" in everything
    for bad in [{"staff_id": "abc"}, {"before": "-1"}, {"patient_id": "9" * 40}, {"action": "x" * 5000}]:
        assert manager.get("/admin/audit", query_string=bad).status_code == 200


def _visible(page: str) -> str:
    """The page's text as read: no tags, no attributes (the stored key stays in a ``title`` for the curious)."""
    return re.sub(r"<[^>]+>", " ", page)


def test_the_audit_log_says_why_an_attempt_was_refused_in_words_not_keys(manager, referrer, actor, make_patient):
    """Refusals read "refused existing_patient" even in Chinese: the reason is a word for people, in their language."""
    with pytest.raises(Exception):
        redemption.redeem_code(referrer.personal_code, friend("Wang Li", "13811112222"), actor)
    make_patient(full_name="Old Friend", phone="13955556666")
    with pytest.raises(Exception):
        redemption.redeem_code(referrer.personal_code, friend("Old Friend", "13955556666"), actor)
    page = _visible(manager.get("/admin/audit", query_string={"outcome": "refused"}).get_data(as_text=True))
    assert "self-referral" in page and "already a patient" in page
    assert "self_referral" not in page and "existing_patient" not in page
    assert "Referral code redemption" in page and "Referral code redeemed" not in page
    assert manager.post("/account/language", {"language": "zh_CN", "next": "/admin/audit"}).status_code == 303
    chinese = _visible(manager.get("/admin/audit", query_string={"outcome": "refused"}).get_data(as_text=True))
    assert "本人推荐本人" in chinese and "已是本院患者" in chinese and "self" not in chinese
