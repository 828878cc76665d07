"""The integration API (/api/v1): tokens, each endpoint's success, each documented error code, idempotency."""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import re
import threading
from datetime import timedelta
from functools import cached_property

import pytest
from flask import has_app_context
from sqlalchemy import func, select, update

from clinic import create_app
from clinic.api.scopes import ENDPOINT_SCOPES
from clinic.api.spec import ERROR_CODES, openapi_document
from clinic.extensions import db
from clinic.models import ApiToken, AuditEvent, Campaign, Card, CardBatch, Patient, Voucher
from clinic.models._time import utcnow
from clinic.services import api_tokens, cards, codes, erasure, jobs, redemption
from clinic.services.clinic_settings import clinic_day_of
from clinic.services import staff as staff_service
from clinic.services.transaction import Actor, atomic
from tests import api_error_coverage
from tests.conftest import Browser, counts, friend

FRIEND = {"name": "Chen Jie", "phone": "139 3333 4444"}


@pytest.fixture(autouse=True)
def _note_that_this_test_ran(request):
    """For the session-end proof that every documented error code was answered (tests/api_error_coverage.py)."""
    yield
    api_error_coverage.record_ran(request.node.originalname)


class Api:
    """The test client as an HIS: JSON in and out, a bearer token, and each request in its own context."""

    def __init__(self, app, token: str | None):
        self.client = app.test_client()
        self.token = token

    def request(self, method: str, path: str, body=None, headers: dict | None = None, **kwargs):
        headers = dict(headers or {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            kwargs["json"] = body
        response = contextvars.Context().run(self.client.open, path, method=method, headers=headers, **kwargs)
        api_error_coverage.record_answer(response)
        if has_app_context():
            db.session.rollback()  # the test's own session then sees what the request committed
        return response

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body=None, **kwargs):
        return self.request("PATCH", path, body, **kwargs)


def error_of(response) -> tuple[int, str, str | None]:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"], body["error"]["field"]


def set_campaign(**changes) -> None:
    with atomic():
        campaign = db.session.scalar(select(Campaign).where(Campaign.is_default.is_(True)))
        for key, value in changes.items():
            setattr(campaign, key, value)


@pytest.fixture
def token(manager_user) -> str:
    return api_tokens.create_token("Hospital HIS", api_tokens.SCOPES, Actor(staff_id=manager_user.id))[1]


@pytest.fixture
def api(app, token) -> Api:
    return Api(app, token)


def redeem(api: Api, code: str, new_patient: dict | None = None, key: str | None = None, **kwargs):
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/api/v1/redemptions", {"code": code, "new_patient": new_patient or FRIEND}, headers=headers,
                    **kwargs)


def printed_cards(actor: Actor, size: int = 3) -> list[Card]:
    batch = cards.create_batch(size, "classic", False, actor)
    assert cards.run_batch(batch.id)
    return list(db.session.scalars(select(Card).where(Card.batch_id == batch.id).order_by(Card.id)))


# --- tokens -----------------------------------------------------------------------------------------------------


def test_without_a_valid_token_every_operation_answers_401_with_a_bearer_challenge(app, token, manager):
    missing = Api(app, None).get("/api/v1/patients/1")
    assert error_of(missing) == (401, "unauthorized", None)
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="clinic-api"'
    wrong = Api(app, "clk_" + "x" * 43).get("/api/v1/patients/1")
    assert error_of(wrong)[:2] == (401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert error_of(Api(app, token).get("/api/v1/patients/1", headers={"Authorization": f"Basic {token}"}))[0] == 401
    # A manager's logged-in browser session does not open the API (it would make CSRF possible).
    assert error_of(manager.get("/api/v1/patients/1"))[0] == 401
    assert error_of(manager.post("/api/v1/patients", {"name": "Via cookie"}))[0] == 401


def test_a_post_needs_no_csrf_token_only_the_bearer_token(api):
    response = api.post("/api/v1/patients", {"name": "Wang Li"})  # no session, no CSRF token
    assert response.status_code == 201


def test_a_token_is_stored_only_as_a_hash_and_a_revoked_one_stops_working_at_once(app, api, token, manager_user):
    stored = db.session.scalar(select(ApiToken))
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps([stored.name, stored.prefix, stored.token_hash])
    assert token.startswith(stored.prefix) and len(token) >= 43  # 256 random bits
    assert api.get("/api/v1/patients?phone=13800000000").status_code == 200
    api_tokens.revoke_token(stored.id, Actor(staff_id=manager_user.id))
    assert error_of(api.get("/api/v1/patients?phone=13800000000")) == (401, "unauthorized", None)


def test_a_token_stops_working_while_its_creator_is_disabled_and_works_again_when_enabled(app, api, manager_user,
                                                                                         make_staff):
    other_manager = make_staff("manager", "second-manager@example.com")
    staff_service.set_enabled(manager_user.id, False, Actor(staff_id=other_manager.id))
    assert error_of(api.get("/api/v1/patients?phone=13800000000")) == (401, "unauthorized", None)
    other = Browser(app.test_client())
    other.login(other_manager.email)
    assert "Suspended: its creator's account is disabled." in other.get("/admin/api-tokens/").get_data(as_text=True)
    staff_service.set_enabled(manager_user.id, True, Actor(staff_id=other_manager.id))
    assert api.get("/api/v1/patients?phone=13800000000").status_code == 200


def test_a_token_stops_working_while_its_creator_is_no_longer_a_manager(app, api, manager_user, make_staff):
    """Only managers make and revoke tokens: a manager moved to the front desk no longer holds an integration's
    keys (a leaked one of theirs could not even be revoked by them), as when their account is disabled."""
    other_manager = make_staff("manager", "second-manager@example.com")
    staff_service.change_role(manager_user.id, "front_desk", Actor(staff_id=other_manager.id))
    assert error_of(api.get("/api/v1/patients?phone=13800000000")) == (401, "unauthorized", None)
    other = Browser(app.test_client())
    other.login(other_manager.email)
    assert "Suspended: its creator is no longer a manager." in other.get("/admin/api-tokens/").get_data(as_text=True)
    staff_service.change_role(manager_user.id, "manager", Actor(staff_id=other_manager.id))
    assert api.get("/api/v1/patients?phone=13800000000").status_code == 200


def test_a_token_made_with_the_cli_has_no_creator_and_keeps_working(app):
    raw = api_tokens.create_token("Lab system", api_tokens.SCOPES, Actor())[1]
    assert Api(app, raw).get("/api/v1/patients?phone=13800000000").status_code == 200


def test_last_use_is_noted_at_most_once_a_minute(api, monkeypatch):
    assert db.session.scalar(select(ApiToken.last_used_at)) is None
    api.get("/api/v1/patients?phone=13800000000")
    first = db.session.scalar(select(ApiToken.last_used_at))
    assert first is not None
    api.get("/api/v1/patients?phone=13800000000")
    assert db.session.scalar(select(ApiToken.last_used_at)) == first
    later = utcnow() + timedelta(minutes=2)
    monkeypatch.setattr(api_tokens, "utcnow", lambda: later)
    api.get("/api/v1/patients?phone=13800000000")
    assert db.session.scalar(select(ApiToken.last_used_at)) == later


def test_a_manager_creates_a_token_sees_it_once_sees_its_last_use_and_revokes_it(app, manager, manager_user):
    form = manager.get("/admin/api-tokens/").get_data(as_text=True)
    assert form.count('name="scopes"') == len(api_tokens.SCOPES) and " checked" not in form  # none ticked at first
    created = manager.post("/admin/api-tokens/", {"name": "Front office HIS",
                                                  "scopes": ["milestones:write", "patients:read"]})
    assert created.status_code == 201
    page = created.get_data(as_text=True)
    raw = next(word for word in page.replace("<", " ").replace(">", " ").split() if word.startswith("clk_")
               and len(word) > 40)
    assert "shown only this once" in page
    listing = manager.get("/admin/api-tokens/").get_data(as_text=True)
    assert raw not in listing and raw[:12] in listing and "never" in listing
    assert ">patients:read</span> <span class=\"code\" title=\"Report referred" in listing  # in the scopes' order
    assert db.session.scalar(select(ApiToken.scopes)) == ["patients:read", "milestones:write"]

    assert Api(app, raw).get("/api/v1/patients?phone=13800000000").status_code == 200
    assert "never" not in manager.get("/admin/api-tokens/").get_data(as_text=True)

    stored = db.session.scalar(select(ApiToken))
    assert stored.created_by_id == manager_user.id
    revoked = manager.post(f"/admin/api-tokens/{stored.id}/revoke")
    assert revoked.status_code == 303
    assert Api(app, raw).get("/api/v1/patients?phone=13800000000").status_code == 401
    assert "revoked" in manager.get("/admin/api-tokens/").get_data(as_text=True)
    events = db.session.execute(select(AuditEvent.action, AuditEvent.staff_id).where(
        AuditEvent.action.like("api_token.%")).order_by(AuditEvent.id)).all()
    assert [tuple(event) for event in events] == [("api_token.created", manager_user.id),
                                                  ("api_token.revoked", manager_user.id)]
    created_event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "api_token.created"))
    assert created_event.details["scopes"] == ["patients:read", "milestones:write"]
    assert raw not in json.dumps([e.details for e in db.session.scalars(select(AuditEvent))])


def test_a_token_needs_a_name(manager):
    response = manager.post("/admin/api-tokens/", {"name": "   ", "scopes": ["patients:read"]})
    assert response.status_code == 422 and "Enter the name" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


@pytest.mark.parametrize("scopes, message", [
    ([], "Choose at least one thing the token may do."),
    (["patients:read", "patients:delete"], "Unknown scope: patients:delete."),
])
def test_a_token_needs_known_scopes_and_the_form_keeps_what_was_typed(manager, scopes, message):
    response = manager.post("/admin/api-tokens/", {"name": "Lab system", "scopes": scopes})
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and message in page
    assert 'value="Lab system"' in page
    assert ('value="patients:read" checked' in page) == ("patients:read" in scopes)
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action.like("api_token.%"))) == 0


def test_create_api_token_takes_its_scopes_and_prints_the_token_as_its_last_line(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-api-token", "Lab system", "--scope", "milestones:write",
                                 "--scope", "patients:read"])
    assert result.exit_code == 0, result.output
    assert "with the scopes patients:read, milestones:write" in result.output
    raw = result.output.strip().splitlines()[-1]
    assert raw.startswith("clk_") and " " not in raw
    assert Api(app, raw).get("/api/v1/patients?phone=13800000000").status_code == 200
    assert error_of(Api(app, raw).get("/api/v1/vouchers/ABCD"))[:2] == (403, "insufficient_scope")
    stored = db.session.scalar(select(ApiToken))
    assert (stored.name, stored.created_by_id, stored.scopes) == ("Lab system", None,
                                                                  ["patients:read", "milestones:write"])
    refused = runner.invoke(args=["create-api-token", " ", "--scope", "patients:read"])
    assert refused.exit_code != 0 and "Enter the name" in refused.output
    for args, said in ((["Lab"], "Missing option '--scope'"), (["Lab", "--scope", "everything"], "everything")):
        refused = runner.invoke(args=["create-api-token", *args])
        assert refused.exit_code != 0 and said in refused.output, refused.output
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 1


def test_actions_through_the_api_are_audited_with_the_token_name_and_its_creator(api, manager_user):
    patient = api.post("/api/v1/patients", {"name": "Wang Li"}).get_json()
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "patient.enrolled"))
    assert (event.patient_id, event.staff_id, event.details["api_token"]) == (
        patient["id"], manager_user.id, "Hospital HIS")


class ScopeWorld:
    """What the operations act on, each made only when a request needs it."""

    def __init__(self, actor: Actor, referrer):
        self.actor, self.referrer = actor, referrer

    @cached_property
    def redemption(self):
        return redemption.redeem_code(self.referrer.personal_code, friend(), self.actor)

    @cached_property
    def printed_card(self) -> Card:
        return printed_cards(self.actor, 1)[0]

    @cached_property
    def queued_batch(self) -> CardBatch:
        return cards.create_batch(1, "classic", False, self.actor)


# For each operation: a request that succeeds with the right scope, and the status it then answers.
SCOPED_REQUESTS = {
    "api.find_patients": lambda w: ("GET", "/api/v1/patients?phone=13811112222", None, 200),
    "api.get_patient": lambda w: ("GET", f"/api/v1/patients/{w.referrer.id}", None, 200),
    "api.create_patient": lambda w: ("POST", "/api/v1/patients", {"name": "Zhao Min"}, 201),
    "api.correct_patient": lambda w: ("PATCH", f"/api/v1/patients/{w.referrer.id}", {"name": "Wang Lili"}, 200,
                                      {"If-Match": "*"}),
    "api.rotate_progress_link": lambda w: ("POST", f"/api/v1/patients/{w.referrer.id}/progress-link", None, 200),
    "api.record_visit": lambda w: ("POST", f"/api/v1/patients/{w.redemption.friend.id}/visit", None, 200),
    "api.record_payment": lambda w: ("POST", f"/api/v1/patients/{w.redemption.friend.id}/payment", {"amount": 100},
                                     200),
    "api.validate_code": lambda w: ("POST", "/api/v1/codes/validate", {"code": w.referrer.personal_code}, 200),
    "api.redeem": lambda w: ("POST", "/api/v1/redemptions", {"code": w.referrer.personal_code,
                                                             "new_patient": FRIEND}, 201),
    "api.get_voucher": lambda w: ("GET", f"/api/v1/vouchers/{w.redemption.friend_voucher.code}", None, 200),
    "api.spend_voucher": lambda w: ("POST", f"/api/v1/vouchers/{w.redemption.friend_voucher.code}/spend", None, 200),
    "api.void_voucher": lambda w: ("POST", f"/api/v1/vouchers/{w.redemption.friend_voucher.code}/void",
                                   {"reason": "Issued by mistake"}, 200),
    "api.activate_card": lambda w: ("POST", f"/api/v1/cards/{w.printed_card.serial}/activate",
                                    {"patient_id": w.referrer.id}, 200),
    "api.create_batch": lambda w: ("POST", "/api/v1/card-batches", {"size": 1}, 202),
    "api.get_batch": lambda w: ("GET", f"/api/v1/card-batches/{w.queued_batch.id}", None, 200),
    "api.batch_pdf": lambda w: ("GET", f"/api/v1/card-batches/{w.printed_card.batch_id}/cards.pdf", None, 200),
}


def test_every_api_route_needs_known_scopes_and_every_scope_is_used(app):
    """Adding a route to the API without deciding its scopes fails here (and the route is refused to every token)."""
    routes = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")}
    assert routes - set(ENDPOINT_SCOPES) == {"api.openapi", "api.docs"}  # the description of the API is open
    assert set(ENDPOINT_SCOPES) <= routes
    for endpoint, needed in ENDPOINT_SCOPES.items():
        assert isinstance(needed, tuple) and needed and len(set(needed)) == len(needed), endpoint
    assert {scope for needed in ENDPOINT_SCOPES.values() for scope in needed} == set(api_tokens.SCOPES)
    assert set(SCOPED_REQUESTS) == set(ENDPOINT_SCOPES)


def test_operations_that_answer_what_another_scope_guards_need_that_scope_too():
    """A write-only token walking patient ids must not read their records (PATCH answers the record) nor, through a
    new progress link, their vouchers."""
    assert ENDPOINT_SCOPES["api.correct_patient"] == ("patients:write", "patients:read")
    assert ENDPOINT_SCOPES["api.rotate_progress_link"] == ("patients:write", "patients:read", "vouchers:read")


def openapi_path(rule) -> str:
    """A Flask rule as the document writes its path: ``<int(max=None):patient_id>`` is ``{patient_id}``."""
    return re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)


def test_the_document_names_each_operations_scopes_and_its_403(app):
    document = openapi_document()
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in ENDPOINT_SCOPES:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][openapi_path(rule)][method.lower()]
            needed = ENDPOINT_SCOPES[rule.endpoint]
            assert operation["security"] == [{"bearer": list(needed)}], rule.endpoint
            if len(needed) == 1:
                assert f"Scope: `{needed[0]}`." in operation["description"]
            else:
                assert f"Scopes: {', '.join(f'`{scope}`' for scope in needed)} (all of them)." in (
                    operation["description"])
                assert f"`{method} {openapi_path(rule)}` needs {' + '.join(f'`{s}`' for s in needed)}" in (
                    document["info"]["description"])
            forbidden = operation["responses"]["403"]
            assert "insufficient_scope" in json.dumps(forbidden["content"])
            assert "WWW-Authenticate" in forbidden["headers"]
    for scope in api_tokens.SCOPES:
        assert f"`{scope}`: " in document["info"]["description"]


def assert_refused_for_scope(response, needed: tuple[str, ...], missing: set[str]):
    """403 insufficient_scope, its message naming what is missing, its challenge every scope needed (RFC 6750)."""
    assert error_of(response) == (403, "insufficient_scope", None)
    message = response.get_json()["error"]["message"]
    assert all(scope in message for scope in missing), message
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="clinic-api", error="insufficient_scope", scope="{" ".join(needed)}"')


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_SCOPES))
def test_a_token_does_what_its_scopes_allow_and_nothing_else(app, manager_user, actor, referrer, monkeypatch,
                                                             endpoint):
    """Every operation against tokens of each single scope and, for an operation that needs several, against tokens
    lacking just one of them: all are refused with 403 insufficient_scope, change nothing and write nothing in the
    audit log; a token with exactly the scopes needed succeeds."""
    monkeypatch.setattr(jobs, "submit", lambda *args: None)  # a new batch stays queued: no PDF rendered
    method, path, body, success, *headers = SCOPED_REQUESTS[endpoint](ScopeWorld(actor, referrer))
    needed = ENDPOINT_SCOPES[endpoint]

    def client(scopes) -> Api:
        return Api(app, api_tokens.create_token(" ".join(scopes), scopes, Actor(staff_id=manager_user.id))[1])

    refused_scopes = [[scope] for scope in api_tokens.SCOPES if [scope] != list(needed)]
    if len(needed) > 1:
        refused_scopes += [[scope for scope in needed if scope != left_out] for left_out in needed]
    clients = [(scopes, client(scopes)) for scopes in refused_scopes]
    allowed_client = client(list(needed))
    before, audited = counts(), db.session.scalar(select(func.count()).select_from(AuditEvent))
    for scopes, refused_client in clients:
        refused = refused_client.request(method, path, body, *headers)
        assert_refused_for_scope(refused, needed, set(needed) - set(scopes))
        # Refused before its input is read: a broken body or a stray query parameter changes nothing to the answer.
        assert error_of(refused_client.request(method, path + ("&" if "?" in path else "?") + "stray=1",
                                               "not an object"))[:2] == (403, "insufficient_scope")
    assert counts() == before
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audited
    allowed = allowed_client.request(method, path, body, *headers)
    assert allowed.status_code == success, allowed.get_data(as_text=True)


def test_a_write_only_token_can_neither_correct_a_patient_nor_rotate_their_link_nor_read_them(app, manager_user,
                                                                                              referrer):
    """The leak the review found: with patients:write alone, PATCH (If-Match: *) and a new progress link answered
    any patient's full record, and the link opened a page with their voucher codes."""
    write_only = Api(app, api_tokens.create_token("Enrolment", ["patients:write"], Actor(staff_id=manager_user.id))[1])
    link_before = referrer.progress_link_issued_at
    patched = write_only.patch(f"/api/v1/patients/{referrer.id}", {"name": "Wang Lili"}, headers={"If-Match": "*"})
    assert_refused_for_scope(patched, ("patients:write", "patients:read"), {"patients:read"})
    rotated = write_only.post(f"/api/v1/patients/{referrer.id}/progress-link")
    assert_refused_for_scope(rotated, ("patients:write", "patients:read", "vouchers:read"),
                             {"patients:read", "vouchers:read"})
    for response in (patched, rotated):
        assert referrer.phone not in response.get_data(as_text=True)
    db.session.refresh(referrer)
    assert referrer.full_name != "Wang Lili" and referrer.progress_link_issued_at == link_before
    assert write_only.post("/api/v1/patients", {"name": "Zhao Min"}).status_code == 201  # enrolling still works


def test_a_route_missing_from_the_scope_table_is_refused_to_every_token(app, api, token, monkeypatch):
    monkeypatch.delitem(ENDPOINT_SCOPES, "api.find_patients")
    # Straight through the test client: "forbidden" is no answer of the documented API (tests/api_error_coverage.py).
    refused = app.test_client().get("/api/v1/patients?phone=13811112222", headers={"Authorization": f"Bearer {token}"})
    assert error_of(refused)[:2] == (403, "forbidden")
    assert api.post("/api/v1/patients", {"name": "Zhao Min"}).status_code == 201


# --- the document -------------------------------------------------------------------------------------------------


def test_the_document_and_the_reference_page_are_open_and_list_every_operation(app):
    anonymous = Api(app, None)
    document = anonymous.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    page = anonymous.get("/api/v1/docs")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for path, methods in document["paths"].items():
        for method in methods:
            assert f"{method.upper()} {path}" in text
    for code in ERROR_CODES:
        assert f'id="error-{code}"' in text
    assert "<script>" not in text and " style=" not in text


def test_every_api_route_is_in_the_document(app):
    documented = {(method.upper(), path) for path, methods in openapi_document()["paths"].items() for method in methods}
    routes = {(method, openapi_path(rule))
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              and rule.endpoint not in ("api.openapi", "api.docs")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented


# --- patients -----------------------------------------------------------------------------------------------------


def test_creating_a_patient_answers_the_personal_code_and_both_links_once(app, api, browser):
    response = api.post("/api/v1/patients", {"name": "Wang Li", "display_name": "Wang L.", "phone": "138-1111-2222",
                                              "external_id": "MRN-1", "name_on_posters": True})
    assert response.status_code == 201
    patient = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/patients/{patient['id']}")
    assert (patient["name"], patient["phone"], patient["external_id"]) == ("Wang Li", "13811112222", "MRN-1")
    assert codes.has_valid_check(patient["personal_code"])
    assert patient["invite_url"] == f"https://clinic.test/r/{patient['personal_code']}"
    assert patient["progress_url"].startswith("https://clinic.test/p/")
    assert patient["enrolled_at"].endswith("Z")
    assert browser.get(patient["progress_url"].removeprefix("https://clinic.test")).status_code == 200

    fetched = api.get(f"/api/v1/patients/{patient['id']}").get_json()
    assert "progress_url" not in fetched
    assert fetched == {key: value for key, value in patient.items() if key != "progress_url"}


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 7}, "name"),
    ({"name": "Wang\x00Li"}, "name"),
    ({"name": "Wang Li", "phone": "12"}, "phone"),
    ({"name": "Wang Li", "phone": "１３８１１１１２２２２"}, "phone"),
    ({"name": "Wang Li", "external_id": "x" * 65}, "external_id"),
    ({"name": "Wang Li", "name_on_posters": "yes"}, "name_on_posters"),
    ({"name": "Wang Li", "diagnosis": "flu"}, "diagnosis"),
    (["Wang Li"], None),
])
def test_a_bad_patient_is_refused_with_the_field_and_nothing_changes(api, body, field):
    before = counts()
    assert error_of(api.post("/api/v1/patients", body)) == (422, "validation_error", field)
    assert counts() == before


def test_a_body_that_is_not_json_is_refused(api):
    assert error_of(api.post("/api/v1/patients", data="name=Wang", content_type="application/x-www-form-urlencoded")
                    ) == (415, "unsupported_media_type", None)
    assert error_of(api.post("/api/v1/patients", data="{name", content_type="application/json")
                    ) == (400, "malformed_json", None)
    assert error_of(api.post("/api/v1/patients", data="x" * 2_000_000, content_type="application/json")
                    )[:2] == (413, "payload_too_large")


def test_a_chunked_body_is_read_whole_and_one_over_the_limit_is_refused_as_too_large(api):
    """Sent in chunks (no Content-Length), as an HIS may: werkzeug used to stop reading at the size limit without a
    word, and the cut-off JSON answered malformed_json (clinic/web/chunked.py)."""
    def chunked(body: bytes):
        return api.post("/api/v1/patients", input_stream=io.BytesIO(body), content_type="application/json",
                        headers={"Transfer-Encoding": "chunked"})

    before = counts()
    too_large = json.dumps({"name": "x" * 3_000_000, "phone": "13800000000"}).encode()
    assert error_of(chunked(too_large))[:2] == (413, "payload_too_large")
    assert counts() == before
    created = chunked(json.dumps({"name": "Chunked Wang", "phone": "13800001111"}).encode())
    assert created.status_code == 201, created.get_json()


def test_a_second_patient_with_the_same_phone_or_record_number_is_refused(api):
    api.post("/api/v1/patients", {"name": "Wang Li", "phone": "13811112222", "external_id": "MRN-1"})
    assert error_of(api.post("/api/v1/patients", {"name": "Other", "phone": "138 1111 2222"})
                    ) == (409, "existing_patient", "phone")
    assert error_of(api.post("/api/v1/patients", {"name": "Other", "external_id": "MRN-1"})
                    ) == (409, "existing_patient", "external_id")


def test_finding_a_patient_by_record_number_or_phone(api):
    created = api.post("/api/v1/patients", {"name": "Wang Li", "phone": "13811112222", "external_id": "MRN-1"}
                       ).get_json()
    by_record = api.get("/api/v1/patients?external_id=MRN-1").get_json()["patients"]
    by_phone = api.get("/api/v1/patients", query_string={"phone": "138 1111-2222"}).get_json()["patients"]
    assert [p["id"] for p in by_record] == [p["id"] for p in by_phone] == [created["id"]]
    assert "progress_url" not in by_record[0]
    assert api.get("/api/v1/patients?external_id=MRN-2").get_json() == {"patients": []}
    for query, field in [("", "external_id"), ("?external_id=MRN-1&phone=13811112222", "external_id"),
                         ("?phone=abc", "phone"), ("?external_id=%00", "external_id"),
                         ("?externalId=MRN-1", "externalId")]:
        assert error_of(api.get(f"/api/v1/patients{query}")) == (422, "validation_error", field), query


def test_an_unknown_patient_is_404(api):
    assert error_of(api.get("/api/v1/patients/999")) == (404, "not_found", None)
    assert error_of(api.get(f"/api/v1/patients/{10**30}")) == (404, "not_found", None)
    assert error_of(api.post("/api/v1/patients/999/progress-link")) == (404, "not_found", None)


def test_a_new_progress_link_replaces_the_old_one(api, browser):
    created = api.post("/api/v1/patients", {"name": "Wang Li"}).get_json()
    response = api.post(f"/api/v1/patients/{created['id']}/progress-link")
    assert response.status_code == 200
    rotated = response.get_json()
    assert rotated["progress_url"] != created["progress_url"]
    assert browser.get(rotated["progress_url"].removeprefix("https://clinic.test")).status_code == 200
    assert browser.get(created["progress_url"].removeprefix("https://clinic.test")).status_code == 404


def test_an_erased_patient_shows_empty_and_their_code_and_card_are_refused(api, referrer, actor):
    """Erasing is a manager's action on the patient page (tests/test_erasure.py); the HIS sees its effect."""
    card = printed_cards(actor, 1)[0]
    erasure.erase_patient(referrer.id, "patient_request", actor)
    body = api.get(f"/api/v1/patients/{referrer.id}").get_json()
    assert (body["name"], body["display_name"], body["phone"], body["external_id"]) == ("", "", None, None)
    assert body["erased_at"].endswith("Z")
    assert (body["personal_code"], body["personal_code_display"], body["invite_url"]) == (None, None, None)
    assert error_of(api.post("/api/v1/codes/validate", {"code": referrer.personal_code})) == (
        409, "code_withdrawn", "code")
    assert error_of(redeem(api, referrer.personal_code))[:2] == (409, "code_withdrawn")
    assert error_of(api.post(f"/api/v1/patients/{referrer.id}/progress-link")) == (409, "patient_erased", None)
    assert error_of(api.post(f"/api/v1/cards/{card.serial}/activate", {"patient_id": referrer.id}))[:2] == (
        409, "patient_erased")


def test_an_his_corrects_a_patient_with_the_etag_it_read(api, referrer, make_patient):
    """PATCH changes the fields sent; If-Match guards against overwriting a correction made meanwhile."""
    read = api.get(f"/api/v1/patients/{referrer.id}")
    etag = read.headers["ETag"]
    corrected = api.patch(f"/api/v1/patients/{referrer.id}", {"phone": "139 0000 1111"}, headers={"If-Match": etag})
    assert corrected.status_code == 200, corrected.get_json()
    body = corrected.get_json()
    assert (body["name"], body["phone"], body["external_id"]) == ("Wang Li", "13900001111", "MRN-1")
    assert corrected.headers["ETag"] != etag
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "patient.details_corrected"))
    assert event.details["fields"] == ["phone"] and "13900001111" not in str(event.details)

    make_patient(full_name="Zhao Min", phone="13822223333")
    before = counts()
    stale = api.patch(f"/api/v1/patients/{referrer.id}", {"name": "Wang Lili"}, headers={"If-Match": etag})
    assert error_of(stale)[:2] == (412, "changed_meanwhile")
    assert error_of(api.patch(f"/api/v1/patients/{referrer.id}", {"name": "Wang Lili"}))[:2] == (
        428, "precondition_required")
    taken = api.patch(f"/api/v1/patients/{referrer.id}", {"phone": "13822223333"}, headers={"If-Match": "*"})
    assert error_of(taken)[:2] == (409, "existing_patient")
    for wrong, field in (({"name": None}, "name"), ({"name": ""}, "name"), ({"phone": "12ab"}, "phone"),
                         ({"age": 40}, "age"), ({}, None), ({"name": 7}, "name")):
        answer = api.patch(f"/api/v1/patients/{referrer.id}", wrong, headers={"If-Match": "*"})
        assert error_of(answer)[:2] == (422, "validation_error") and error_of(answer)[2] == field, wrong
    assert counts() == before and db.session.get(Patient, referrer.id).full_name == "Wang Li"

    # "*" corrects whatever is there now; sending the same values again changes nothing.
    for _ in range(2):
        assert api.patch(f"/api/v1/patients/{referrer.id}", {"name": "Wang Lili", "external_id": None},
                         headers={"If-Match": "*"}).get_json()["name"] == "Wang Lili"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "patient.details_corrected")) == 2


def test_an_erased_or_unknown_patient_cannot_be_corrected(api, referrer, actor):
    erasure.erase_patient(referrer.id, "patient_request", actor)
    assert error_of(api.patch(f"/api/v1/patients/{referrer.id}", {"name": "Back"}, headers={"If-Match": "*"}))[:2] == (
        409, "patient_erased")
    assert error_of(api.patch("/api/v1/patients/999999", {"name": "Nobody"}, headers={"If-Match": "*"}))[:2] == (
        404, "not_found")


# --- codes ----------------------------------------------------------------------------------------------------------


def test_validating_a_code_says_what_the_desk_would_and_changes_nothing(api, referrer, actor):
    before = counts()
    answer = api.post("/api/v1/codes/validate", {"code": referrer.personal_code.lower()[:4] + "-"
                                                 + referrer.personal_code[4:]}).get_json()
    assert (answer["kind"], answer["code"], answer["voucher"]) == ("personal", referrer.personal_code, None)
    offer = answer["referral"]
    assert offer["referrer"] == {"id": referrer.id, "name": "Wang Li"}
    assert offer["referrer_gets"] == {"kind": "money", "amount": 20000, "currency": "CNY", "label": "",
                                      "stage": "redemption"}
    assert offer["friend_gets"]["label"] == "1 bed-day waived"
    scanned = api.post("/api/v1/codes/validate", {"code": f"https://clinic.test/r/{referrer.personal_code}"})
    assert scanned.get_json()["code"] == referrer.personal_code
    assert counts() == before

    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    answer = api.post("/api/v1/codes/validate", {"code": voucher.code}).get_json()
    assert (answer["kind"], answer["referral"], answer["voucher"]["status"]) == ("voucher", None, "active")



def test_validating_a_voucher_code_shows_its_details_only_to_a_token_that_may_read_vouchers(app, manager_user, referrer,
                                                                                           actor):
    """Redeeming is not reading vouchers: a redemptions:write token learns that a code is a voucher's, not its value,
    state or whose it is (what GET /vouchers/{code} shows to vouchers:read)."""
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher

    def validate(scopes):
        token = api_tokens.create_token(" ".join(scopes), scopes, Actor(staff_id=manager_user.id))[1]
        return Api(app, token).post("/api/v1/codes/validate", {"code": voucher.code})

    desk_only = validate(["redemptions:write"])
    assert desk_only.status_code == 200
    assert desk_only.get_json() == {"code": voucher.code, "code_display": codes.format_code(voucher.code),
                                    "kind": "voucher", "referral": None, "voucher": None}
    reader = validate(["redemptions:write", "vouchers:read"]).get_json()
    assert (reader["kind"], reader["voucher"]["id"], reader["voucher"]["status"]) == ("voucher", voucher.id, "active")


def test_validating_an_activated_card(api, referrer, actor):
    card = printed_cards(actor)[0]
    cards.activate_card(card.serial, referrer.id, actor)
    answer = api.post("/api/v1/codes/validate", {"code": card.code}).get_json()
    assert (answer["kind"], answer["referral"]["card_serial"], answer["referral"]["referrer"]["id"]) == (
        "card", card.serial, referrer.id)


def wrong_check(code: str) -> str:
    return code[:-1] + next(s for s in codes.ALPHABET if s != code[-1])


@pytest.mark.parametrize("raw, expected", [
    (lambda r: codes.generate_personal_code(), (404, "unknown_code")),
    (lambda r: wrong_check(r.personal_code), (422, "mistyped_code")),
    (lambda r: "<b>", (422, "not_a_code")),
    (lambda r: r.personal_code[:5], (422, "wrong_length")),
    (lambda r: "  ", (422, "empty_code")),
])
def test_validating_a_wrong_code(api, referrer, raw, expected):
    assert error_of(api.post("/api/v1/codes/validate", {"code": raw(referrer)}))[:2] == expected


def test_validating_cards_that_cannot_be_redeemed(api, referrer, actor, manager_user):
    printed, lost, used = printed_cards(actor)
    cards.void_card(lost.serial, "Lost on the ward", Actor(staff_id=manager_user.id))
    cards.activate_card(used.serial, referrer.id, actor)
    redemption.redeem_code(used.code, friend(), actor)
    for card, code in [(printed, "card_not_activated"), (lost, "card_void"), (used, "already_redeemed")]:
        assert error_of(api.post("/api/v1/codes/validate", {"code": card.code})) == (409, code, "code")


def test_validating_when_no_campaign_runs(api, referrer):
    set_campaign(ends_at=utcnow() - timedelta(minutes=1))
    assert error_of(api.post("/api/v1/codes/validate", {"code": referrer.personal_code}))[:2] == (409, "campaign_ended")


# --- redemptions ----------------------------------------------------------------------------------------------------


def test_a_redemption_answers_201_with_the_friend_the_referral_and_the_vouchers(api, referrer):
    response = redeem(api, referrer.personal_code)
    assert response.status_code == 201
    body = response.get_json()
    friend_id = body["friend"]["id"]
    assert response.headers["Location"].endswith(f"/api/v1/patients/{friend_id}")
    assert (body["friend"]["name"], body["friend"]["phone"], body["friend"]["referred_by_id"]) == (
        "Chen Jie", "13933334444", referrer.id)
    assert (body["referral"]["referrer_id"], body["referral"]["friend_id"]) == (referrer.id, friend_id)
    [friend_voucher], [referrer_voucher] = body["vouchers"], body["referrer_vouchers"]
    assert (friend_voucher["beneficiary"], referrer_voucher["beneficiary"]) == ("friend", "referrer")
    assert referrer_voucher["value"] == {"kind": "money", "amount": 20000, "currency": "CNY", "label": ""}
    assert friend_voucher["value"] == {"kind": "service", "amount": 0, "currency": "CNY", "label": "1 bed-day waived"}
    stored = {v.id: v for v in db.session.scalars(select(Voucher))}
    assert friend_voucher["code"] == stored[friend_voucher["id"]].code and codes.has_valid_check(friend_voucher["code"])
    for voucher in body["vouchers"] + body["referrer_vouchers"]:
        assert voucher["status"] == "active"
        assert voucher["expires_at"] == stored[voucher["id"]].expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        issued_on = clinic_day_of(stored[voucher["id"]].issued_at)
        assert voucher["valid_until"] == (issued_on + timedelta(days=90)).isoformat()  # the day its pages print
    assert {r["status"] for r in body["rewards"]} == {"issued"}
    assert {r["voucher_id"] for r in body["rewards"]} == {friend_voucher["id"], referrer_voucher["id"]}
    assert_keeps_to_the_document(body, "Redemption")


def assert_keeps_to_the_document(body: dict, schema: str) -> None:
    """The answer against its schema in the OpenAPI document (schemathesis seldom guesses a code that redeems)."""
    import jsonschema_rs  # schemathesis's own validator

    document = openapi_document()
    jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{schema}",
                                        "components": document["components"]}).validate(body)


def referrer_codes(referrer) -> set[str]:
    return set(db.session.scalars(select(Voucher.code).where(Voucher.patient_id == referrer.id)))


def test_a_redemption_sends_the_friend_s_voucher_codes_and_never_the_referrer_s(api, referrer):
    """The referrer's vouchers are bearer money of another person: an integration redeeming for the friend in front
    of it gets what they are worth and their state, never their codes, anywhere in the answer (rewards included)."""
    response = redeem(api, referrer.personal_code)
    body = response.get_json()
    [owned] = referrer_codes(referrer)
    answer = response.get_data(as_text=True)
    assert owned not in answer and codes.format_code(owned) not in answer
    assert [set(v) & {"code", "code_display", "url"} for v in body["referrer_vouchers"]] == [set()]
    referrer_reward = next(r for r in body["rewards"] if r["beneficiary"] == "referrer")
    assert (referrer_reward["voucher_id"], referrer_reward["voucher_code"]) == (body["referrer_vouchers"][0]["id"],
                                                                                None)
    friend_reward = next(r for r in body["rewards"] if r["beneficiary"] == "friend")
    assert friend_reward["voucher_code"] == body["vouchers"][0]["code"]


@pytest.mark.parametrize("milestone", ["visit", "payment"])
def test_a_milestone_sends_the_friend_s_voucher_codes_and_never_the_referrer_s(api, referrer, milestone):
    set_campaign(referrer_reward_stage=milestone, friend_reward_stage=milestone)
    friend_id = redeem(api, referrer.personal_code).get_json()["friend"]["id"]
    response = api.post(f"/api/v1/patients/{friend_id}/{milestone}")
    body = response.get_json()
    [owned] = referrer_codes(referrer)
    assert owned not in response.get_data(as_text=True)
    assert [v["beneficiary"] for v in body["vouchers"]] == ["friend"] and codes.has_valid_check(
        body["vouchers"][0]["code"])
    assert [(v["beneficiary"], v["value"]["amount"]) for v in body["referrer_vouchers"]] == [("referrer", 20000)]
    assert {r["beneficiary"]: r["voucher_code"] for r in body["rewards"]} == {
        "friend": body["vouchers"][0]["code"], "referrer": None}
    assert_keeps_to_the_document(body, "Milestone")


def test_a_referrer_over_the_yearly_cap_gets_a_reward_held_for_review(api, referrer, actor):
    set_campaign(cap_referrals_per_year=0)
    body = redeem(api, referrer.personal_code).get_json()
    statuses = {r["beneficiary"]: (r["status"], r["voucher_code"]) for r in body["rewards"]}
    assert statuses["referrer"] == ("review", None)
    assert [v["beneficiary"] for v in body["vouchers"]] == ["friend"]


REDEMPTION_REFUSALS = [
    # (name, code for the referrer, the new patient, expected status, code, field)
    ("unknown", lambda r: codes.generate_personal_code(), FRIEND, 404, "unknown_code", "code"),
    ("mistyped", lambda r: wrong_check(r.personal_code), FRIEND, 422, "mistyped_code", "code"),
    ("not a code", lambda r: "' OR 1=1 --", FRIEND, 422, "not_a_code", "code"),
    ("wrong length", lambda r: r.personal_code + "X", FRIEND, 422, "wrong_length", "code"),
    ("empty", lambda r: "", FRIEND, 422, "empty_code", "code"),
    ("self by phone", lambda r: r.personal_code, {"name": "Wang", "phone": "13811112222"}, 422, "self_referral",
     "new_patient.phone"),
    ("self by record", lambda r: r.personal_code, {"name": "Wang", "external_id": "MRN-1"}, 422, "self_referral",
     "new_patient.external_id"),
    ("self by +86 phone", lambda r: r.personal_code, {"name": "Wang", "phone": "+86 138 1111 2222"}, 422,
     "self_referral", "new_patient.phone"),
    ("no phone or record", lambda r: r.personal_code, {"name": "Wang Li"}, 422, "contact_needed", "new_patient.phone"),
    ("existing", lambda r: r.personal_code, {"name": "Existing", "phone": "13800000099"}, 409, "existing_patient",
     "new_patient.phone"),
    ("no name", lambda r: r.personal_code, {"phone": "13933334444"}, 422, "validation_error", "new_patient.name"),
    ("bad phone", lambda r: r.personal_code, {"name": "Chen", "phone": "call me"}, 422, "validation_error",
     "new_patient.phone"),
    ("extra field", lambda r: r.personal_code, {**FRIEND, "department": "ENT"}, 422, "validation_error",
     "new_patient.department"),
    ("not an object", lambda r: r.personal_code, "Chen Jie", 422, "validation_error", "new_patient"),
]


@pytest.mark.parametrize("name, code_for, new_patient, status, code, field", REDEMPTION_REFUSALS,
                         ids=[case[0] for case in REDEMPTION_REFUSALS])
def test_a_refused_redemption_names_its_reason_and_changes_nothing(api, referrer, make_patient, name, code_for,
                                                                    new_patient, status, code, field):
    make_patient(full_name="Existing", phone="13800000099")
    before = counts()
    response = api.post("/api/v1/redemptions", {"code": code_for(referrer), "new_patient": new_patient})
    assert error_of(response) == (status, code, field)
    assert counts() == before


def test_redeeming_a_voucher_code_or_an_unusable_card(api, referrer, actor, manager_user):
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    assert error_of(redeem(api, voucher.code, {"name": "A", "phone": "13700000001"})
                    ) == (422, "not_a_referral_code", "code")
    printed, lost, used = printed_cards(actor)
    cards.void_card(lost.serial, "Lost on the ward", Actor(staff_id=manager_user.id))
    cards.activate_card(used.serial, referrer.id, actor)
    assert redeem(api, used.code, {"name": "B", "phone": "13700000002"}).status_code == 201
    for card, code in [(printed, "card_not_activated"), (lost, "card_void"), (used, "already_redeemed")]:
        assert error_of(redeem(api, card.code, {"name": "C", "phone": "13700000003"})) == (409, code, "code")


def test_redeeming_when_the_campaign_ended_or_the_quota_is_full(api, referrer):
    set_campaign(friend_monthly_quota=1)
    assert redeem(api, referrer.personal_code).status_code == 201
    assert error_of(redeem(api, referrer.personal_code, {"name": "B", "phone": "13700000002"})
                    ) == (409, "quota_full", "code")
    set_campaign(ends_at=utcnow() - timedelta(minutes=1))
    assert error_of(redeem(api, referrer.personal_code, {"name": "C", "phone": "13700000003"})
                    ) == (409, "campaign_ended", "code")


def test_a_replayed_redemption_answers_the_same_and_a_reused_key_is_refused(app, api, referrer, manager_user):
    first = redeem(api, referrer.personal_code, key="his-order-000123")
    before = counts()
    again = redeem(api, referrer.personal_code, key="his-order-000123")
    assert (again.status_code, again.get_json()) == (201, first.get_json())
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert counts() == before
    other = redeem(api, referrer.personal_code, {"name": "Other", "phone": "13700000002"}, key="his-order-000123")
    assert error_of(other) == (409, "key_reused", None)
    assert error_of(redeem(api, referrer.personal_code, key="short")) == (422, "validation_error", "Idempotency-Key")
    assert counts() == before
    # Keys belong to their token: another integration picking the same key does not see this answer.
    second = Api(app, api_tokens.create_token("Lab", api_tokens.SCOPES, Actor(staff_id=manager_user.id))[1])
    assert redeem(second, referrer.personal_code, {"name": "Other", "phone": "13700000002"},
                  key="his-order-000123").status_code == 201


def test_a_redemption_replayed_after_the_first_visit_lists_only_its_own_vouchers(api, referrer):
    set_campaign(friend_reward_stage="visit")
    first = redeem(api, referrer.personal_code, key="his-order-000124").get_json()
    visit = api.post(f"/api/v1/patients/{first['friend']['id']}/visit").get_json()
    again = redeem(api, referrer.personal_code, key="his-order-000124").get_json()
    assert (first["vouchers"], [v["beneficiary"] for v in first["referrer_vouchers"]]) == ([], ["referrer"])
    assert (again["vouchers"], again["referrer_vouchers"]) == ([], first["referrer_vouchers"])
    friend_reward = next(r for r in again["rewards"] if r["beneficiary"] == "friend")
    assert (friend_reward["status"], friend_reward["voucher_code"]) == ("issued", visit["vouchers"][0]["code"])


def test_ten_replays_of_one_redemption_at_once_pay_once_and_answer_the_same_body(app, token, referrer):
    code, before = referrer.personal_code, counts()
    barrier = threading.Barrier(10)
    answers = [None] * 10

    def send(index: int) -> None:
        api = Api(app, token)
        barrier.wait()
        response = redeem(api, code, key="one-redemption-key-0001")
        answers[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=send, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    db.session.rollback()

    assert {status for status, _ in answers} == {201}, answers
    assert all(body == answers[0][1] for _, body in answers)
    after = counts()
    assert (after["patients"], after["referrals"], after["vouchers"]) == (
        before["patients"] + 1, before["referrals"] + 1, before["vouchers"] + 2)
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "voucher.issued")) == 2


# --- milestones -----------------------------------------------------------------------------------------------------


def test_a_visit_pays_what_is_due_at_a_visit_once(api, referrer):
    set_campaign(friend_reward_stage="visit")
    friend_id = redeem(api, referrer.personal_code).get_json()["friend"]["id"]
    response = api.post(f"/api/v1/patients/{friend_id}/visit", headers={"Idempotency-Key": "visit-key-0001"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["recorded"] is True and body["referral"]["visited_at"]
    assert [(v["beneficiary"], v["value"]["label"]) for v in body["vouchers"]] == [("friend", "1 bed-day waived")]
    before = counts()
    replay = api.post(f"/api/v1/patients/{friend_id}/visit", headers={"Idempotency-Key": "visit-key-0001"})
    assert replay.get_json() == body
    again = api.post(f"/api/v1/patients/{friend_id}/visit").get_json()
    assert (again["recorded"], again["vouchers"]) == (False, [])
    assert counts() == before


def test_a_payment_records_its_amount_and_pays_what_is_due(api, referrer):
    set_campaign(referrer_reward_stage="payment")
    friend_id = redeem(api, referrer.personal_code).get_json()["friend"]["id"]
    body = api.post(f"/api/v1/patients/{friend_id}/payment", {"amount": 35000}).get_json()
    assert (body["recorded"], body["referral"]["paid_amount"]) == (True, 35000)
    assert body["referral"]["visited_at"] == body["referral"]["paid_at"]
    assert [(v["beneficiary"], v["value"]["amount"]) for v in body["referrer_vouchers"]] == [("referrer", 20000)]


@pytest.mark.parametrize("currency, limit", [("CNY", "CN¥21,474,836.47"), ("JPY", "¥2,147,483,647")])
def test_a_payment_amount_has_the_forms_limit_in_minor_units(api, referrer, currency, limit):
    """The API and the forms take the same amounts: up to what the amount columns hold, whatever the currency."""
    from clinic.services import clinic_settings
    from clinic.services.money import MAX_AMOUNT_MINOR, major_units_text, parse_money

    clinic_settings.update_clinic({"currency": currency}, Actor())
    assert parse_money(major_units_text(MAX_AMOUNT_MINOR, currency), currency) == MAX_AMOUNT_MINOR
    with pytest.raises(ValueError, match=f"The amount cannot be more than {limit}."):
        parse_money(major_units_text(MAX_AMOUNT_MINOR + 1, currency), currency)
    friend_id = redeem(api, referrer.personal_code).get_json()["friend"]["id"]
    refused = api.post(f"/api/v1/patients/{friend_id}/payment", {"amount": MAX_AMOUNT_MINOR + 1})
    assert error_of(refused) == (422, "validation_error", "amount")
    assert refused.get_json()["error"]["message"] == (
        f"amount must be a whole number of minor units from 0 to 2147483647 ({limit}).")
    body = api.post(f"/api/v1/patients/{friend_id}/payment", {"amount": MAX_AMOUNT_MINOR}).get_json()
    assert (body["recorded"], body["referral"]["paid_amount"]) == (True, MAX_AMOUNT_MINOR)


def test_milestone_refusals(api, referrer, actor, manager_user):
    from clinic.services import milestones

    referred = redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert error_of(api.post(f"/api/v1/patients/{referrer.id}/visit")) == (409, "not_referred", None)
    assert error_of(api.post("/api/v1/patients/999/visit")) == (404, "not_found", None)
    assert error_of(api.post("/api/v1/patients/999/payment")) == (404, "not_found", None)
    for body in ({"amount": -1}, {"amount": "100"}, {"amount": 1.5}, {"amount": True}, {"amount": 2**31},
                 {"paid": 100}):
        assert error_of(api.post(f"/api/v1/patients/{referred.friend.id}/payment", body))[:2] == (
            422, "validation_error"), body
    api.post(f"/api/v1/patients/{referred.friend.id}/visit", headers={"Idempotency-Key": "milestone-key-1"})
    assert error_of(api.post(f"/api/v1/patients/{referred.friend.id}/payment", {"amount": 5},
                             headers={"Idempotency-Key": "milestone-key-1"})) == (409, "key_reused", None)
    milestones.reverse_referral(referred.referral.id, "Refunded", Actor(staff_id=manager_user.id))
    assert error_of(api.post(f"/api/v1/patients/{referred.friend.id}/payment")) == (409, "reversed", None)


# --- vouchers -------------------------------------------------------------------------------------------------------


@pytest.fixture
def voucher(referrer, actor) -> Voucher:
    return redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher


def test_a_voucher_is_read_spent_once_and_replayed(api, voucher):
    display = codes.format_code(voucher.code).lower()
    got = api.get(f"/api/v1/vouchers/{display}").get_json()
    assert (got["code"], got["status"], got["value"]["amount"]) == (voucher.code, "active", 20000)
    spent = api.post(f"/api/v1/vouchers/{voucher.code}/spend", headers={"Idempotency-Key": "till-receipt-42"})
    assert spent.status_code == 200 and spent.get_json()["status"] == "spent" and spent.get_json()["spent_at"]
    replay = api.post(f"/api/v1/vouchers/{voucher.code}/spend", headers={"Idempotency-Key": "till-receipt-42"})
    assert (replay.status_code, replay.get_json(), replay.headers["Idempotent-Replayed"]) == (
        200, spent.get_json(), "true")
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/spend")) == (409, "already_spent", "code")
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/void", {"reason": "Too late"})
                    ) == (409, "already_spent", "code")


def test_a_spend_with_an_amount_is_refused_instead_of_spending_the_whole_voucher(api, voucher):
    """A voucher is spent whole: {"amount": 100} on a ¥200 voucher used to spend all of it without a word."""
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/spend", {"amount": 100})) == (
        422, "validation_error", "amount")
    assert api.get(f"/api/v1/vouchers/{voucher.code}").get_json()["status"] == "active"
    assert error_of(api.post(f"/api/v1/patients/{voucher.referral.friend_id}/visit", {"paid": True})) == (
        422, "validation_error", "paid")
    assert api.post(f"/api/v1/vouchers/{voucher.code}/spend", {}).get_json()["status"] == "spent"


def test_a_voucher_is_voided_with_a_reason_and_cannot_be_spent_after(api, voucher):
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/void", {"reason": "x"})
                    ) == (422, "validation_error", "reason")
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/void", {})) == (422, "validation_error", "reason")
    voided = api.post(f"/api/v1/vouchers/{voucher.code}/void", {"reason": "Issued by mistake"})
    assert (voided.status_code, voided.get_json()["status"], voided.get_json()["void_reason"]) == (
        200, "void", "Issued by mistake")
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/spend")) == (409, "voided", "code")


def test_an_expired_voucher_cannot_be_spent(api, voucher):
    with atomic():
        db.session.execute(update(Voucher).where(Voucher.id == voucher.id)
                           .values(expires_at=utcnow() - timedelta(days=1)))
    assert api.get(f"/api/v1/vouchers/{voucher.code}").get_json()["status"] == "expired"
    assert error_of(api.post(f"/api/v1/vouchers/{voucher.code}/spend")) == (409, "expired", "code")


@pytest.mark.parametrize("raw, expected", [
    (lambda v, r: codes.generate_bearer_code(), (404, "unknown_code")),
    (lambda v, r: wrong_check(v.code), (422, "mistyped_code")),
    (lambda v, r: v.code[:10], (422, "wrong_length")),
    (lambda v, r: "NOT.A;CODE", (422, "not_a_code")),
    (lambda v, r: " ", (422, "empty_code")),
    (lambda v, r: r.personal_code, (422, "not_a_voucher")),
])
def test_wrong_voucher_codes(api, voucher, referrer, raw, expected):
    code = raw(voucher, referrer)
    for method, path, body in [("GET", f"/api/v1/vouchers/{code}", None),
                               ("POST", f"/api/v1/vouchers/{code}/spend", None),
                               ("POST", f"/api/v1/vouchers/{code}/void", {"reason": "Wrong code"})]:
        assert error_of(api.request(method, path, body))[:2] == expected, (method, path)


# --- cards ----------------------------------------------------------------------------------------------------------


def test_activating_a_card_for_a_patient(api, referrer, actor, manager_user):
    printed, lost, used = printed_cards(actor)
    response = api.post(f"/api/v1/cards/{printed.serial.lower()}/activate", {"patient_id": referrer.id})
    assert response.status_code == 200
    assert response.get_json() == {"serial": printed.serial, "status": "activated", "batch_id": printed.batch_id,
                                   "patient_id": referrer.id, "activated_at": response.get_json()["activated_at"],
                                   "redeemed_at": None}
    assert printed.code not in response.get_data(as_text=True)
    cards.void_card(lost.serial, "Lost on the ward", Actor(staff_id=manager_user.id))
    cards.activate_card(used.serial, referrer.id, actor)
    redemption.redeem_code(used.code, friend(), actor)
    for serial, body, expected in [
        (printed.serial, {"patient_id": referrer.id}, (409, "already_activated", "serial")),
        (lost.serial, {"patient_id": referrer.id}, (409, "card_void", "code")),
        (used.serial, {"patient_id": referrer.id}, (409, "already_redeemed", "code")),
        ("B999-9999", {"patient_id": referrer.id}, (404, "unknown_card", "serial")),
        ("42", {"patient_id": referrer.id}, (422, "bad_serial", "serial")),
        (printed.serial, {"patient_id": 999}, (404, "not_found", "patient_id")),
        (printed.serial, {"patient_id": "1"}, (422, "validation_error", "patient_id")),
        (printed.serial, {}, (422, "validation_error", "patient_id")),
    ]:
        assert error_of(api.post(f"/api/v1/cards/{serial}/activate", body)) == expected, (serial, body)


def test_a_batch_is_started_polled_and_downloaded(app, api):
    started = api.post("/api/v1/card-batches", {"size": 3, "design": "bold"})
    assert started.status_code == 202
    location = started.headers["Location"]
    assert started.get_json()["status"] in ("queued", "running", "done")
    jobs.wait_for_all()
    polled = api.get(location).get_json()
    assert (polled["status"], polled["progress"], polled["design"]) == ("done", 3, "bold")
    pdf = api.get(polled["pdf_url"])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    assert db.session.scalar(select(func.count()).select_from(Card)) == 3


def test_batch_refusals(api, monkeypatch):
    monkeypatch.setattr(jobs, "submit", lambda *args: None)  # the batch stays queued
    queued = api.post("/api/v1/card-batches", {"size": 1}).get_json()
    assert error_of(api.get(f"/api/v1/card-batches/{queued['id']}/cards.pdf")) == (409, "not_ready", None)
    assert error_of(api.get("/api/v1/card-batches/999")) == (404, "not_found", None)
    assert error_of(api.get("/api/v1/card-batches/999/cards.pdf")) == (404, "not_found", None)
    for body, field in [({"size": 0}, "size"), ({"size": 10_001}, "size"), ({}, "size"),
                        ({"size": 5, "design": "fancy"}, "design"), ({"size": 5, "bleed": "no"}, "bleed")]:
        assert error_of(api.post("/api/v1/card-batches", body)) == (422, "validation_error", field), body
    set_campaign(covers="personal")
    assert error_of(api.post("/api/v1/card-batches", {"size": 5}))[:2] == (422, "no_campaign")


def test_a_host_header_that_is_no_host_name_answers_bad_host(api):
    assert error_of(api.get("/api/v1/vouchers/ABCD", headers={"Host": "a..b"})) == (400, "bad_host", None)


def test_a_batch_asked_for_while_the_job_queue_is_out_of_reach_answers_503_and_has_failed(app, api):
    app.config.update(REDIS_URL="redis://127.0.0.1:1/0")  # nobody listens on port 1
    try:
        assert error_of(api.post("/api/v1/card-batches", {"size": 3})) == (503, "not_queued", None)
    finally:
        app.config.update(REDIS_URL=None)
    batch = db.session.scalar(select(CardBatch))
    assert batch.status == "failed" and "ConnectionError" in batch.error
    assert db.session.scalar(select(func.count()).select_from(Card)) == 0
    assert db.session.scalar(select(func.count()).select_from(CardBatch)) == 1


# --- errors ---------------------------------------------------------------------------------------------------------


def test_unknown_paths_and_methods_under_the_api_answer_json(api):
    assert error_of(api.get("/api/v1/nothing-here")) == (404, "not_found", None)
    assert error_of(api.get("/api/v2/patients")) == (404, "not_found", None)
    wrong_method = api.request("DELETE", "/api/v1/patients/1")
    assert error_of(wrong_method) == (405, "method_not_allowed", None)
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"GET"}


def limited(app, **settings):
    config = {key: app.config[key] for key in ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "UPLOAD_FOLDER",
                                               "BATCH_FOLDER", "IMPORT_FOLDER", "PUBLIC_BASE_URL")}
    return create_app({**config, "TESTING": True, "RATELIMIT_ENABLED": True, "RATELIMIT_STRATEGY": "moving-window",
                       "RATELIMIT_STORAGE_URI": "memory://", **settings})


def test_requests_are_limited_per_token_with_a_json_429(app, token, manager_user):
    limited_app = limited(app, RATELIMIT_API="3/minute")
    api = Api(limited_app, token)
    statuses = [api.get("/api/v1/patients?phone=13800000000").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = api.get("/api/v1/patients?phone=13800000000")
    assert error_of(refused)[:2] == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    other = Api(limited_app, api_tokens.create_token("Lab", api_tokens.SCOPES, Actor(staff_id=manager_user.id))[1])
    assert other.get("/api/v1/patients?phone=13800000000").status_code == 200


def test_wrong_codes_are_limited_per_token_more_tightly(app, token, referrer):
    api = Api(limited(app, RATELIMIT_API_WRONG_CODES="3/minute"), token)
    for _ in range(5):  # a bad phone is a 422 too, but not a wrong code
        assert error_of(redeem(api, referrer.personal_code, {"name": "A", "phone": "1"}))[1] == "validation_error"
    wrong = [api.post("/api/v1/codes/validate", {"code": code}).status_code
             for code in (codes.generate_personal_code(), "X" * 8, codes.generate_personal_code(), "ABC")]
    assert wrong == [404, 422, 404, 429]
    assert error_of(api.get(f"/api/v1/vouchers/{codes.generate_bearer_code()}"))[:2] == (429, "rate_limited")


def test_the_document_lists_each_code_under_its_status():
    document = openapi_document()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                schema = response["content"].get("application/json", {}).get("schema", {})
                if "allOf" in schema:
                    for code in schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]:
                        assert ERROR_CODES[code][0] == int(status), (method, path, code)



@pytest.mark.parametrize("message, code", [("database is locked", "database_unavailable"),
                                           ("database or disk is full", "database_not_writable")])
def test_the_database_refusing_answers_503_with_its_code_and_retry_after(api, referrer, monkeypatch, message, code):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    def refused(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, sqlite3.OperationalError(message))

    monkeypatch.setattr("clinic.services.desk.identify_code", refused)
    response = api.post("/api/v1/codes/validate", {"code": referrer.personal_code})
    assert error_of(response) == (503, code, None) and int(response.headers["Retry-After"]) > 0
    assert "nothing was saved" in response.get_json()["error"]["message"]
