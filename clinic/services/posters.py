"""Personalised referral posters: A4 and A5 PDFs to print, and a phone image to share in chat apps.

One template (``templates/pdf/poster.html``) and one stylesheet (``static/css/poster.css``) draw
every design and size; the stylesheet scales the whole layout with the page. A poster shows what
the patient agreed to and nothing more: the clinic, the offer, the code and its QR, and the
display name only when ``name_on_posters`` is set. Never a full name, a phone or anything medical.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from datetime import date, timedelta

import pypdfium2
from flask_babel import gettext as _
from markupsafe import Markup
from PIL import Image

from clinic.i18n import current_language
from clinic.models import Clinic, Patient
from clinic.services import colours
from clinic.services.clinic_settings import (
    brand_colour,
    friend_reward,
    current_clinic,
    refuse_implausible_day,
    start_of_clinic_day,
)
from clinic.services.rewards import campaign_in_force
from clinic.services.codes import format_code
from clinic.services.errors import Refused
from clinic.services.patients import patients_enrolled_between
from clinic.services.pdf import in_print_language, render_pdf
from clinic.services.qr import qr_svg
from clinic.services.text import print_width
from clinic.services.urls import invite_url

DESIGNS = ("classic", "bold", "minimal")
SIZES = ("A4", "A5")
PHONE = "phone"  # the 9:16 page that becomes the phone image
PHONE_PIXELS = (1080, 1920)
MAX_POSTERS = 200  # one request renders at most this many pages; more belongs in a background job
TEMPLATE = "pdf/poster.html"

_LONG_NAME = 30  # characters after which a clinic name or an offer gets a smaller type size
# Widths (half-ems, text.print_width) after which a clinic name, an inviter's name or the address steps down once
# more: the poster is one page high, and at full size the longest ones the forms allow pushed the address off it.
_LONGER_NAME, _LONG_INVITER, _LONG_ADDRESS = 60, 30, 120
# PDFium keeps global state and is not thread-safe: one rasterisation at a time per process.
_PDFIUM_LOCK = threading.Lock()


def poster_options(design: str | None, size: str | None = None) -> tuple[str, str]:
    """Normalise a requested design and size (empty means the default), or refuse with status 400."""
    design = (design or DESIGNS[0]).strip().lower()
    size = (size or SIZES[0]).strip().upper()
    if design not in DESIGNS:
        raise Refused("bad_design", _("Unknown poster design: choose one of %(designs)s.", designs=", ".join(DESIGNS)),
                      status=400)
    if size not in SIZES:
        raise Refused("bad_size", _("Unknown poster size: choose one of %(sizes)s.", sizes=", ".join(SIZES)),
                      status=400)
    return design, size


@dataclass(frozen=True)
class Brand:
    """The clinic's colour and the colours that stay readable with it, whatever colour a clinic picks."""

    colour: str
    ink: str  # text on the brand colour on paper (large type): white, or near-black on a light brand colour
    text: str  # the brand colour for text on white, darkened until it reads (a yellow brand prints as ochre)
    tint: str  # a pale wash of the brand colour for backgrounds
    screen_ink: str  # text on the brand colour on a screen, where type is small: at least 4.5:1

    @classmethod
    def from_colour(cls, colour: str) -> "Brand":
        """``colour`` is a checked ``#rrggbb`` (:func:`clinic_settings.brand_colour`)."""
        rgb = colours.parse_hex(colour)
        tint = tuple(round(c + (255 - c) * 0.88) for c in rgb)
        return cls(colour=colour.lower(), ink=colours.to_hex(colours.ink_on(rgb, colours.AA_LARGE_TEXT)),
                   text=colours.to_hex(colours.readable_on(rgb)), tint=colours.to_hex(tint),
                   screen_ink=colours.to_hex(colours.ink_on(rgb)))


def _contrast_with_white(rgb: tuple[int, ...]) -> float:
    """WCAG contrast ratio of a colour against white."""
    return colours.contrast_ratio(rgb, colours.WHITE)


@dataclass(frozen=True)
class PosterFace:
    """What one patient's poster says (the clinic's part is shared by every page)."""

    inviter: str | None  # the display name, only with the patient's consent
    long_inviter: bool
    code: str  # XXXX-XXXX
    url: str
    short_url: str  # the URL without its scheme, for people who type rather than scan
    qr: Markup


def poster_face(patient: Patient) -> PosterFace:
    url = invite_url(patient.personal_code)
    inviter = patient.name_for_friends
    return PosterFace(inviter=inviter, long_inviter=print_width(inviter or "") > _LONG_INVITER,
                      code=format_code(patient.personal_code), url=url,
                      short_url=url.split("://", 1)[-1], qr=qr_svg(url, title=_("QR code")))


def current_offer(clinic: Clinic) -> str | None:
    """What a friend gets under the campaign in force, in the language being rendered; None without a campaign."""
    campaign = campaign_in_force(for_cards=False)
    if campaign is None:
        return None
    return friend_reward(campaign).describe(clinic.currency, current_language()) or None


def _render(patients: list[Patient], design: str, size: str) -> bytes:
    clinic = current_clinic()
    with in_print_language():
        offer = current_offer(clinic)
    return render_pdf(TEMPLATE, design=design, size=size, clinic=clinic, brand=Brand.from_colour(brand_colour()),
                      offer=offer, long_name=len(clinic.name) > _LONG_NAME,
                      longer_name=print_width(clinic.name) > _LONGER_NAME,
                      long_address=print_width(clinic.address or "") > _LONG_ADDRESS,
                      long_offer=offer is not None and len(offer) > _LONG_NAME,
                      posters=[poster_face(patient) for patient in patients])


def poster_pdf(patient: Patient, design: str = "classic", size: str = "A4") -> bytes:
    """One poster page for ``patient``."""
    design, size = poster_options(design, size)
    return _render([patient], design, size)


def posters_pdf(patients: list[Patient], design: str = "classic", size: str = "A4") -> bytes:
    """One PDF with a page per patient, in the order given.

    One WeasyPrint document with a page break per poster. Measured on 2 cores: 200 posters in 7.4 s
    and 0.8 MB, against 40 s and 52 MB for pages rendered one by one and merged with pikepdf (each
    page then parses the stylesheet and embeds its own font subset).
    """
    if not patients:
        raise Refused("no_patients", _("There are no posters to print."))
    if len(patients) > MAX_POSTERS:
        raise Refused("too_many_posters", _("At most %(count)d posters can be printed at once.", count=MAX_POSTERS))
    design, size = poster_options(design, size)
    return _render(list(patients), design, size)


def poster_png(patient: Patient, design: str = "classic") -> bytes:
    """The poster as a 1080×1920 PNG for chat apps: a 9:16 PDF page rasterised in-process."""
    design, _ = poster_options(design)
    pdf = _render([patient], design, PHONE)
    with _PDFIUM_LOCK:
        document = pypdfium2.PdfDocument(pdf)
        try:
            page = document[0]
            width, height = page.get_size()
            scale = PHONE_PIXELS[0] / width
            image = page.render(scale=scale).to_pil()
            page.close()
        finally:
            document.close()
    if image.size != PHONE_PIXELS:  # rounding of the page size in points can cost a pixel
        image = image.resize(PHONE_PIXELS, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def enrolled_between(first_day: date, last_day: date) -> list[Patient]:
    """Patients enrolled from ``first_day`` to ``last_day`` inclusive (clinic days), newest first.

    Refused when a day is outside 1900-2999, the range is backwards, holds nobody, or holds more than
    :data:`MAX_POSTERS`.
    """
    refuse_implausible_day(first_day)
    refuse_implausible_day(last_day)
    if last_day < first_day:
        raise Refused("bad_range", _("The end date is before the start date."), field="to", status=400)
    start, end = start_of_clinic_day(first_day), start_of_clinic_day(last_day + timedelta(days=1))
    patients = patients_enrolled_between(start, end, limit=MAX_POSTERS + 1)
    if not patients:
        raise Refused("no_patients", _("Nobody was enrolled in these dates: there are no posters to print."))
    if len(patients) > MAX_POSTERS:
        raise Refused("too_many_posters", _("More than %(count)d patients were enrolled in these dates. Choose a "
                                            "shorter range: at most %(count)d posters can be printed at once.",
                                            count=MAX_POSTERS))
    return patients
