"""Cleaning free text that people type: names, reasons, labels."""

from __future__ import annotations

import re
import unicodedata

from flask_babel import gettext as _

# Every control and format character (Unicode categories Cc and Cf: NUL, escapes, zero-width
# characters, bidi marks and overrides, invisible operators, tags) and the line and paragraph
# separators: they print as nothing (or reorder what follows), so a name holding them can deceive
# the next reader. tests/test_bad_input_properties.py checks this list against Python's Unicode data.
CONTROL_CHARACTERS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    r"\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")


def clean_text(raw: str | None, *, max_length: int, label: str, required: bool) -> str:
    """Trim and fold white space; refuse control characters, over-long and missing text."""
    text = " ".join((raw or "").split())
    if CONTROL_CHARACTERS.search(text):
        raise ValueError(_("%(label)s contains characters that cannot be printed.", label=label))
    if required and not text:
        raise ValueError(_("Enter the %(label)s.", label=label.lower()))
    if len(text) > max_length:
        raise ValueError(_("%(label)s can be at most %(count)s characters.", label=label, count=max_length))
    return text


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: str) -> str:
    """``value`` for a CSV cell that a spreadsheet shows as text and never runs as a formula.

    A name such as ``=HYPERLINK(...)`` is stored as typed; only on its way into a spreadsheet
    does it get a leading apostrophe, which Excel and LibreOffice read as "this is text".
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


REASON_MIN, REASON_MAX = 3, 200


def clean_reason(raw: str | None) -> str:
    """The reason a manager gives for a void, reversal or decision: 3 to 200 printable characters.

    Raises :class:`~clinic.services.errors.Refused` on the ``reason`` field.
    """
    from clinic.services.errors import Refused

    try:
        reason = clean_text(raw, max_length=REASON_MAX, label=_("Reason"), required=True)
    except ValueError as problem:
        raise Refused("validation_error", str(problem), field="reason") from None
    if len(reason) < REASON_MIN:
        raise Refused("validation_error", _("Give a reason of %(min)s to %(max)s characters.", min=REASON_MIN,
                                            max=REASON_MAX), field="reason")
    return reason


def print_width(text: str) -> int:
    """How much room ``text`` takes on paper, in half-ems: a Chinese (wide or full-width) character counts two.

    Print layouts step their type down for long texts; by characters alone, a Chinese label as long as an
    English one would take twice the room it is given.
    """
    return sum(2 if unicodedata.east_asian_width(character) in "WF" else 1 for character in text)
