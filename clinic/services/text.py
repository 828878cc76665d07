"""Cleaning free text that people type: names, reasons, labels."""

from __future__ import annotations

import re

# Control characters, zero-width characters and bidirectional overrides: they print as
# nothing (or reorder what follows), so a name holding them can deceive the next reader.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def clean_text(raw: str | None, *, max_length: int, label: str, required: bool) -> str:
    """Trim and fold white space; refuse control characters, over-long and missing text."""
    text = " ".join((raw or "").split())
    if CONTROL_CHARACTERS.search(text):
        raise ValueError(f"{label} contains characters that cannot be printed.")
    if required and not text:
        raise ValueError(f"Enter the {label.lower()}.")
    if len(text) > max_length:
        raise ValueError(f"{label} can be at most {max_length} characters.")
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
        reason = clean_text(raw, max_length=REASON_MAX, label="Reason", required=True)
    except ValueError as problem:
        raise Refused("validation_error", str(problem), field="reason") from None
    if len(reason) < REASON_MIN:
        raise Refused("validation_error", f"Give a reason of {REASON_MIN} to {REASON_MAX} characters.",
                      field="reason")
    return reason
