"""Read-only views of referrals for staff pages: a reversal's report and the manager's review queue.

The changes themselves (milestones, reversal, decisions) live in :mod:`clinic.services.milestones`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Referral, ReferralStatus, ReviewRequest, Reward, RewardStatus, Voucher, VoucherStatus

DECIDED_SHOWN = 50


def pending_review_count() -> int:
    return db.session.scalar(select(func.count()).select_from(ReviewRequest)
                             .where(ReviewRequest.status == "pending")) or 0


def decided_reviews(limit: int = DECIDED_SHOWN) -> list[ReviewRequest]:
    """The latest decisions, newest first."""
    return list(db.session.scalars(select(ReviewRequest).where(ReviewRequest.status != "pending")
                                   .order_by(ReviewRequest.decided_at.desc(), ReviewRequest.id.desc()).limit(limit)))
