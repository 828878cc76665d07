"""Nonsense sent to every POST route answers 2xx/3xx/4xx with a page, never a 500, and changes nothing."""

import pytest
from sqlalchemy import select, text

from clinic.extensions import db
from clinic.models import Branch, Campaign, FriendLead, ReviewRequest, Tier
from clinic.services.transaction import atomic
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
          "name_on_posters", "card_rewards_differ", "card_referrer_reward_kind", "card_friend_reward_label",
          "amount", "token", "expected", "decision", "approve", "starts_on", "ends_on", "covers", "cap_referrals_per_year",
          "cap_value_per_year", "friend_monthly_quota", "quota_label", "min_paid_referrals", "window_months",
          "privileges", "staff_id", "branch_id", "consent", "referrer_reward_stage", "friend_reward_stage", "seen",
          "messages", "leaderboard", "status", "note"]


# Routes that take no input at all: there is no nonsense to send them.
INPUTLESS = ("auth.logout", "patients.rotate_progress_link", "honours.delete_tier", "desk.mark_visit",
             "referrals.visit", "admin.disable_staff", "admin.enable_staff", "admin.end_staff_sessions", "admin.reset_two_step",
             "accounts.reset_password",
             "auth.two_step_start", "webhooks.enable", "webhooks.disable", "webhooks.delete", "webhooks.resend", "webhooks.rotate_secret",
             "api_tokens.revoke", "public.feedback_callback", "reports.feedback_called")
# Routes for which some of the nonsense is valid input; they run last and must only answer without a 5xx.
LENIENT = {
    "admin.void_voucher": "any 3 to 200 printable characters are a reason, 'NaN' included",
    "cards.void_batch": "the same for a batch",
    "cards.print_personal": "the design is optional: an empty one prints the default card",
    "reports.create_branch": "any printable name is a branch name",
    "reports.edit_branch": "the same when renaming",
    "reviews.decide": "any 3 to 200 printable characters are a decision's reason",
    "referrals.reverse": "the same for a reversal's reason",
    "api_tokens.create": "any printable name is an API token's name",
}


def post_urls(app, ids: dict[str, int | str]) -> list[tuple[str, str]]:
    """(endpoint, url) for every POST route, with real ids (and a real progress token) in place of the URL variables."""
    urls = []
    for rule in app.url_map.iter_rules():
        # The JSON API (bearer tokens, no forms) is fuzzed from its OpenAPI document: tests/test_api_schema.py.
        if "POST" in rule.methods and rule.endpoint not in INPUTLESS and not rule.endpoint.startswith("api."):
            url = rule.rule
            for name, value in ids.items():
                url = url.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", str(value))
            assert "<" not in url, f"no id for {rule.rule}"
            urls.append((rule.endpoint, url))
    return sorted(urls, key=lambda item: item[0] in LENIENT)


@pytest.mark.parametrize("value", NASTY_VALUES, ids=range(len(NASTY_VALUES)))
def test_every_post_route_survives_nonsense(app, manager, referrer, actor, value):
    from clinic.services import cards, redemption
    from clinic.services.patients import rotate_progress_link
    from tests.conftest import friend

    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    batch = cards.create_batch(1, "classic", False, actor)
    with atomic():
        branch = Branch(name="Riverside")
        tier = Tier(name="VIP", min_paid_referrals=3)
        db.session.add_all([branch, tier])
        db.session.flush()
        review = ReviewRequest(kind="existing_patient", code=referrer.personal_code, patient_id=referrer.id,
                               referrer_id=referrer.id)
        db.session.add(review)
    from clinic.services import invitations, leads

    leads.request_call_back(invitations.invitation(referrer.personal_code), "Lucy", "13966660001", "yes", "")
    lead_id = db.session.scalar(select(FriendLead.id))
    ids = {"patient_id": referrer.id, "voucher_id": result.friend_voucher.id, "batch_id": batch.id,
           "raw_code": referrer.personal_code, "lead_id": lead_id,
           "branch_id": branch.id, "tier_id": tier.id, "review_id": review.id, "referral_id": result.referral.id,
           "campaign_id": db.session.scalar(select(Campaign.id)), "token": rotate_progress_link(referrer.id, actor),
           "staff_id": actor.staff_id}
    before = counts()
    checked_unchanged = False
    for endpoint, url in post_urls(app, ids):
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


@pytest.mark.parametrize("host", ["a..b", ".", "a" * 64 + ".com", "x" * 300])
@pytest.mark.parametrize("path", ["/livez", "/", "/p/some-token", "/desk/", "/api/v1/vouchers/ABCD"])
def test_a_host_header_that_is_no_host_name_answers_400_not_500(app, manager, host, path):
    """Werkzeug refuses such a Host (BadHost) before any URL can be built, so the error page, which builds URLs,
    could not be drawn and the 500 page failed the same way: now a short answer in plain words (JSON for the API)."""
    for headers in ({"Host": host}, {"Host": host, "HX-Request": "true"}):
        response = manager.get(path, headers=dict(headers))
        assert response.status_code == 400, (path, headers)
        if path.startswith("/api/"):
            assert response.get_json()["error"]["code"] == "bad_host"
        else:
            assert "not a valid host name" in response.get_data(as_text=True)
