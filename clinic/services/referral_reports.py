"""Read-only views of referrals for staff pages: a reversal's report and the manager's review queue.

The changes themselves (milestones, reversal, decisions) live in :mod:`clinic.services.milestones`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Referral, ReferralStatus, ReviewRequest, Reward, RewardStatus, Voucher, VoucherStatus
from clinic.services.milestones import ReversalReport

DECIDED_SHOWN = 50


def reversal_report(referral_id: int) -> ReversalReport | None:
    """What a past reversal did, read back: vouchers it voided, vouchers already spent, rewards cancelled.

    The reversal voided its vouchers at the very moment it stamped on the referral, so that
    moment tells them apart from vouchers voided earlier by hand. None unless the referral was reversed.
    """
    referral = db.session.get(Referral, referral_id)
    if referral is None or referral.status != ReferralStatus.REVERSED.value:
        return None
    vouchers = db.session.scalars(select(Voucher).where(Voucher.referral_id == referral_id).order_by(Voucher.id)).all()
    return ReversalReport(
        referral=referral,
        voided=[v for v in vouchers if v.status == VoucherStatus.VOID.value and v.voided_at == referral.reversed_at],
        already_spent=[v for v in vouchers if v.status == VoucherStatus.SPENT.value],
        cancelled=list(db.session.scalars(select(Reward).where(Reward.referral_id == referral_id,
                                                               Reward.status == RewardStatus.CANCELLED.value)
                                          .order_by(Reward.id))),
    )


def pending_review_count() -> int:
    return db.session.scalar(select(func.count()).select_from(ReviewRequest)
                             .where(ReviewRequest.status == "pending")) or 0


def decided_reviews(limit: int = DECIDED_SHOWN) -> list[ReviewRequest]:
    """The latest decisions, newest first."""
    return list(db.session.scalars(select(ReviewRequest).where(ReviewRequest.status != "pending")
                                   .order_by(ReviewRequest.decided_at.desc(), ReviewRequest.id.desc()).limit(limit)))
