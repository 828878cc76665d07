"""Nonsense sent to every POST route answers 2xx/3xx/4xx with a page, never a 500, and changes nothing."""

import pytest
from sqlalchemy import text

from clinic.extensions import db
from tests.conftest import counts

NASTY_VALUES = [
    "",
    " " * 50,
    "x" * 100_000,
    "<script>alert(1)</script>",
    "' OR 1=1; DROP TABLE patients; --",
    "王小明🎉\u202e\u0000\u0007",
    "\U0010ffff",
    "https://evil.example/r/../../etc/passwd",
    "-1",
    "1e309",
    "NaN",
    "%00%0d%0a",
]
FIELDS = ["code", "full_name", "display_name", "phone", "external_id", "idempotency_key", "reason", "name",
          "brand_colour", "currency", "timezone", "public_base_url", "address", "referrer_reward_kind",
          "referrer_reward_amount", "referrer_reward_label", "friend_reward_kind", "friend_reward_amount",
          "friend_reward_label", "voucher_valid_days", "email", "password", "size", "design", "bleed", "serial",
          "name_on_posters", "card_rewards_differ", "card_referrer_reward_kind", "card_friend_reward_label"]


# Routes that take no input at all: there is no nonsense to send them.
INPUTLESS = ("auth.logout", "patients.rotate_progress_link")
# Routes for which some of the nonsense is valid input; they run last and must only answer without a 5xx.
LENIENT = {
    "admin.void_voucher": "any 3 to 200 printable characters are a reason, 'NaN' included",
    "cards.void_batch": "the same for a batch",
    "cards.print_personal": "the design is optional: an empty one prints the default card",
}


def post_urls(app, ids: dict[str, int]) -> list[tuple[str, str]]:
    """(endpoint, url) for every POST route, with real ids in place of the URL variables."""
    urls = []
    for rule in app.url_map.iter_rules():
        if "POST" in rule.methods and rule.endpoint not in INPUTLESS:
            url = rule.rule
            for name, value in ids.items():
                url = url.replace(f"<int:{name}>", str(value))
            assert "<" not in url, f"no id for {rule.rule}"
            urls.append((rule.endpoint, url))
    return sorted(urls, key=lambda item: item[0] in LENIENT)


@pytest.mark.parametrize("value", NASTY_VALUES, ids=range(len(NASTY_VALUES)))
def test_every_post_route_survives_nonsense(app, manager, referrer, actor, value):
    from clinic.services import cards, redemption
    from tests.conftest import friend

    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).friend_voucher
    batch = cards.create_batch(1, "classic", False, actor)
    before = counts()
    checked_unchanged = False
    for endpoint, url in post_urls(app, {"patient_id": referrer.id, "voucher_id": voucher.id, "batch_id": batch.id}):
        if endpoint in LENIENT and not checked_unchanged:
            assert counts() == before
            checked_unchanged = True
        for htmx in (False, True):
            response = manager.post(url, {field: value for field in FIELDS}, htmx=htmx)
            assert response.status_code < 500, (url, htmx, value[:40], response.status_code)
    assert checked_unchanged


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(app, backend):
    if backend != "sqlite":
        pytest.skip("SQLite only")
    assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert db.session.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1
