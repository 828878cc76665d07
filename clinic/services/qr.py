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
    size = modules.shape[0] + 2 * QUIET_ZONE
    # Each row with a light module either side, so that every run has a start and an end (np.pad does the
    # same at five times the cost for arrays this small; a progress page draws one QR per active voucher).
    padded = np.zeros((modules.shape[0], modules.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = modules
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]
    path, x, y = [], 0, None
    for row, start, end in zip(rows.tolist(), starts.tolist(), ends.tolist()):
        if y is None:
            path.append(f"M{start + QUIET_ZONE} {row + QUIET_ZONE}.5h{end - start}")
        else:
            path.append(f"m{start + QUIET_ZONE - x} {row + QUIET_ZONE - y}h{end - start}")
        x, y = end + QUIET_ZONE, row + QUIET_ZONE
    title_element = f"<title>{escape(title)}</title>" if title else ""
    return Markup(f'<svg viewBox="0 0 {size * scale} {size * scale}" class="qr">{title_element}'
                  f'<g transform="scale({scale})"><path fill="#fff" d="M0 0h{size}v{size}h-{size}z"/>'
                  f'<path stroke="#000" d="{"".join(path)}"/></g></svg>')
