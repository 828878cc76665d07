"""What the desk's single code field means: a referral code or card to redeem, or a voucher to spend."""

from __future__ import annotations

from clinic.models import Voucher
from clinic.services.codes import CodeKind, InvalidCode, parse_code
from clinic.services.redemption import ReferralOffer, referral_offer
from clinic.services.vouchers import find_voucher


def identify_code(raw: str | None) -> ReferralOffer | Voucher:
    """Read typed or scanned input without using it. Raises :class:`Refused` with the reason."""
    try:
        parsed = parse_code(raw)
    except InvalidCode as problem:
        raise problem.as_refusal() from None
    voucher = find_voucher(parsed.code) if parsed.kind is CodeKind.BEARER else None
    return voucher or referral_offer(parsed.code)
