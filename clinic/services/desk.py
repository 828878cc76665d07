"""What the desk's single code field means: a referral code to redeem or a voucher to spend."""

from __future__ import annotations

from clinic.models import Voucher
from clinic.services.codes import CodeKind, InvalidCode, parse_code
from clinic.services.errors import Refused
from clinic.services.redemption import ReferralOffer, referral_offer
from clinic.services.vouchers import find_voucher


def identify_code(raw: str | None) -> ReferralOffer | Voucher:
    """Read typed or scanned input without using it. Raises :class:`Refused` with the reason."""
    try:
        parsed = parse_code(raw)
    except InvalidCode as problem:
        raise problem.as_refusal() from None
    if parsed.kind is CodeKind.PERSONAL:
        return referral_offer(parsed.code)
    voucher = find_voucher(parsed.code)
    if voucher is None:
        raise Refused("unknown_code", "No card or voucher has this code. Check it with the patient.",
                      field="code", status=404)
    return voucher
