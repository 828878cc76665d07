"""Referral posters, checked as a printer and a phone would: rasterised, scanned, read, fonts embedded."""

from __future__ import annotations

import io
import math
import subprocess
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pikepdf
import pytest
import zxingcpp
from PIL import Image, ImageChops, ImageStat
from sqlalchemy import insert

from clinic import create_app
from clinic.extensions import db
from clinic.models import Patient
from clinic.models._time import utcnow
from clinic.services import clinic_settings, posters
from clinic.services.codes import format_code, generate_personal_code
from clinic.services.errors import Refused
from clinic.services.patients import (PatientDetails, enrol_patient, hash_token, rotate_progress_link,
                                      set_poster_consent)
from clinic.services.transaction import Actor
from tests.conftest import CAMPAIGN, Browser
from tests.printcheck import embedded_fonts, pdf_text, word_boxes

CLINIC = "Harbour Family Dental 港湾口腔"
CLINIC_PHONE = "+86 21 5555 0100"
FULL_NAME, DISPLAY_NAME, PHONE = "王丽娟", "王丽", "13912345678"
PAPER = [(design, size) for design in posters.DESIGNS for size in posters.SIZES]
PAGE_POINTS = {"A4": (595, 842), "A5": (420, 595)}
MIN_QR_MM = {"A4": 60, "A5": 45}  # the printed QR, quiet zone included


@dataclass
class Printed:
    code: str
    folder: Path

    def pdf(self, design: str, size: str) -> Path:
        return self.folder / f"{design}-{size}.pdf"

    def png(self, design: str) -> Path:
        return self.folder / f"{design}.png"


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> Printed:
    """Every design and size rendered once for a patient who agreed to show their name.

    Rendering reads the database but does not depend on which one, so this runs once on SQLite
    and keeps the suite fast; the database-dependent paths are tested per backend below.
    """
    folder = tmp_path_factory.mktemp("posters")
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'p.db'}",
                      "UPLOAD_FOLDER": str(folder / "uploads"), "PUBLIC_BASE_URL": "https://clinic.test"})
    with app.app_context():
        db.create_all()
        logo = io.BytesIO()
        Image.new("RGB", (300, 120), "#0f766e").save(logo, "PNG")
        logo.seek(0)
        clinic_settings.update_clinic({
            "name": CLINIC, "phone": CLINIC_PHONE, "address": "88 Harbour Road, Shanghai", "currency": "CNY",
            "logo_filename": clinic_settings.save_logo(logo, app.config["UPLOAD_FOLDER"])}, Actor())
        clinic_settings.update_default_campaign(CAMPAIGN, Actor())
        patient, _ = enrol_patient(PatientDetails(full_name=FULL_NAME, display_name=DISPLAY_NAME, phone=PHONE,
                                                  name_on_posters=True), Actor())
        for design, size in PAPER:
            (folder / f"{design}-{size}.pdf").write_bytes(posters.poster_pdf(patient, design, size))
        for design in posters.DESIGNS:
            (folder / f"{design}.png").write_bytes(posters.poster_png(patient, design))
        code = patient.personal_code
        db.session.remove()
        db.engine.dispose()
    return Printed(code=code, folder=folder)


def scan(image: Image.Image, dpi: float) -> list[tuple[str, str, float]]:
    """(text, error correction level, width of the symbol in mm) for each QR code a phone would read."""
    found = []
    for result in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode):
        left, right = result.position.top_left, result.position.top_right
        found.append((result.text, result.ec_level, math.dist((left.x, left.y), (right.x, right.y)) / dpi * 25.4))
    return found


def scan_pdf(pdf: Path, workdir: Path, dpi: int = 150) -> list[tuple[str, str, float]]:
    prefix = workdir / pdf.stem
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", str(pdf), str(prefix)], check=True)
    with Image.open(f"{prefix}.png") as image:
        return scan(image, dpi)


def page_count(pdf: bytes) -> int:
    with pikepdf.open(io.BytesIO(pdf)) as document:
        return len(document.pages)


@pytest.mark.parametrize(("design", "size"), PAPER)
def test_every_poster_is_one_page_whose_big_qr_scans_to_the_invite_url(printed, tmp_path, design, size):
    pdf = printed.pdf(design, size)
    with pikepdf.open(pdf) as document:
        assert len(document.pages) == 1
        assert [round(float(v)) for v in document.pages[0].mediabox[2:]] == list(PAGE_POINTS[size])
    [(text, ec_level, symbol_mm)] = scan_pdf(pdf, tmp_path)
    assert text == f"https://clinic.test/r/{printed.code}"
    assert ec_level == "M"
    # The symbol is 29 of the 37 modules the QR takes with its quiet zone (version 3).
    assert symbol_mm * 37 / 29 >= MIN_QR_MM[size]


@pytest.mark.parametrize(("design", "size"), PAPER)
def test_posters_print_chinese_names_and_the_offer_but_never_the_full_name_or_phone(printed, design, size):
    pdf = printed.pdf(design, size)
    text = pdf_text(pdf)
    assert CLINIC in text
    assert f"{DISPLAY_NAME} invites you" in text
    assert CAMPAIGN["friend_reward_label"] in text
    assert format_code(printed.code) in text
    assert CLINIC_PHONE in text
    assert FULL_NAME not in text and PHONE not in text and PHONE[-4:] not in text
    fonts = embedded_fonts(pdf)
    assert any("NotoSansCJK" in name.replace("-", "") and embedded for name, embedded in fonts), fonts
    assert all(embedded for _, embedded in fonts), fonts
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert len(images.splitlines()) > 2, "the clinic's logo is missing"


@pytest.mark.parametrize("design", posters.DESIGNS)
def test_the_phone_image_is_1080_by_1920_and_scans(printed, design):
    with Image.open(printed.png(design)) as image:
        assert image.format == "PNG"
        assert image.size == (1080, 1920)
        [(text, _, _)] = scan(image.convert("RGB"), dpi=254)
    assert text == f"https://clinic.test/r/{printed.code}"


def test_the_three_designs_look_different(printed):
    def thumbnail(design):
        with Image.open(printed.png(design)) as image:
            return image.convert("L").resize((108, 192))

    for one, other in [("classic", "bold"), ("classic", "minimal"), ("bold", "minimal")]:
        difference = ImageChops.difference(thumbnail(one), thumbnail(other))
        assert ImageStat.Stat(difference).rms[0] > 20, (one, other)


def test_a_name_is_printed_only_with_consent_and_no_campaign_means_a_plain_welcome(app, make_patient):
    patient, _ = make_patient(full_name="Wang Li Hua", display_name="Wang Li", phone="13911112222")
    text = pdf_text_of(posters.poster_pdf(patient, "minimal", "A5"))
    assert "A friend invites you" in text
    assert "Wang Li" not in text and "13911112222" not in text
    assert "1 bed-day waived" in text

    set_poster_consent(patient.id, True, Actor())
    campaign = clinic_settings.default_campaign()
    campaign.ends_at = utcnow() - timedelta(days=1)
    db.session.commit()
    text = pdf_text_of(posters.poster_pdf(patient, "bold", "A4"))
    assert "Wang Li invites you" in text and "Wang Li Hua" not in text
    assert "1 bed-day waived" not in text
    assert "You are welcome at Test Clinic" in " ".join(text.split())


def image_resolutions(pdf: bytes, workdir: Path) -> list[tuple[float, float]]:
    """(x-ppi, y-ppi) of each image in the PDF, from poppler's pdfimages: the two differ when it is stretched."""
    path = workdir / "printed.pdf"
    path.write_bytes(pdf)
    listing = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    return [(float(line.split()[12]), float(line.split()[13])) for line in listing.splitlines()[2:]]


@pytest.mark.parametrize("shape", [(2000, 100), (100, 400)])
def test_a_wide_or_tall_logo_keeps_its_shape_on_every_poster(app, make_patient, tmp_path, shape):
    """A 2000 x 100 wordmark was squashed about four times across (held at the logo's height, cut to its width)."""
    logo = io.BytesIO()
    Image.new("RGB", shape, "#0f766e").save(logo, "PNG")
    logo.seek(0)
    clinic_settings.update_clinic({"logo_filename": clinic_settings.save_logo(logo, app.config["UPLOAD_FOLDER"])},
                                  Actor())
    patient, _ = make_patient()
    for design in posters.DESIGNS:
        for size in (*posters.SIZES, posters.PHONE):
            [(x_ppi, y_ppi)] = image_resolutions(posters._render([patient], design, size), tmp_path)
            assert abs(x_ppi - y_ppi) <= 1, f"{design} {size}: the logo is stretched ({x_ppi} x {y_ppi} ppi)"


LONG_ADDRESS = ("Building 7, Unit 1203, 888 Harbour Road, Pudong New Area, Shanghai 200120, China · "
                "上海市浦东新区港湾路888号7号楼1203室 · Entrance via the north lobby; parking available in the basement (B2), "
                "metro line 2 exit 4, five minutes on foot. Please bring your referral code and an identity card "
                "to the front desk on the ground floor.")[:300]
LONG_CLINIC = ("Harbour Family Dental & Orthodontic Specialists of Greater Shanghai 港湾口腔医院集团上海浦东新区分院 "
               "International Smile Centre")[:111]
LONG_DISPLAY_NAME = "Alexandra-Josephine Wolfeschlegelsteinhausen-Bergerdorff Li"[:60]


@pytest.mark.parametrize(("name", "address", "display_name"), [
    (CLINIC, LONG_ADDRESS, LONG_DISPLAY_NAME),  # the longest address and name on posters the forms allow
    (LONG_CLINIC, LONG_ADDRESS[:221], DISPLAY_NAME),
], ids=["long-address-and-inviter", "long-clinic-name-and-address"])
def test_long_names_and_addresses_stay_on_every_poster(app, make_patient, tmp_path, name, address, display_name):
    """The footer was pushed off the page (the poster is one page high, overflow hidden): the address vanished."""
    logo = io.BytesIO()
    Image.new("RGB", (300, 120), "#0f766e").save(logo, "PNG")
    logo.seek(0)
    clinic_settings.update_clinic({"name": name, "address": address, "phone": CLINIC_PHONE,
                                   "logo_filename": clinic_settings.save_logo(logo, app.config["UPLOAD_FOLDER"])},
                                  Actor())
    patient, _ = make_patient(display_name=display_name)
    set_poster_consent(patient.id, True, Actor())
    for design in posters.DESIGNS:
        for size in (*posters.SIZES, posters.PHONE):
            path = tmp_path / f"{design}-{size}.pdf"
            path.write_bytes(posters._render([patient], design, size))
            pages = word_boxes(path)
            assert len(pages) == 1, f"{design} {size}: {len(pages)} pages"
            page = pages[0]
            inside = [word for word, x0, y0, x1, y1 in page.words
                      if x0 >= 0 and y0 >= 0 and x1 <= page.width and y1 <= page.height]
            outside = [word for word, *_ in page.words if word not in inside]
            assert not outside, f"{design} {size}: off the page: {' '.join(outside)}"
            printed = "".join(inside)
            for text in (name, address, display_name, CLINIC_PHONE):
                assert text.replace(" ", "") in printed, f"{design} {size}: {text!r} is not all on the page"
            [(url, _, _)] = scan_pdf(path, tmp_path, dpi=100)
            assert url == f"https://clinic.test/r/{patient.personal_code}"


def test_an_emoji_in_a_name_prints_in_colour_not_as_a_box(app, make_patient, tmp_path):
    """"Lily 🌸" printed a box over the next letters: no font in the stack had the flower (Noto Color Emoji now)."""
    patient, _ = make_patient(display_name="Lily 🌸")
    set_poster_consent(patient.id, True, Actor())
    path = tmp_path / "poster.pdf"
    path.write_bytes(posters.poster_pdf(patient, "classic", "A4"))
    assert "Lily 🌸 invites you" in pdf_text(path)
    fonts = embedded_fonts(path)
    assert any("Emoji" in name and embedded for name, embedded in fonts), fonts


def pdf_text_of(pdf: bytes) -> str:
    return subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


@pytest.mark.parametrize(("colour", "ink"), [("#0f766e", "#ffffff"), ("#fde047", "#111827"), ("#000000", "#ffffff")])
def test_text_on_and_off_the_brand_colour_stays_readable(colour, ink):
    brand = posters.Brand.from_colour(colour)
    assert brand.ink == ink
    assert posters._contrast_with_white(tuple(int(brand.text[i:i + 2], 16) for i in (1, 3, 5))) >= 4.5


@pytest.mark.parametrize(("design", "size", "expected"), [
    ("", "", ("classic", "A4")), (None, None, ("classic", "A4")), (" Bold", "a5", ("bold", "A5"))])
def test_poster_options_have_defaults_and_ignore_case(design, size, expected):
    assert posters.poster_options(design, size) == expected


def test_the_patient_downloads_their_own_posters_privately(browser, make_patient):
    patient, token = make_patient()
    page = browser.get(f"/p/{token}").get_data(as_text=True)
    for link in (f"/p/{token}/poster.pdf?size=A4", f"/p/{token}/poster.pdf?size=A5", f"/p/{token}/poster.png"):
        assert link in page
    pdf = browser.get(f"/p/{token}/poster.pdf", query_string={"design": "bold", "size": "A5"})
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.headers["Cache-Control"] == "no-store" and pdf.headers["Referrer-Policy"] == "no-referrer"
    filename = f"poster-{format_code(patient.personal_code)}-bold-A5.pdf"
    assert pdf.headers["Content-Disposition"] == f'inline; filename="{filename}"'
    assert pdf.data.startswith(b"%PDF") and page_count(pdf.data) == 1
    png = browser.get(f"/p/{token}/poster.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.headers["Cache-Control"] == "no-store"
    assert Image.open(io.BytesIO(png.data)).size == (1080, 1920)


def test_a_rotated_or_unknown_token_gets_the_progress_404(browser, make_patient):
    patient, token = make_patient()
    rotate_progress_link(patient.id, Actor())
    unknown = browser.get("/p/" + "x" * 32)
    for url in (f"/p/{token}/poster.pdf", f"/p/{token}/poster.png", "/p/" + "x" * 32 + "/poster.pdf"):
        response = browser.get(url)
        assert response.status_code == 404
        assert response.data == unknown.data
        assert response.headers["Cache-Control"] == "no-store"
    assert browser.get(f"/p/{token}/poster.gif").status_code == 404


@pytest.mark.parametrize("query", [{"design": "fancy"}, {"size": "A3"}, {"design": "<script>"}, {"size": "x" * 500}])
def test_an_unknown_design_or_size_is_a_400_with_the_reason(browser, desk, make_patient, query):
    patient, token = make_patient()
    for client, url in ((browser, f"/p/{token}/poster.pdf"), (desk, f"/patients/{patient.id}/poster.pdf")):
        response = client.get(url, query_string=query)
        assert response.status_code == 400
        assert "Unknown poster" in response.get_data(as_text=True)
        assert response.headers["Cache-Control"] == "no-store"
    if "design" in query:
        assert desk.get(f"/patients/{patient.id}/poster.png", query_string=query).status_code == 400


def test_staff_download_posters_from_the_patient_page(app, desk, make_patient):
    patient, _ = make_patient()
    anonymous = Browser(app.test_client())
    for kind in ("pdf", "png"):
        assert anonymous.get(f"/patients/{patient.id}/poster.{kind}").status_code == 302  # to the login page
    page = desk.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert f'action="/patients/{patient.id}/poster.pdf"' in page
    assert f'formaction="/patients/{patient.id}/poster.png"' in page
    response = desk.get(f"/patients/{patient.id}/poster.pdf", query_string={"design": "minimal", "size": "A5"})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith("inline; ")
    assert page_count(response.data) == 1
    assert desk.get(f"/patients/{patient.id}/poster.png").mimetype == "image/png"
    assert desk.get("/patients/999999/poster.pdf").status_code == 404


def enrolled_at(patient_id: int, when: datetime) -> None:
    db.session.get(Patient, patient_id).enrolled_at = when
    db.session.commit()


def test_a_manager_prints_everyone_enrolled_in_a_range_newest_first(manager, make_patient):
    page = manager.get("/admin/posters")
    assert page.status_code == 200
    today = clinic_settings.clinic_today().isoformat()
    assert f'value="{today}"' in page.get_data(as_text=True)
    assert 'href="/admin/posters"' in page.get_data(as_text=True)
    codes = [make_patient()[0].personal_code for _ in range(3)]
    response = manager.get("/admin/posters.pdf",
                           query_string={"from": today, "to": today, "design": "bold", "size": "A5"})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert page_count(response.data) == 3
    text = pdf_text_of(response.data)
    assert [text.index(format_code(code)) for code in reversed(codes)] == sorted(
        text.index(format_code(code)) for code in codes)


def test_the_range_is_in_the_clinic_time_zone(app, make_patient):
    patient, _ = make_patient()
    enrolled_at(patient.id, datetime(2024, 5, 1, 17, 0))  # 01:00 on 2 May in Shanghai
    assert posters.enrolled_between(date(2024, 5, 2), date(2024, 5, 2)) == [patient]
    assert posters.enrolled_between(date(2024, 4, 30), date(2024, 5, 3)) == [patient]
    with pytest.raises(Refused, match="Nobody was enrolled"):
        posters.enrolled_between(date(2024, 5, 1), date(2024, 5, 1))
    clinic_settings.update_clinic({"timezone": "UTC"}, Actor())
    assert posters.enrolled_between(date(2024, 5, 1), date(2024, 5, 1)) == [patient]


def test_more_than_200_posters_are_refused_with_a_message(manager):
    db.session.execute(insert(Patient), [
        {"full_name": f"P{n}", "personal_code": code, "progress_token_hash": hash_token(code),
         "enrolled_at": utcnow()} for n, code in enumerate({generate_personal_code() for _ in range(201)})])
    db.session.commit()
    today = clinic_settings.clinic_today().isoformat()
    response = manager.get("/admin/posters.pdf", query_string={"from": today, "to": today})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "More than 200 patients" in page and 'action="/admin/posters.pdf"' in page


@pytest.mark.parametrize(("query", "message"), [
    ({"from": "2024-13-01"}, "start date is not a date"),
    ({"from": "yesterday", "to": "2024-05-01"}, "start date is not a date"),
    ({"to": "<script>"}, "end date is not a date"),
    ({"from": "2024-05-02", "to": "2024-05-01"}, "end date is before the start date"),
    ({"from": "2024-05-01", "to": "2024-05-01", "design": "fancy"}, "Unknown poster design"),
    ({"from": "2024-05-01", "to": "2024-05-01", "size": "Letter"}, "Unknown poster size"),
    ({"from": "2000-01-01", "to": "2000-01-31"}, "Nobody was enrolled"),
])
def test_a_bad_selection_re_renders_the_form_with_the_reason(manager, make_patient, query, message):
    make_patient()
    response = manager.get("/admin/posters.pdf", query_string=query)
    assert 400 <= response.status_code < 500
    page = response.get_data(as_text=True)
    assert message in page and '<input id="from"' in page


def test_front_desk_staff_cannot_print_poster_sets(desk):
    assert desk.get("/admin/posters").status_code == 403
    assert desk.get("/admin/posters.pdf").status_code == 403
