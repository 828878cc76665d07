"""Database models, one module per aggregate."""

from clinic.models.api_token import ApiToken
from clinic.models.audit import AuditEvent
from clinic.models.branch import Branch
from clinic.models.campaign import Campaign, RewardKind
from clinic.models.card import UNREDEEMED_CARD_STATUSES, BatchStatus, Card, CardBatch, CardStatus, IssuedCode
from clinic.models.check_mark import CheckMark
from clinic.models.clinic import Clinic
from clinic.models.feedback import VisitFeedback
from clinic.models.idempotency import FormSubmission
from clinic.models.invite_open import InviteOpen
from clinic.models.lead import FriendLead, LeadStatus
from clinic.models.patient import Patient
from clinic.models.referral import Referral, ReferralStatus
from clinic.models.reward import (
    CampaignMonthCount,
    ReferrerYearTotal,
    ReviewRequest,
    Reward,
    RewardStatus,
    Stage,
    Tier,
)
from clinic.models.settings_stamp import SettingsStamp
from clinic.models.staff import RecoveryCode, Role, Staff, StaffSession
from clinic.models.voucher import Voucher, VoucherReminder, VoucherStatus
from clinic.models.webhook import DeliveryStatus, NotificationTemplate, OutboxEvent, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiToken",
    "AuditEvent",
    "BatchStatus",
    "Branch",
    "CampaignMonthCount",
    "ReferrerYearTotal",
    "RecoveryCode",
    "ReferralStatus",
    "ReviewRequest",
    "Reward",
    "RewardStatus",
    "Stage",
    "Tier",
    "Card",
    "CardBatch",
    "CardStatus",
    "CheckMark",
    "UNREDEEMED_CARD_STATUSES",
    "IssuedCode",
    "Campaign",
    "Clinic",
    "FormSubmission",
    "InviteOpen",
    "FriendLead",
    "LeadStatus",
    "Patient",
    "Referral",
    "RewardKind",
    "Role",
    "SettingsStamp",
    "Staff",
    "StaffSession",
    "Voucher",
    "VoucherReminder",
    "VoucherStatus",
    "VisitFeedback",
    "DeliveryStatus",
    "NotificationTemplate",
    "OutboxEvent",
    "WebhookDelivery",
    "WebhookEndpoint",
]
