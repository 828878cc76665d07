"""Referral, card and voucher codes (DESIGN.md, "Codes").

Codes are Crockford base32 with a final check symbol computed with the Damm
algorithm over GF(32).  Damm was chosen over Luhn mod 32 because Luhn mod N
misses the adjacent transposition of the first and last symbols of the alphabet
("0Z" <-> "Z0"); Damm's quasigroup ``x * y = 2x + y`` over GF(32) is totally
anti-symmetric, so *every* single substitution and *every* adjacent
transposition changes the check.  A desk can therefore say "this code looks
mistyped" before touching the database.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum

from flask_babel import lazy_gettext as _l

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
# Crockford's reading rules: letters people confuse with digits read as the digit.
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_SEPARATORS = re.compile(r"[\s\-_.]+")
_AFTER_HOST = re.compile(r"[^/?#]*(?P<path>.*)", re.S)  # what follows the host in "host/path?query#fragment"

PERSONAL_CODE_LENGTH = 8
BEARER_CODE_LENGTH = 12  # card and voucher codes: 11 random symbols = 55 bits
_GF32_MODULUS = 0b100101  # x^5 + x^2 + 1, irreducible over GF(2)


def _times_two(value: int) -> int:
    """Multiply by the field element x in GF(32)."""
    value <<= 1
    if value & 0b100000:
        value ^= _GF32_MODULUS
    return value


def _damm_interim(values) -> int:
    interim = 0
    for value in values:
        interim = _times_two(interim) ^ value
    return interim


def check_symbol(body: str) -> str:
    """The symbol that makes ``body + symbol`` validate."""
    return ALPHABET[_times_two(_damm_interim(_VALUE[s] for s in body))]


def has_valid_check(code: str) -> bool:
    """True when the last symbol of a normalised code is its check symbol."""
    return _damm_interim(_VALUE[s] for s in code) == 0


def generate_code(length: int) -> str:
    """A fresh random code of ``length`` symbols, the last one the check symbol."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(length - 1))
    return body + check_symbol(body)


def generate_personal_code() -> str:
    return generate_code(PERSONAL_CODE_LENGTH)


def generate_bearer_code() -> str:
    return generate_code(BEARER_CODE_LENGTH)


def format_code(code: str) -> str:
    """Group a normalised code in fours for people: ``ABCD-EFGH-JKMN``."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


class CodeKind(str, Enum):
    PERSONAL = "personal"
    BEARER = "bearer"  # a card code or a voucher code


class CodeProblem(str, Enum):
    EMPTY = "empty_code"
    BAD_CHARACTERS = "not_a_code"
    WRONG_LENGTH = "wrong_length"
    MISTYPED = "mistyped_code"


class _TranslatedMessages(dict):
    """Messages marked at import time, read in the language of the page being answered."""

    def __getitem__(self, key) -> str:
        return str(super().__getitem__(key))


PROBLEM_MESSAGES = _TranslatedMessages({
    CodeProblem.EMPTY: _l("Type or scan a code."),
    CodeProblem.BAD_CHARACTERS: _l("That is not a code: codes use only letters and digits."),
    CodeProblem.WRONG_LENGTH: _l("That code has the wrong number of characters: "
                                 "personal codes have 8, card and voucher codes 12."),
    CodeProblem.MISTYPED: _l("This code looks mistyped: please check each character."),
})


class InvalidCode(ValueError):
    """Raised by :func:`parse_code` with the reason a person can act on."""

    def __init__(self, problem: CodeProblem):
        super().__init__(PROBLEM_MESSAGES[problem])
        self.problem = problem

    @property
    def message(self) -> str:
        return PROBLEM_MESSAGES[self.problem]

    def as_refusal(self):
        from clinic.services.errors import Refused

        return Refused(self.problem.value, self.message, field="code")


@dataclass(frozen=True)
class ParsedCode:
    code: str
    kind: CodeKind

    @property
    def display(self) -> str:
        return format_code(self.code)


MAX_INPUT_LENGTH = 2048


def extract_code_text(raw: str) -> str:
    """The code part of what was typed or scanned.

    A USB scanner reading a poster or card QR types the whole URL
    (``https://clinic.example/r/ABCD-EFGH``); the code is its last path segment. The URL is
    split by hand, not by ``urlsplit``, which raises on a malformed host such as ``https://[x]/``.
    """
    text = (raw or "").strip()
    if "/" in text:
        if "://" in text:
            text = _AFTER_HOST.match(text.split("://", 1)[1])["path"]
        path = text.split("?", 1)[0].split("#", 1)[0]
        segments = [segment for segment in path.split("/") if segment]
        text = segments[-1] if segments else ""
    return text


def normalize_code(raw: str) -> str:
    """Upper-case, drop separators and apply Crockford's reading rules."""
    return _SEPARATORS.sub("", extract_code_text(raw)).upper().translate(_READ_AS)


def parse_code(raw: str | None) -> ParsedCode:
    """Turn desk input into a normalised code, or raise :class:`InvalidCode`.

    Never touches the database: a mistyped code is caught by its check symbol.
    """
    if raw is None or not raw.strip():
        raise InvalidCode(CodeProblem.EMPTY)
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidCode(CodeProblem.WRONG_LENGTH)
    code = normalize_code(raw)
    if not code:
        raise InvalidCode(CodeProblem.EMPTY)
    if any(symbol not in _VALUE for symbol in code):
        raise InvalidCode(CodeProblem.BAD_CHARACTERS)
    if len(code) == PERSONAL_CODE_LENGTH:
        kind = CodeKind.PERSONAL
    elif len(code) == BEARER_CODE_LENGTH:
        kind = CodeKind.BEARER
    else:
        raise InvalidCode(CodeProblem.WRONG_LENGTH)
    if not has_valid_check(code):
        raise InvalidCode(CodeProblem.MISTYPED)
    return ParsedCode(code=code, kind=kind)
