"""The real app plus one deliberately racy endpoint: the negative control of the gunicorn race tests.

``POST /race/naive-spend`` spends a voucher the way the project forbids (STYLE.md, habit 2):
it reads the status in one transaction, thinks for a moment, then writes unconditionally
in another. Fired at once from many clients it pays more than once; fired one after another
it pays once. If the race harness ever stops firing its requests at the same moment, the
control sees a single winner and fails. Serve it with ``gunicorn tests.race_app:app``.
"""

from __future__ import annotations

import time

from flask import request
from flask_login import current_user, login_required
from sqlalchemy import select, update

from clinic import create_app
from clinic.extensions import db
from clinic.models import Voucher, VoucherStatus
from clinic.models._time import utcnow
from clinic.services import audit
from clinic.services.transaction import Actor, atomic
from clinic.web.access import ACCESS, Access

NAIVE_SPEND_ACTION = "race.naive_spend"
THINKING_SECONDS = 0.05

ENDPOINT = "naive_spend"

app = create_app()
ACCESS[ENDPOINT] = Access.STAFF  # every route must be in the access table (clinic/web/access.py)


@app.post("/race/naive-spend", endpoint=ENDPOINT)
@login_required
def naive_spend():
    code = request.form.get("code", "")
    status = db.session.scalar(select(Voucher.status).where(Voucher.code == code))
    db.session.rollback()  # the check's transaction ends here: nothing holds the row any more
    if status != VoucherStatus.ACTIVE.value:
        return f"not spendable: {status}", 409
    time.sleep(THINKING_SECONDS)
    with atomic():
        db.session.execute(update(Voucher).where(Voucher.code == code)
                           .values(status=VoucherStatus.SPENT.value, spent_at=utcnow(), spent_by_id=current_user.id)
                           .execution_options(synchronize_session=False))
        voucher_id = db.session.scalar(select(Voucher.id).where(Voucher.code == code))
        audit.record(NAIVE_SPEND_ACTION, Actor(staff_id=current_user.id), voucher_id=voucher_id)
    return "spent", 200
