"""Money as integers in minor units; conversion only at the edges (forms and display).

Every stored amount — a campaign's rewards and value cap, a reward, a voucher, a paid amount — is a 32-bit INTEGER
column (PostgreSQL refuses more; SQLite does not, so only PostgreSQL would fail, with a 500). An amount entered
anywhere, form or API, is therefore held to one limit in minor units, whatever the currency: CN¥21,474,836.47,
¥2,147,483,647 in JPY. Sums kept in a column (a referrer's yearly total) are BIGINT, so that any number of such
amounts adds up without overflow.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import format_currency, get_currency_precision
from flask_babel import gettext as _

from clinic.i18n import current_language

MAX_AMOUNT_MINOR = 2**31 - 1  # the largest value of a 32-bit INTEGER column


def minor_digits(currency: str) -> int:
    return get_currency_precision(currency)


@lru_cache(maxsize=4096)
def format_money(amount_minor: int, currency: str, locale: str = "en") -> str:
    """``10000, "CNY"`` -> ``CN¥100.00`` (en) / ``¥100.00`` (zh_CN).

    Remembered: Babel takes about 0.1 ms per amount, and a clinic's pages show the same few amounts.
    """
    value = Decimal(amount_minor).scaleb(-minor_digits(currency))
    return format_currency(value, currency, locale=locale)


def parse_money(text: str | None, currency: str) -> int:
    """``"100.5"`` -> ``10050`` for CNY. Raises ValueError with a message for people."""
    cleaned = (text or "").strip().replace(",", "")
    if not cleaned:
        raise ValueError(_("Enter an amount."))
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(_("Enter the amount as a number, for example 100 or 99.50.")) from None
    if not value.is_finite() or value < 0:
        raise ValueError(_("The amount cannot be negative."))
    if value > max_amount(currency):  # compared before scaling: "1e999999" never becomes a number of fen
        raise ValueError(amount_too_large(currency))
    digits = minor_digits(currency)
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        if digits == 0:
            raise ValueError(_("%(currency)s amounts have no decimals: enter a whole number.", currency=currency))
        raise ValueError(_("%(currency)s amounts have at most %(digits)s decimal places.", currency=currency,
                           digits=digits))
    return int(minor)


def max_amount(currency: str) -> Decimal:
    """:data:`MAX_AMOUNT_MINOR` in the currency's major units: 21474836.47 for CNY, 2147483647 for JPY."""
    return Decimal(MAX_AMOUNT_MINOR).scaleb(-minor_digits(currency))


def amount_too_large(currency: str) -> str:
    """The message for an amount over the limit, the limit shown as money in the reader's language."""
    return _("The amount cannot be more than %(limit)s.",
             limit=format_money(MAX_AMOUNT_MINOR, currency, current_language()))


def check_amount(amount_minor: int, currency: str) -> int:
    """An amount in minor units that a money column can hold; raises ValueError with a message for people.

    The services' own check, the same limit as :func:`parse_money`, for amounts that arrive as integers (the API).
    """
    if amount_minor < 0:
        raise ValueError(_("The amount cannot be negative."))
    if amount_minor > MAX_AMOUNT_MINOR:
        raise ValueError(amount_too_large(currency))
    return amount_minor


def major_units_text(amount_minor: int, currency: str) -> str:
    """The amount as a form would show it: ``10050`` -> ``"100.50"``."""
    digits = minor_digits(currency)
    return f"{Decimal(amount_minor).scaleb(-digits):.{digits}f}"
