"""Child process: the baseline, a plain reportlab program drawing the same sheet.

    python -m bench.baseline_reportlab CARDS_FILE OUT_PDF RESULT_JSON [--qr inline|xobject|runs]

Same A4 sheet as clinic/services/card_sheet.py: 2 x 5 cards of 85 x 54 mm, centred, crop marks
for every cut line. Every card is drawn directly: the brand band with the clinic name (CJK), the
offer, the dashed scratch area, the side text, the serial and code (Courier-Bold) and the QR code
from the same encoder as ours (zxing-cpp, error correction M, quiet zone included). Page content
is compressed, as ours is.

QR drawing, measured (bench/README.md): ``inline`` — the module matrix as a small inline image
(``canvas.drawInlineImage`` of a PIL 1-bit image) — is the fastest, so it is the default;
``xobject`` (``canvas.drawImage``, one image XObject per card) and ``runs`` (one filled rectangle
per horizontal run of dark modules) are kept for the comparison.

The Chinese font is reportlab's ``UnicodeCIDFont('STSong-Light')``: reportlab cannot read Noto
Sans CJK (OpenType with CFF outlines) and no TrueType CJK font is installed, so this is the CJK
font it can use. It is not embedded (a reader substitutes a system font), which saves the
baseline the font subsetting and embedding our WeasyPrint design pays for: a choice in the
baseline's favour.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.common import BRAND_COLOUR, CLINIC_NAME, CLINIC_PHONE, read_cards, write_result

MM = 72 / 25.4
PAGE_WIDTH, PAGE_HEIGHT = 210.0, 297.0
CARD_WIDTH, CARD_HEIGHT = 85.0, 54.0
COLUMNS, ROWS = 2, 5
CROP_MARK_LENGTH, CROP_MARK_OFFSET = 3.0, 0.8
QR_X, QR_Y, QR_SIZE = 6.0, 6.0, 20.0


def card_origins() -> list[tuple[float, float]]:
    """Bottom-left corner of each card in mm, rows from the top (no bleed)."""
    left = (PAGE_WIDTH - COLUMNS * CARD_WIDTH) / 2
    top = PAGE_HEIGHT - (PAGE_HEIGHT - ROWS * CARD_HEIGHT) / 2
    return [(left + column * CARD_WIDTH, top - (row + 1) * CARD_HEIGHT)
            for row in range(ROWS) for column in range(COLUMNS)]


def crop_mark_lines(origins) -> list[tuple[float, float, float, float]]:
    xs = sorted({x for x, _ in origins} | {x + CARD_WIDTH for x, _ in origins})
    ys = sorted({y for _, y in origins} | {y + CARD_HEIGHT for _, y in origins})
    lines = []
    for x in xs:
        for start in (min(ys) - CROP_MARK_OFFSET, max(ys) + CROP_MARK_OFFSET + CROP_MARK_LENGTH):
            lines.append((x * MM, start * MM, x * MM, (start - CROP_MARK_LENGTH) * MM))
    for y in ys:
        for start in (min(xs) - CROP_MARK_OFFSET, max(xs) + CROP_MARK_OFFSET + CROP_MARK_LENGTH):
            lines.append((start * MM, y * MM, (start - CROP_MARK_LENGTH) * MM, y * MM))
    return lines


def main(cards_file: str, out_pdf: str, result_json: str, qr_method: str = "inline") -> None:
    import numpy as np
    import zxingcpp
    from PIL import Image
    from reportlab.lib.colors import HexColor, white
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    cards = read_cards(Path(cards_file))
    started = time.perf_counter()

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    brand, ink, grey, light = HexColor(BRAND_COLOUR), HexColor("#111111"), HexColor("#444444"), HexColor("#999999")
    dash = HexColor("#888888")
    origins = card_origins()
    crop_marks = crop_mark_lines(origins)

    def qr_modules(url: str):
        barcode = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
        return np.asarray(barcode.to_image(scale=1, add_quiet_zones=True)) < 128

    def qr_image(modules):
        size = modules.shape[0]
        return Image.frombytes("1", (size, size), np.packbits(~modules, axis=1).tobytes())  # 1 = white

    def draw_qr(c, url: str, x: float, y: float) -> None:
        modules = qr_modules(url)
        if qr_method == "inline":
            c.drawInlineImage(qr_image(modules), x, y, QR_SIZE * MM, QR_SIZE * MM)
        elif qr_method == "xobject":
            c.drawImage(ImageReader(qr_image(modules)), x, y, QR_SIZE * MM, QR_SIZE * MM)
        elif qr_method == "runs":
            size = modules.shape[0]
            step = QR_SIZE * MM / size
            path = c.beginPath()
            edges = np.diff(np.pad(modules.astype(np.int8), ((0, 0), (1, 1))), axis=1)
            for row in range(size):
                starts, ends = np.flatnonzero(edges[row] == 1), np.flatnonzero(edges[row] == -1)
                bottom = y + (size - 1 - row) * step
                for start, end in zip(starts.tolist(), ends.tolist()):
                    path.rect(x + start * step, bottom, (end - start) * step, step)
            c.setFillColor(ink)
            c.drawPath(path, stroke=0, fill=1)
        else:
            raise SystemExit(f"unknown QR method {qr_method!r}")

    def draw_card(c, serial: str, code: str, url: str, left: float, bottom: float) -> None:
        x, y = left * MM, bottom * MM
        # brand band with the clinic name
        c.setFillColor(brand)
        c.rect(x, y + 41 * MM, CARD_WIDTH * MM, 13 * MM, stroke=0, fill=1)
        c.setFillColor(white)
        c.setFont("STSong-Light", 9.5)
        c.drawString(x + 4 * MM, y + 46.3 * MM, CLINIC_NAME)
        # the offer
        c.setFillColor(brand)
        c.setFont("Helvetica-Bold", 7.5)
        c.drawString(x + 4 * MM, y + 37.0 * MM, "Give this card to a friend")
        for line, (who, what) in enumerate((("Your friend gets ", "1 bed-day waived"),
                                            ("You get ", "CN\u00a5200.00 off"))):
            baseline = y + (33.8 - 3.25 * line) * MM
            c.setFillColor(grey)
            c.setFont("Helvetica", 6.8)
            c.drawString(x + 4 * MM, baseline, who)
            c.setFillColor(ink)
            c.setFont("Helvetica-Bold", 6.8)
            c.drawString(x + 4 * MM + pdfmetrics.stringWidth(who, "Helvetica", 6.8), baseline, what)
        # the scratch area: a dashed rounded frame
        c.setStrokeColor(dash)
        c.setLineWidth(0.3 * MM)
        c.setDash(2, 1.5)
        c.roundRect(x + 4 * MM, y + 4 * MM, 56 * MM, 24 * MM, 1.5 * MM, stroke=1, fill=0)
        c.setDash()
        c.setFillColor(light)
        c.setFont("Helvetica", 5)
        c.drawRightString(x + 58.5 * MM, y + 25.4 * MM, "Scratch here")
        # the side text
        c.setFillColor(grey)
        c.setFont("Helvetica", 5.2)
        for line, text in enumerate(("Your friend shows this", "card at the front desk", CLINIC_PHONE)):
            c.drawString(x + 61 * MM, y + (24.9 - 2.4 * line) * MM, text)
        c.setFont("Helvetica", 5)
        c.drawRightString(x + 81 * MM, y + 9.8 * MM, "No.")
        # the variable data: serial, code, QR
        c.setFillColor(ink)
        c.setFont("Courier-Bold", 7.5)
        c.drawRightString(x + 81 * MM, y + 5.5 * MM, serial)
        c.setFont("Courier-Bold", 9)
        c.drawString(x + 28 * MM, y + 14 * MM, code)
        draw_qr(c, url, x + QR_X * MM, y + QR_Y * MM)

    c = canvas.Canvas(out_pdf, pagesize=A4, pageCompression=1)
    c.setTitle("Scratch cards")
    pages = 0
    for start in range(0, len(cards), len(origins)):
        c.setLineWidth(0.25)
        c.setStrokeColor(ink)
        c.lines(crop_marks)
        for (serial, code, url), (left, bottom) in zip(cards[start:start + len(origins)], origins):
            draw_card(c, serial, code, url, left, bottom)
        c.showPage()
        pages += 1
    c.save()
    finished = time.perf_counter()
    write_result(Path(result_json), seconds=finished - started, pages=pages, qr_method=qr_method)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    method = "inline"
    if "--qr" in arguments:
        at = arguments.index("--qr")
        method = arguments[at + 1]
        del arguments[at:at + 2]
    main(*arguments[:3], qr_method=method)
