"""Masking names and phone numbers for pages a patient's friend or the desk sees."""

from __future__ import annotations

import unicodedata


def _is_cjk(character: str) -> bool:
    return unicodedata.east_asian_width(character) in ("W", "F")


def mask_name(name: str | None) -> str:
    """``Wang Li`` -> ``Wang L.``; ``王小明`` -> ``王**``; one word -> its first letter and ``.``.

    Enough for a friend to recognise who recommended them, too little to identify a stranger.
    """
    name = " ".join((name or "").split())
    if not name:
        return ""
    if _is_cjk(name[0]):
        compact = name.replace(" ", "")
        return compact[0] + "*" * max(1, len(compact) - 1)
    words = name.split(" ")
    if len(words) == 1:
        return words[0][0] + "."
    return words[0] + " " + " ".join(word[0] + "." for word in words[1:])


def mask_phone(phone: str | None) -> str:
    """``13812341234`` -> ``138****1234``; short numbers keep only their last two digits."""
    if not phone:
        return ""
    if len(phone) >= 9:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * (len(phone) - 2) + phone[-2:]
