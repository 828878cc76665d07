"""Per-form idempotency keys: a resubmitted form replays its first result."""

from __future__ import annotations

import hashlib
import re
from typing import Callable, TypeVar

from flask_babel import gettext as _
from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.models import FormSubmission
from clinic.services.errors import Refused
from clinic.services.transaction import atomic, insert_ignoring_duplicates

T = TypeVar("T")

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# Built once, on the table: the ORM's bulk UPDATE path costs several times the statement itself.
_SUBMISSIONS = FormSubmission.__table__
_RECORD_RESULT = (update(_SUBMISSIONS).where(_SUBMISSIONS.c.key == bindparam("claimed_key"))
                  .values(result_id=bindparam("result_id")))


def fingerprint(*parts) -> str:
    """A hash of what the form asked for, to tell a replay from a reused key."""
    return hashlib.sha256("\x1f".join("" if part is None else str(part) for part in parts).encode()).hexdigest()


def check_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    if not KEY_PATTERN.match(key):
        raise Refused("validation_error", _("The form is damaged: reload the page and try again."),
                      field="idempotency_key")
    return key


def previous_result(key: str | None, action: str, request_fingerprint: str) -> int | None:
    """The result id of an earlier submission with this key, or None if there was none."""
    if key is None:
        return None
    submission = db.session.get(FormSubmission, key)
    if submission is None:
        return None
    if submission.action != action or submission.fingerprint != request_fingerprint:
        raise Refused("key_reused", _("This form was already submitted with different details. "
                                       "Reload the page to start again."), status=409)
    return submission.result_id


def remember(key: str | None, action: str, request_fingerprint: str) -> FormSubmission | None:
    """Claim the key inside the current transaction; a concurrent twin fails on the primary key."""
    if key is None:
        return None
    submission = FormSubmission(key=key, action=action, fingerprint=request_fingerprint)
    db.session.add(submission)
    db.session.flush()
    return submission


def claim(key: str | None, action: str, request_fingerprint: str) -> bool:
    """Claim the key inside the current transaction in one statement; False when a submission holds it already.

    A concurrent twin with the same key waits for the first transaction (the primary key decides)
    and then gets False, so it can replay :func:`previous_result` instead of recovering from an error.
    No key: nothing to claim (True).
    """
    if key is None:
        return True
    return insert_ignoring_duplicates(FormSubmission, {"key": key, "action": action,
                                                       "fingerprint": request_fingerprint})


def record_result(key: str | None, result_id: int) -> None:
    """Write the result a claimed key replays (in the transaction that claimed it)."""
    if key is not None:
        db.session.execute(_RECORD_RESULT, {"claimed_key": key, "result_id": result_id})


def run_once(action: str, key: str | None, parts: tuple, perform: Callable[[], T], result_id: Callable[[T], int],
             replay: Callable[[int], T]) -> tuple[T, bool]:
    """Run ``perform`` in one transaction, once per idempotency key; returns (result, replayed).

    The key is claimed *before* the work, in the same transaction: a concurrent twin with the same
    key waits on the key's row and then replays the first answer, instead of racing the work
    itself. The same key with different ``parts`` is refused (key_reused); no key, no replay.
    A refused action claims nothing, so resending it asks again.
    """
    key = check_key(key)
    request_fingerprint = fingerprint(action, *parts)
    try:
        with atomic():
            previous = previous_result(key, action, request_fingerprint)
            if previous is not None:
                return replay(previous), True
            submission = remember(key, action, request_fingerprint)
            result = perform()
            if submission is not None:
                submission.result_id = result_id(result)
        return result, False
    except IntegrityError:
        previous = previous_result(key, action, request_fingerprint)
        if previous is None:
            raise
        return replay(previous), True
