"""QR codes as inline SVG: crisp at any print size, no image files, allowed by a strict CSP."""

from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(data: str, *, scale: int = 4, title: str | None = None) -> Markup:
    """An ``<svg>`` element for ``data`` with medium error correction and the standard 4-module quiet zone."""
    qr = segno.make(data, error="m", micro=False, boost_error=False)
    # omitsize: a viewBox and no fixed width/height, so CSS can size it without cropping the finder patterns.
    svg = qr.svg_inline(scale=scale, border=4, dark="#000", light="#fff", title=title, svgclass="qr",
                        lineclass=None, omitsize=True)
    return Markup(svg)
