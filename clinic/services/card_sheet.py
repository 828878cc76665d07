"""Scratch-card sheets as PDF, fast and in flat memory.

The card *design* (brand, offer, frames, the scratch-area outline) is the same on every card,
so WeasyPrint renders it once; this module then writes the sheets itself, object by object,
straight to a file: each page places that one design ten times (a shared Form XObject) and
stamps only what differs per card — the serial, the code and its QR code, a 1-bit image mask
made from zxing-cpp's module matrix. Memory stays flat whatever the batch size (only the
xref offsets are kept), and rendering is dominated by QR encoding.

Layout: A4 portrait, 2 columns x 5 rows of 85 x 54 mm cards, crop marks in the margins for
every cut line; with bleed, each card's design extends 2 mm past its trim and cards are set
4 mm apart so that each can be cut cleanly.
"""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
import pikepdf
import zxingcpp
from fontTools import subset
from fontTools.ttLib import TTFont

MM = 72 / 25.4
PAGE_WIDTH, PAGE_HEIGHT = 210.0, 297.0
CARD_WIDTH, CARD_HEIGHT = 85.0, 54.0
COLUMNS, ROWS = 2, 5
CARDS_PER_SHEET = COLUMNS * ROWS
BLEED = 2.0
CROP_MARK_LENGTH = 3.0
CROP_MARK_OFFSET = 0.8

# Where the variable data goes on a card, in mm from the card's bottom-left trim corner.
# The design template draws the scratch area outline at the same place (SCRATCH_*).
# The scratch area is the size of a common 56 x 24 mm scratch-off sticker.
SCRATCH_X, SCRATCH_Y, SCRATCH_WIDTH, SCRATCH_HEIGHT = 4.0, 4.0, 56.0, 24.0
QR_SIZE = 20.0  # including the 4-module quiet zone
QR_X, QR_Y = SCRATCH_X + 2.0, SCRATCH_Y + 2.0
CODE_X, CODE_Y, CODE_FONT_SIZE = QR_X + QR_SIZE + 2.0, SCRATCH_Y + 10.0, 9.0
SERIAL_RIGHT, SERIAL_Y, SERIAL_FONT_SIZE = CARD_WIDTH - 4.0, SCRATCH_Y + 1.5, 7.5
# Serials and codes are set in Liberation Mono Bold (Debian's fonts-liberation, in the Makefile's SYSTEM_PKGS):
# metric-compatible with Courier, so the layout is Courier's, but embedded. A print shop's RIP replaces a font a PDF
# does not carry with whatever it has, and a code must print exactly as it reads.
MONO_FONT = Path("/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf")
MONO_CHARACTERS = range(32, 127)  # printable ASCII: serials and codes are plain ASCII, in WinAnsi's codes
COURIER_ADVANCE = 0.6  # Courier's glyph width, in ems: every glyph is the same (Liberation Mono's too)


@dataclass(frozen=True)
class PrintedCard:
    serial: str
    code_display: str  # XXXX-XXXX-XXXX
    url: str  # what the QR code encodes


@dataclass(frozen=True)
class SheetLayout:
    bleed: bool = False

    @property
    def margin(self) -> float:
        return BLEED if self.bleed else 0.0

    @property
    def gap(self) -> float:
        return 2 * self.margin

    def card_origins(self) -> list[tuple[float, float]]:
        """Bottom-left trim corner of each slot, in mm, filling rows from the top of the sheet."""
        width = COLUMNS * CARD_WIDTH + (COLUMNS - 1) * self.gap
        height = ROWS * CARD_HEIGHT + (ROWS - 1) * self.gap
        left = (PAGE_WIDTH - width) / 2
        top = PAGE_HEIGHT - (PAGE_HEIGHT - height) / 2
        return [(left + column * (CARD_WIDTH + self.gap), top - (row + 1) * CARD_HEIGHT - row * self.gap)
                for row in range(ROWS) for column in range(COLUMNS)]

    def crop_marks(self) -> bytes:
        """Thin black lines in the margins, one pair for every cut line."""
        origins = self.card_origins()
        xs = sorted({x for x, _ in origins} | {x + CARD_WIDTH for x, _ in origins})
        ys = sorted({y for _, y in origins} | {y + CARD_HEIGHT for _, y in origins})
        bottom, top = min(ys) - self.margin, max(ys) + self.margin
        left, right = min(xs) - self.margin, max(xs) + self.margin
        lines = []
        for x in xs:
            for start in (bottom - CROP_MARK_OFFSET, top + CROP_MARK_OFFSET + CROP_MARK_LENGTH):
                lines.append((x, start, x, start - CROP_MARK_LENGTH))
        for y in ys:
            for start in (left - CROP_MARK_OFFSET, right + CROP_MARK_OFFSET + CROP_MARK_LENGTH):
                lines.append((start, y, start - CROP_MARK_LENGTH, y))
        path = "".join(f"{x1 * MM:.2f} {y1 * MM:.2f} m {x2 * MM:.2f} {y2 * MM:.2f} l " for x1, y1, x2, y2 in lines)
        return f"q 0.25 w 0 G {path}S Q\n".encode()


def qr_image_mask(url: str) -> tuple[int, bytes]:
    """The QR code for ``url`` (medium error correction, quiet zone included) as a 1-bit mask.

    zxing-cpp's encoder is C++ and still picks the mask pattern with the lowest penalty, as the
    standard asks; it measured ~30x faster than pure-Python encoders here.
    """
    barcode = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    modules = np.asarray(barcode.to_image(scale=1, add_quiet_zones=True)) < 128
    return modules.shape[0], np.packbits(modules, axis=1).tobytes()


@dataclass(frozen=True)
class EmbeddedFont:
    """A TrueType subset and the PDF dictionaries that describe it (``%d`` for the objects they refer to)."""

    file: bytes
    descriptor: bytes  # refers to the font file
    font: bytes  # refers to the descriptor


@functools.cache
def mono_font() -> EmbeddedFont:
    """MONO_FONT cut down to MONO_CHARACTERS: made once per process, embedded once per file (a few kB)."""
    options = subset.Options()
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.drop_tables += ["FFTM"]  # FontForge's timestamps: fontTools would drop it anyway, with a warning
    font = TTFont(MONO_FONT)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=MONO_CHARACTERS)
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    scale = 1000 / font["head"].unitsPerEm
    cmap = font.getBestCmap()
    widths = b" ".join(b"%d" % round(font["hmtx"][cmap[code]][0] * scale) for code in MONO_CHARACTERS)
    head, os2 = font["head"], font["OS/2"]
    name = b"CRDMNO+" + font["name"].getDebugName(6).encode("ascii")  # a subset's tag: six capitals
    descriptor = (b"<< /Type /FontDescriptor /FontName /%s /Flags 33 /FontBBox [%d %d %d %d] /ItalicAngle 0 "
                  b"/Ascent %d /Descent %d /CapHeight %d /StemV 120 /FontFile2 %%d 0 R >>"
                  % (name, *(round(v * scale) for v in (head.xMin, head.yMin, head.xMax, head.yMax)),
                     round(os2.sTypoAscender * scale), round(os2.sTypoDescender * scale),
                     round(os2.sCapHeight * scale)))
    dictionary = (b"<< /Type /Font /Subtype /TrueType /BaseFont /%s /FirstChar %d /LastChar %d /Widths [%s] "
                  b"/Encoding /WinAnsiEncoding /FontDescriptor %%d 0 R >>"
                  % (name, MONO_CHARACTERS[0], MONO_CHARACTERS[-1], widths))
    return EmbeddedFont(buffer.getvalue(), descriptor, dictionary)


def _text(text: str, size: float, x: float, y: float) -> bytes:
    """Black monospace text (MONO_FONT); serials and codes are plain ASCII, so WinAnsi covers them."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT 0 g /F1 {size:.1f} Tf {x:.3f} {y:.3f} Td ({escaped}) Tj ET\n".encode("latin-1")


class StreamingPdfWriter:
    """Writes numbered PDF objects to a binary file as they come; keeps only their offsets."""

    def __init__(self, out: BinaryIO, first_free_number: int):
        self.out = out
        self.offsets: dict[int, int] = {}
        self.next_number = first_free_number
        self.position = 0
        self._write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.position += len(data)

    def reserve(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number

    def object(self, number: int, body: bytes) -> int:
        self.offsets[number] = self.position
        self._write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
        return number

    def stream(self, number: int, dictionary: bytes, data: bytes, compress: bool = False) -> int:
        if compress:
            data = zlib.compress(data, 6)
            dictionary += b" /Filter /FlateDecode"
        self.offsets[number] = self.position
        self._write(b"%d 0 obj\n<< %s /Length %d >>\nstream\n" % (number, dictionary, len(data)))
        self._write(data)
        self._write(b"\nendstream\nendobj\n")
        return number

    def copied_stream(self, number: int, dictionary: bytes, data: bytes) -> int:
        """A stream whose dictionary (with its /Length and filters) comes from another PDF."""
        self.offsets[number] = self.position
        self._write(b"%d 0 obj\n%s\nstream\n" % (number, dictionary))
        self._write(data)
        self._write(b"\nendstream\nendobj\n")
        return number

    def finish(self, root: int) -> None:
        size = self.next_number
        xref_at = self.position
        rows = [b"0000000000 65535 f \n"]
        for number in range(1, size):
            offset = self.offsets.get(number)
            rows.append(b"%010d 00000 n \n" % offset if offset is not None else b"0000000000 65535 f \n")
        self._write(b"xref\n0 %d\n" % size + b"".join(rows))
        self._write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, xref_at))


def _copy_design(design_pdf: bytes, writer_factory) -> tuple[StreamingPdfWriter, int, tuple[float, float]]:
    """Copy the design's first page, as a Form XObject, into a new streaming writer.

    The design's objects keep their own numbers (so its references stay valid); ours follow.
    """
    with pikepdf.open(io.BytesIO(design_pdf)) as pdf:
        page = pdf.pages[0]
        width = float(page.mediabox[2]) - float(page.mediabox[0])
        height = float(page.mediabox[3]) - float(page.mediabox[1])
        form = page.as_form_xobject()
        form = pdf.make_indirect(form)
        reachable = _reachable_objects(form)
        writer = writer_factory(max(pdf.objects, key=lambda o: o.objgen[0]).objgen[0] + 1)
        for number, obj in sorted(reachable.items()):
            if isinstance(obj, pikepdf.Stream):
                raw = obj.read_raw_bytes()
                dictionary = pikepdf.Dictionary(obj.stream_dict)
                dictionary.Length = len(raw)
                writer.copied_stream(number, dictionary.unparse(), raw)
            else:
                writer.object(number, obj.unparse(resolved=True))
        return writer, form.objgen[0], (width, height)


def _reachable_objects(root: pikepdf.Object) -> dict[int, pikepdf.Object]:
    found: dict[int, pikepdf.Object] = {}
    pending = [root]
    while pending:
        obj = pending.pop()
        if not isinstance(obj, pikepdf.Object):
            continue  # numbers, names and strings hold no references
        if obj.is_indirect:
            number = obj.objgen[0]
            if number in found:
                continue
            found[number] = obj
        children = obj.stream_dict if isinstance(obj, pikepdf.Stream) else obj
        if isinstance(children, (pikepdf.Dictionary, pikepdf.Stream)):
            pending.extend(value for key, value in children.items() if key != "/Parent")
        elif isinstance(children, pikepdf.Array):
            pending.extend(children)
    return found


def write_card_sheets(design_pdf: bytes, cards: Iterable[PrintedCard], out: BinaryIO, *, bleed: bool = False,
                      progress: Callable[[int], None] | None = None) -> int:
    """Write A4 sheets of cards to ``out``; returns the number of pages.

    ``design_pdf`` is a one-page PDF of one card's design at trim size (plus bleed, with bleed).
    ``progress`` is called with the number of cards written so far after every sheet.
    """
    layout = SheetLayout(bleed=bleed)
    writer, design_number, _ = _copy_design(design_pdf, lambda first: StreamingPdfWriter(out, first))
    pages_root = writer.reserve()
    mono = mono_font()
    font_file = writer.stream(writer.reserve(), b"/Length1 %d" % len(mono.file), mono.file, compress=True)
    descriptor = writer.object(writer.reserve(), mono.descriptor % font_file)
    font = writer.object(writer.reserve(), mono.font % descriptor)
    crop_marks = layout.crop_marks()
    origins = layout.card_origins()
    page_size = b"[0 0 %.2f %.2f]" % (PAGE_WIDTH * MM, PAGE_HEIGHT * MM)
    page_numbers: list[int] = []
    done = 0
    sheet: list[PrintedCard] = []

    def flush_sheet() -> None:
        nonlocal done
        content = [crop_marks]
        images = []
        for slot, card in enumerate(sheet):
            x, y = origins[slot]
            content.append(b"q 1 0 0 1 %.3f %.3f cm /Design Do Q\n"
                           % ((x - layout.margin) * MM, (y - layout.margin) * MM))
            size, bits = qr_image_mask(card.url)
            image = writer.stream(writer.reserve(), b"/Type /XObject /Subtype /Image /Width %d /Height %d "
                                  b"/ImageMask true /BitsPerComponent 1 /Decode [1 0] /Interpolate false"
                                  % (size, size), bits)
            images.append(b"/Q%d %d 0 R" % (slot, image))
            content.append(b"q 0 g %.3f 0 0 %.3f %.3f %.3f cm /Q%d Do Q\n"
                           % (QR_SIZE * MM, QR_SIZE * MM, (x + QR_X) * MM, (y + QR_Y) * MM, slot))
            serial_width = len(card.serial) * COURIER_ADVANCE * SERIAL_FONT_SIZE
            content.append(_text(card.serial, SERIAL_FONT_SIZE, (x + SERIAL_RIGHT) * MM - serial_width,
                                 (y + SERIAL_Y) * MM))
            content.append(_text(card.code_display, CODE_FONT_SIZE, (x + CODE_X) * MM, (y + CODE_Y) * MM))
        stream = writer.stream(writer.reserve(), b"", b"".join(content), compress=True)
        resources = b"<< /XObject << /Design %d 0 R %s >> /Font << /F1 %d 0 R >> >>" % (
            design_number, b" ".join(images), font)
        page_numbers.append(writer.object(writer.reserve(), b"<< /Type /Page /Parent %d 0 R /MediaBox %s "
                                          b"/Resources %s /Contents %d 0 R >>"
                                          % (pages_root, page_size, resources, stream)))
        done += len(sheet)
        sheet.clear()
        if progress:
            progress(done)

    for card in cards:
        sheet.append(card)
        if len(sheet) == CARDS_PER_SHEET:
            flush_sheet()
    if sheet:
        flush_sheet()
    kids = b" ".join(b"%d 0 R" % number for number in page_numbers)
    writer.object(pages_root, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_numbers)))
    catalog = writer.object(writer.reserve(), b"<< /Type /Catalog /Pages %d 0 R >>" % pages_root)
    writer.finish(catalog)
    return len(page_numbers)
