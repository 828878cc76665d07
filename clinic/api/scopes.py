"""Which scope each API operation needs: one table for every route, checked before any view runs.

A token holds the scopes a manager chose when making it (clinic/services/api_tokens.py ``SCOPES``); an operation
needs exactly one. An endpoint missing from this table is refused to every token (fail closed), and
tests/test_api_scopes.py walks every API route, so that adding one without deciding its scope fails the build.
The OpenAPI document (clinic/api/spec.py) names each operation's scope from this table.
"""

from __future__ import annotations

ENDPOINT_SCOPES: dict[str, str] = {
    "api.find_patients": "patients:read",
    "api.get_patient": "patients:read",
    "api.create_patient": "patients:write",
    "api.correct_patient": "patients:write",
    "api.rotate_progress_link": "patients:write",
    "api.record_visit": "milestones:write",
    "api.record_payment": "milestones:write",
    # Checking a code is the first half of redeeming it: it names the referrer and what each side gets.
    "api.validate_code": "redemptions:write",
    "api.redeem": "redemptions:write",
    "api.get_voucher": "vouchers:read",
    "api.spend_voucher": "vouchers:write",
    "api.void_voucher": "vouchers:write",
    "api.activate_card": "cards:write",
    # A batch's PDF carries every card's hidden code: only a token that may print cards may fetch it.
    "api.create_batch": "cards:write",
    "api.get_batch": "cards:write",
    "api.batch_pdf": "cards:write",
}
