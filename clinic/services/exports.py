"""CSV exports for managers: referrals, vouchers, patients, the campaign comparison and the referrals to check, each
one audited.

The files are for spreadsheets: UTF-8 with a byte-order mark (so Excel reads Chinese names),
times in the clinic's zone, money as decimal text in major units with a currency column, and
every cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``…) prefixed with
a quote. They hold phone numbers in full, but never progress tokens (only their hashes are
stored, and those are left out too) and never a whole voucher code (a voucher is a bearer
reward: the code is its value), only its last four symbols.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import aliased, selectinload

from clinic.extensions import db
from clinic.models import Branch, InviteOpen, Patient, Referral, ReferralStatus, Staff, Voucher
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.codes import format_code
from clinic.services.privacy import mask_phone
from clinic.services.referral_checks import referral_checks, with_marks
from clinic.services.money import major_units_text
from clinic.services.reports import Scope, campaign_comparison
from clinic.services.text import spreadsheet_cell
from clinic.services.transaction import Actor, atomic

BOM = "\ufeff"


@dataclass(frozen=True)
class Export:
    kind: str  # referrals | vouchers | patients | campaigns
    text: str
    rows: int

    def filename(self, scope: Scope) -> str:
        return f"{self.kind}-{scope.first_day.isoformat()}-to-{scope.last_day.isoformat()}.csv"


def safe_cell(value) -> str:
    """The value as spreadsheet text that is never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return spreadsheet_cell(str(value))


def _csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([safe_cell(value) for value in row] for row in rows)
    return out.getvalue()


def _audited(kind: str, scope: Scope, header: list[str], rows: list[list], actor: Actor) -> Export:
    with atomic():
        audit.record(f"export.{kind}", actor, first_day=scope.first_day.isoformat(),
                     last_day=scope.last_day.isoformat(), branch=scope.branch_id, rows=len(rows))
    return Export(kind, _csv(header, rows), len(rows))


def _time(scope: Scope, moment: datetime | None) -> str:
    return scope.local(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


def _money(amount: int | None, currency: str) -> str:
    return major_units_text(amount, currency) if amount is not None else ""


def _names(model, column) -> dict[int, str]:
    return dict(db.session.execute(select(model.id, column)).all())


def export_referrals(scope: Scope, currency: str, actor: Actor) -> Export:
    """Referrals registered in the period (reversed ones too, with their status)."""
    query = (select(Referral).where(Referral.created_at >= scope.start, Referral.created_at < scope.end)
             .options(selectinload(Referral.referrer), selectinload(Referral.friend), selectinload(Referral.card),
                      selectinload(Referral.campaign))
             .order_by(Referral.created_at, Referral.id))
    if scope.branch_id is not None:
        query = query.where(Referral.branch_id == scope.branch_id)
    branches, staff = _names(Branch, Branch.name), _names(Staff, Staff.email)
    header = ["referral id", "registered", "status", "referrer id", "referrer", "friend id", "friend", "friend phone",
              "came with", "card serial", "campaign", "branch", "registered by", "visited", "paid", "amount paid",
              "currency", "reversed", "reversal reason"]
    rows = [[r.id, _time(scope, r.created_at), r.status, r.referrer_id, r.referrer.full_name, r.friend_id,
             r.friend.full_name, r.friend.phone, "card" if r.card_id else "personal code",
             r.card.serial if r.card else "", r.campaign.name, branches.get(r.branch_id, ""),
             staff.get(r.staff_id, ""), _time(scope, r.visited_at), _time(scope, r.paid_at),
             _money(r.paid_amount, currency), currency if r.paid_amount is not None else "",
             _time(scope, r.reversed_at), r.reversal_reason]
            for r in db.session.scalars(query)]
    return _audited("referrals", scope, header, rows, actor)


def export_vouchers(scope: Scope, actor: Actor, now: datetime | None = None) -> Export:
    """Vouchers issued in the period; with a branch, those earned by referrals registered there."""
    now = now or utcnow()
    query = (select(Voucher).where(Voucher.issued_at >= scope.start, Voucher.issued_at < scope.end)
             .options(selectinload(Voucher.patient), selectinload(Voucher.referral))
             .order_by(Voucher.issued_at, Voucher.id))
    if scope.branch_id is not None:
        query = query.join(Referral, Voucher.referral_id == Referral.id).where(Referral.branch_id == scope.branch_id)
    branches = _names(Branch, Branch.name)
    header = ["voucher id", "code ends", "issued", "expires", "status", "patient id", "patient", "for", "kind",
              "amount", "service", "currency", "referral id", "branch", "spent", "spent at branch", "voided",
              "void reason"]
    rows = [[v.id, v.code[-4:], _time(scope, v.issued_at), _time(scope, v.expires_at), v.status_at(now).value,
             v.patient_id, v.patient.full_name, v.beneficiary, v.kind,
             _money(v.amount, v.currency) if v.kind == "money" else "", v.label, v.currency, v.referral_id,
             branches.get(v.referral.branch_id, "") if v.referral else "", _time(scope, v.spent_at),
             branches.get(v.spent_branch_id, ""), _time(scope, v.voided_at), v.void_reason]
            for v in db.session.scalars(query)]
    return _audited("vouchers", scope, header, rows, actor)


def export_patients(scope: Scope, actor: Actor) -> Export:
    """Patients enrolled in the period (at the branch, with one), who referred them, how many friends they brought and
    how often their invite page was opened (ever: like the friends, a count of all time)."""
    referrer = aliased(Patient)
    friends = (select(Referral.referrer_id, func.count(Referral.id).label("friends"))
               .where(Referral.status != ReferralStatus.REVERSED.value).group_by(Referral.referrer_id).subquery())
    opens = (select(InviteOpen.patient_id, func.sum(InviteOpen.opens).label("opens"))
             .group_by(InviteOpen.patient_id).subquery())
    query = (select(Patient, referrer.full_name, func.coalesce(friends.c.friends, 0), func.coalesce(opens.c.opens, 0))
             .outerjoin(referrer, Patient.referred_by_id == referrer.id)
             .outerjoin(friends, friends.c.referrer_id == Patient.id)
             .outerjoin(opens, opens.c.patient_id == Patient.id)
             .where(Patient.enrolled_at >= scope.start, Patient.enrolled_at < scope.end)
             .order_by(Patient.enrolled_at, Patient.id))
    if scope.branch_id is not None:
        query = query.where(Patient.branch_id == scope.branch_id)
    branches = _names(Branch, Branch.name)
    header = ["patient id", "full name", "display name", "phone", "record number", "personal code", "enrolled",
              "branch", "referred by id", "referred by", "friends referred", "invite page opens", "name on posters",
              "on leaderboard"]
    rows = [[p.id, p.full_name, p.display_name, p.phone, p.external_id, format_code(p.personal_code),
             _time(scope, p.enrolled_at), branches.get(p.branch_id, ""), p.referred_by_id, referred_by, friends,
             invite_opens, p.name_on_posters, p.leaderboard_opt_in]
            for p, referred_by, friends, invite_opens in db.session.execute(query)]
    return _audited("patients", scope, header, rows, actor)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _terms(terms, currency: str) -> str:
    return terms.describe_with_stage(currency) if terms is not None else ""


def export_campaigns(scope: Scope, currency: str, actor: Actor) -> Export:
    """The dashboard's campaign comparison, row for row (no personal data: figures per campaign).

    The offer is worded in the manager's language, as the page words it; percentages have one decimal.
    """
    header = ["campaign id", "campaign", "referrer's reward", "friend's reward", "referrer's reward (card)",
              "friend's reward (card)", "friends registered", "visited", "visited %", "paid", "paid %",
              "friends' first payments", "reward money issued", "service vouchers issued",
              "reward money per paying friend", "currency"]
    rows = [[c.campaign_id, c.name, _terms(c.referrer_reward, currency), _terms(c.friend_reward, currency),
             _terms(c.card_referrer_reward, currency), _terms(c.card_friend_reward, currency), c.registered,
             c.visited, _percent(c.visited_percent), c.paid, _percent(c.paid_percent),
             _money(c.paid_amount, currency), _money(c.reward_money, currency), c.service_vouchers,
             _money(c.reward_money_per_paid, currency), currency]
            for c in campaign_comparison(scope)]
    return _audited("campaigns", scope, header, rows, actor)


def export_checks(scope: Scope, actor: Actor, now: datetime | None = None) -> Export:
    """The referrals to check, row for row as the page lists them with its checked rows shown; phones masked as the
    page shows them (this file is for a second look, not for calling anyone). Money per currency: one line per
    currency a row's vouchers had. "checked": "yes" for a row marked as checked with nothing newer since, "before"
    for one marked before newer evidence came, empty for one never marked."""
    header = ["rule", "referrer id", "referrer", "referrer phone", "staff", "count", "first", "last",
              "share of the referrer's friends %", "friends' phones", "reward money", "currency", "service vouchers",
              "checked", "checked by", "checked at", "check note"]
    rows = []
    for check in with_marks(referral_checks(scope, now)):
        mark = check.mark
        checked = ["yes" if check.checked else "before", mark.checked_by or "", _time(scope, mark.checked_at),
                   mark.note or ""] if mark else ["", "", "", ""]
        person = check.referrer
        shared = [check.rule, person.id if person else "", person.staff_name if person else "",
                  mask_phone(person.phone) if person else "", check.staff_email or "", check.count,
                  _time(scope, check.first_at), _time(scope, check.last_at),
                  "" if check.share is None else check.share, " ".join(mask_phone(phone) for phone in check.phones)]
        money = sorted(check.money.items()) or [("", None)]
        rows += [[*shared, _money(amount, currency), currency, check.service_vouchers, *checked]
                 for currency, amount in money]
    return _audited("checks", scope, header, rows, actor)
