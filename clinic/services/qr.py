"""QR codes as inline SVG: crisp at any print size, no image files, allowed by a strict CSP."""

from __future__ import annotations

import numpy as np
import zxingcpp
from markupsafe import Markup, escape

QUIET_ZONE = 4  # modules, as the standard asks


def qr_modules(data: str) -> np.ndarray:
    """The symbol's dark modules (True), without the quiet zone; medium error correction.

    zxing-cpp's C++ encoder (also used for the card sheets) picks the mask with the lowest penalty
    as the standard asks, and is about 30x faster than a pure-Python encoder: a desk receipt draws
    four QR codes per redemption.
    """
    barcode = zxingcpp.create_barcode(data, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return np.asarray(barcode.to_image(scale=1, add_quiet_zones=False)) < 128


def qr_svg(data: str, *, scale: int = 4, title: str | None = None) -> Markup:
    """An ``<svg>`` element for ``data`` with medium error correction and the standard 4-module quiet zone.

    A viewBox and no fixed width/height, so CSS can size it without cropping the finder patterns.
    Each row's runs of dark modules are one stroked line of the path, in module units.
    """
    modules = qr_modules(data)
    count = modules.shape[0]
    size = count + 2 * QUIET_ZONE
    padded = np.zeros((count, count + 2), dtype=np.int8)
    padded[:, 1:-1] = modules
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]
    lengths = (ends - starts).tolist()
    # Worked out for all runs at once, not run by run (a receipt draws three codes): the first run is placed,
    # each next one moved to from the end of the one before.
    moves = zip((starts[1:] - ends[:-1]).tolist(), (rows[1:] - rows[:-1]).tolist(), lengths[1:])
    path = [f"M{starts[0] + QUIET_ZONE} {rows[0] + QUIET_ZONE}.5h{lengths[0]}", *map("m%d %dh%d".__mod__, moves)] \
        if lengths else []
    # A titled code is an image named by its title for screen readers (an untitled one is drawn for an <img>).
    named = f' role="img"><title>{escape(title)}</title>' if title else ">"
    return Markup(f'<svg viewBox="0 0 {size * scale} {size * scale}" class="qr"{named}'
                  f'<g transform="scale({scale})"><path fill="#fff" d="M0 0h{size}v{size}h-{size}z"/>'
                  f'<path stroke="#000" d="{"".join(path)}"/></g></svg>')
