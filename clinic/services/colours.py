"""Readable colours from whatever brand colour a clinic picks (WCAG 2.x contrast).

A clinic chooses its colour for its logo, not for legibility: a yellow brand under white text
cannot be read. These functions pick the text colour that stays readable on it and darken the
brand colour where it is used as text on a light background.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

WHITE: RGB = (255, 255, 255)
NEAR_BLACK: RGB = (17, 24, 39)  # #111827, the pages' ink
BLACK: RGB = (0, 0, 0)
AA_TEXT = 4.5  # WCAG AA, normal text
AA_LARGE_TEXT = 3.0  # WCAG AA, large text (18pt, or 14pt bold) such as a poster's headings
AA_GRAPHICS = 3.0  # WCAG 1.4.11: a chart's bars against what is next to them


def parse_hex(colour: str) -> RGB:
    """``#rrggbb`` -> ``(r, g, b)``."""
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def to_hex(rgb: tuple[int, ...]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def relative_luminance(rgb: tuple[int, ...]) -> float:
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2])


def contrast_ratio(first: tuple[int, ...], second: tuple[int, ...]) -> float:
    """WCAG contrast ratio of two colours, from 1 (same) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def blend(colour: tuple[int, ...], background: tuple[int, ...] = WHITE, opacity: float = 1.0) -> RGB:
    """``colour`` painted at ``opacity`` over ``background`` (a chart's lighter bar), as seen on screen."""
    mixed = tuple(round(c * opacity + b * (1 - opacity)) for c, b in zip(colour, background))
    return mixed  # type: ignore[return-value]


def ink_on(background: tuple[int, ...], minimum: float = AA_TEXT) -> RGB:
    """The text colour for ``background``: white when it reads, else the pages' near-black, else black.

    Black always reaches 4.5:1 where white does not (the two ranges overlap), so one of them fits.
    """
    for ink in (WHITE, NEAR_BLACK):
        if contrast_ratio(ink, background) >= minimum:
            return ink
    return BLACK


def readable_on(colour: tuple[int, ...], background: tuple[int, ...] = WHITE, minimum: float = AA_TEXT) -> RGB:
    """``colour`` darkened in 10 % steps until it reads as text on ``background`` (a yellow brand becomes ochre)."""
    rgb = tuple(colour)
    while contrast_ratio(rgb, background) < minimum and any(rgb):
        rgb = tuple(round(c * 0.9) for c in rgb)
    return rgb  # type: ignore[return-value]


def lightest_tint(colour: tuple[int, ...], background: tuple[int, ...] = WHITE, minimum: float = AA_GRAPHICS) -> RGB:
    """The lightest mix of ``colour`` with ``background`` that still stands out from it at ``minimum``.

    A chart's lighter bars: a dark brand is lightened (in 5 % steps towards the background) only as far as they stay
    visible, a pale or yellow brand darkened first until they are.
    """
    full = tint = readable_on(colour, background, minimum)
    for step in range(1, 20):
        lighter = blend(full, background, 1 - 0.05 * step)
        if contrast_ratio(lighter, background) < minimum:
            break
        tint = lighter
    return tint
