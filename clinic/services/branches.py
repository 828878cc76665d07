"""Branches of the clinic, and which branch each staff member works at.

What a staff member does records their branch (``Actor.branch_id``), so reports can be
filtered by branch; moving someone to another branch changes only what they do from then on.
"""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.models import Branch, Staff
from clinic.services import audit
from clinic.services.errors import Refused
from clinic.services.text import clean_text
from clinic.services.transaction import Actor, atomic

NAME_MAX = 80
ADDRESS_MAX = 300


def list_branches() -> list[Branch]:
    return list(db.session.scalars(select(Branch).order_by(Branch.name)))


def branch_by_name(name: str) -> Branch | None:
    """The branch with this name, ignoring case and extra spaces."""
    wanted = " ".join((name or "").split()).lower()
    return db.session.scalar(select(Branch).where(func.lower(Branch.name) == wanted))


def staff_with_branches() -> list[Staff]:
    return list(db.session.scalars(select(Staff).order_by(Staff.email)))


def _clean(name: str | None, address: str | None) -> tuple[str, str]:
    try:
        name = clean_text(name, max_length=NAME_MAX, label=_("Branch name"), required=True)
    except ValueError as problem:
        raise Refused("validation_error", str(problem), field="name") from None
    try:
        address = clean_text(address, max_length=ADDRESS_MAX, label=_("Address"), required=False)
    except ValueError as problem:
        raise Refused("validation_error", str(problem), field="address") from None
    return name, address


def _refuse_taken_name(name: str, branch_id: int | None = None) -> None:
    other = branch_by_name(name)
    if other is not None and other.id != branch_id:
        raise Refused("exists", _("There is already a branch called %(name)s.", name=other.name), field="name")


def create_branch(name: str | None, address: str | None, actor: Actor) -> Branch:
    name, address = _clean(name, address)
    try:
        with atomic():
            _refuse_taken_name(name)
            branch = Branch(name=name, address=address)
            db.session.add(branch)
            db.session.flush()
            audit.record("branch.created", actor, branch=branch.id, name=name)
    except IntegrityError:  # another manager created the same name a moment ago
        raise Refused("exists", _("There is already a branch called %(name)s.", name=name), field="name") from None
    return branch


def update_branch(branch_id: int, name: str | None, address: str | None, actor: Actor) -> Branch:
    """Rename a branch or change its address; the audit event lists what changed, old and new."""
    name, address = _clean(name, address)
    try:
        with atomic():
            branch = db.session.get(Branch, branch_id)
            if branch is None:
                raise Refused("not_found", _("No such branch."), status=404)
            _refuse_taken_name(name, branch.id)
            changes = {field: [getattr(branch, field), value] for field, value in (("name", name), ("address", address))
                       if getattr(branch, field) != value}
            if changes:
                branch.name, branch.address = name, address
                audit.record("branch.changed", actor, branch=branch.id, changes=changes)
    except IntegrityError:
        raise Refused("exists", _("There is already a branch called %(name)s.", name=name), field="name") from None
    return branch


def assign_branches(assignments: dict[int, int | None], actor: Actor) -> int:
    """Put each staff member (id -> branch id, or None for no branch) at their branch; all or nothing.

    Returns how many changed. Each change is audited; an unknown staff member or branch refuses the lot.
    """
    with atomic():
        known_branches = set(db.session.scalars(select(Branch.id)))
        # Compared here, not in SQL: an id from a form may be beyond what an id column holds.
        known_staff = set(db.session.scalars(select(Staff.id)))
        changed = 0
        for staff_id, branch_id in sorted(assignments.items()):
            if staff_id not in known_staff:
                raise Refused("not_found", _("One of these staff accounts no longer exists. Reload the page."))
            staff = db.session.get(Staff, staff_id)
            if branch_id is not None and branch_id not in known_branches:
                raise Refused("unknown_branch", _("Pick one of the listed branches for %(email)s.", email=staff.email),
                              field=f"branch-{staff_id}")
            if staff.branch_id != branch_id:
                audit.record("staff.branch_assigned", actor, staff_member=staff.id, email=staff.email,
                             old_branch=staff.branch_id, new_branch=branch_id)
                staff.branch_id = branch_id
                changed += 1
    return changed
