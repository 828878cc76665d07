"""Which scopes each API operation needs: one table for every route, checked before any view runs.

A token holds the scopes a manager chose when making it (clinic/services/api_tokens.py ``SCOPES``); an operation
needs every scope its entry names. Most need one; an operation whose answer shows what another scope guards needs
that scope too, so that a token cannot read through a write (a write-only token walking patient ids must not collect
their phones). An endpoint missing from this table is refused to every token (fail closed), and tests/test_api.py
walks every API route, so that adding one without deciding its scopes fails the build. The OpenAPI document
(clinic/api/spec.py) names each operation's scopes from this table.
"""

from __future__ import annotations

ENDPOINT_SCOPES: dict[str, tuple[str, ...]] = {
    "api.find_patients": ("patients:read",),
    "api.get_patient": ("patients:read",),
    "api.create_patient": ("patients:write",),
    # The answer is the corrected record (phone included); an integration reads the record first for its ETag anyway.
    "api.correct_patient": ("patients:write", "patients:read"),
    # The answer is the record and a new progress URL, whose page shows the patient's voucher codes.
    "api.rotate_progress_link": ("patients:write", "patients:read", "vouchers:read"),
    "api.record_visit": ("milestones:write",),
    "api.record_payment": ("milestones:write",),
    # Checking a code is the first half of redeeming it: it names the referrer and what each side gets. For a voucher
    # code it shows the voucher's details only to a token that also holds VOUCHER_DETAILS_SCOPE (clinic/api/views.py).
    "api.validate_code": ("redemptions:write",),
    "api.redeem": ("redemptions:write",),
    "api.get_voucher": ("vouchers:read",),
    "api.spend_voucher": ("vouchers:write",),
    "api.void_voucher": ("vouchers:write",),
    "api.activate_card": ("cards:write",),
    # A batch's PDF carries every card's hidden code: only a token that may print cards may fetch it.
    "api.create_batch": ("cards:write",),
    "api.get_batch": ("cards:write",),
    "api.batch_pdf": ("cards:write",),
}

# What validate_code needs besides its own scope to show a voucher code's details (what GET /vouchers/{code} shows).
VOUCHER_DETAILS_SCOPE = "vouchers:read"
