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


# The zero-width non-joiner and joiner are format characters, but some scripts need them to spell a name: Persian
# (محمد‌رضا, a ZWNJ between two Arabic letters), Sinhala (ශ්‍රී "Sri", a ZWJ after a virama), Malayalam, Bengali,
# Devanagari conjuncts. There they are kept; between Latin or Chinese letters, doubled, or at an edge (but after a
# virama) they change nothing a reader sees and are refused like any other invisible character.
JOINERS = "\u200c\u200d"
_JOINING_SCRIPTS = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff"  # Arabic
                              r"\u0900-\u0dff"  # Devanagari, Bengali, Gurmukhi, Gujarati, Oriya, Tamil … Sinhala
                              r"\u1000-\u109f\u1780-\u17ff]")  # Myanmar, Khmer


def _joins_its_script(text: str, index: int) -> bool:
    """Whether the joiner at ``index`` follows a letter or mark of a script that spells with joiners, and either
    precedes another or ends a virama (a Malayalam chillu, "അവന്‍", ends a word with one)."""
    if index == 0:
        return False
    before, after = text[index - 1], text[index + 1:index + 2]
    return _spells_with_joiners(before) and (_spells_with_joiners(after) or unicodedata.combining(before) == 9)


def _spells_with_joiners(character: str) -> bool:
    return bool(character) and bool(_JOINING_SCRIPTS.match(character)) and unicodedata.category(character)[0] in "LM"


def has_hidden_characters(text: str) -> bool:
    """Whether ``text`` holds a character that prints as nothing or reorders what follows (CONTROL_CHARACTERS),
    other than a joiner its script needs (JOINERS)."""
    return any(match.group() not in JOINERS or not _joins_its_script(text, match.start())
               for match in CONTROL_CHARACTERS.finditer(text))


def without_hidden_characters(text: str) -> str:
    """``text`` without the characters :func:`has_hidden_characters` refuses (a search box's query)."""
    return "".join(c for i, c in enumerate(text)
                   if not CONTROL_CHARACTERS.match(c) or (c in JOINERS and _joins_its_script(text, i)))


def clean_text(raw: str | None, *, max_length: int, label: str, required: bool) -> str:
    """Trim and fold white space; refuse control characters, over-long and missing text."""
    text = " ".join((raw or "").split())
    if has_hidden_characters(text):
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
