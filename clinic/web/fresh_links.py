"""A progress link is shown for a short while after it is issued, then never again.

Only its hash is stored in the database, so the raw token lives for 15 minutes in the
staff member's signed session, long enough to print the welcome slip (and to reload it).
"""

from __future__ import annotations

import time

from flask import session

KEEP_SECONDS = 15 * 60
MAX_KEPT = 5


def remember_fresh_progress_token(patient_id: int, token: str) -> None:
    links = {key: value for key, value in session.get("fresh_links", {}).items()
             if value[1] > time.time() - KEEP_SECONDS}
    links[str(patient_id)] = [token, time.time()]
    session["fresh_links"] = dict(sorted(links.items(), key=lambda item: item[1][1])[-MAX_KEPT:])


def fresh_progress_token(patient_id: int) -> str | None:
    """The token issued for this patient in the last 15 minutes, if this session issued one."""
    entry = session.get("fresh_links", {}).get(str(patient_id))
    if not entry or entry[1] <= time.time() - KEEP_SECONDS:
        return None
    return entry[0]
