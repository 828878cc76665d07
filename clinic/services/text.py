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
