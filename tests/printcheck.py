"""Check PDFs as a printer and a phone would: rasterise with poppler, decode QR codes with zxing-cpp."""

from __future__ import annotations

import html
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import zxingcpp
from PIL import Image


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, check=True,
                          text=True).stdout


POINT = 25.4 / 72  # mm


@dataclass
class PrintedPage:
    """A page's size and its words as (word, x0, y0, x1, y1), all in mm from its top-left corner."""

    width: float
    height: float
    words: list[tuple[str, float, float, float, float]]


def word_boxes(pdf: Path) -> list[PrintedPage]:
    """Where each word of each page lies, from poppler's ``pdftotext -bbox``."""
    xml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, check=True, text=True).stdout
    pages = []
    for page in re.findall(r"<page (.*?)</page>", xml, flags=re.S):
        width, height = (float(v) * POINT for v in re.match(r'width="([\d.]+)" height="([\d.]+)"', page).groups())
        words = [(html.unescape(word), *(float(v) * POINT for v in box)) for *box, word in re.findall(
            r'<word xMin="([\d.-]+)" yMin="([\d.-]+)" xMax="([\d.-]+)" yMax="([\d.-]+)">(.*?)</word>', page)]
        pages.append(PrintedPage(width, height, words))
    return pages


def embedded_fonts(pdf: Path) -> list[tuple[str, bool]]:
    """(name, embedded) for each font, from poppler's pdffonts."""
    lines = subprocess.run(["pdffonts", str(pdf)], capture_output=True, check=True, text=True).stdout.splitlines()[2:]
    return [(line.split()[0], line.split()[-5] == "yes") for line in lines if line.strip()]


def decode_pages(pdf: Path, workdir: Path, dpi: int = 150) -> list[list[str]]:
    """The QR texts found on each page, top to bottom."""
    prefix = workdir / pdf.stem
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), str(prefix)], check=True)
    pages = sorted(workdir.glob(f"{pdf.stem}-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    found = []
    for page in pages:
        with Image.open(page) as image:
            results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
        found.append([r.text for r in sorted(results, key=lambda r: (r.position.top_left.y, r.position.top_left.x))])
        page.unlink()
    return found
