"""Every route, as every kind of visitor: the access table holds, and every answer carries the headers."""

from __future__ import annotations

import re

import pytest

from clinic.web.access import ACCESS, Access
from tests.conftest import Browser

# Values for URL variables: ids that do not exist are fine, access is decided before the view runs.
URL_VALUES = {"int": "999999", "path": "NOPE", "default": "nothing-here"}
KIND_VALUES = {"patients.poster": "pdf", "public.progress_poster": "pdf", "reports.export": "patients"}
VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def concrete_url(rule) -> str:
    def value(match: re.Match) -> str:
        converter, name = match.group(1) or "default", match.group(2)
        if name == "kind":
            return KIND_VALUES[rule.endpoint]
        return URL_VALUES.get(converter, URL_VALUES["default"])

    return VARIABLE.sub(value, rule.rule)


def every_request(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route and method; logging out last, as it ends the session."""
    requests = [(rule.endpoint, method, concrete_url(rule))
                for rule in app.url_map.iter_rules() for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(requests, key=lambda item: item[0] == "auth.logout")


def send(browser: Browser, method: str, url: str):
    if method == "GET":
        return browser.get(url)
    if method == "PATCH":  # only the API takes it: no form, no CSRF token
        return browser._isolated(browser.client.patch, url, json={})
    return browser.post(url, {})


def test_every_route_is_in_the_access_table_and_nothing_else_is(app):
    assert set(ACCESS) == {rule.endpoint for rule in app.url_map.iter_rules()}


@pytest.mark.parametrize("visitor", ["anonymous", "front_desk", "manager"])
def test_every_route_answers_each_visitor_as_the_table_says(app, desk_user, manager_user, visitor):
    browser = Browser(app.test_client())
    if visitor != "anonymous":
        browser.login(desk_user.email if visitor == "front_desk" else manager_user.email)
    wrong = []
    for endpoint, method, url in every_request(app):
        response = send(browser, method, url)
        needed = ACCESS[endpoint]
        sent_to_login = response.status_code == 302 and "/login" in response.headers.get("Location", "")
        if needed is Access.API_TOKEN:  # a bearer token or nothing: a staff login does not open the API
            allowed_answer = response.status_code == 401
        elif visitor == "anonymous" and needed is not Access.ANYONE:
            allowed_answer = sent_to_login
        elif visitor == "front_desk" and needed is Access.MANAGER:
            allowed_answer = response.status_code == 403
        elif endpoint == "auth.logout":  # logging out does send you to the login page (303: see other, by GET)
            allowed_answer = response.status_code == 303 and "/login" in response.headers.get("Location", "") \
                and browser.get("/desk/").status_code == 302
        else:  # allowed in: any answer but a refusal (a made-up id may well be a 404)
            allowed_answer = response.status_code not in (401, 403) and not sent_to_login
        if not allowed_answer or response.status_code >= 500:
            wrong.append((method, url, needed.value, response.status_code))
    assert not wrong, f"{visitor}: {wrong}"


def test_a_route_missing_from_the_table_is_refused_to_everyone(app, manager_user):
    app.add_url_rule("/admin/forgotten", "forgotten", lambda: "secret")
    browser = Browser(app.test_client())
    browser.login(manager_user.email)
    assert browser.get("/admin/forgotten").status_code == 403


PRINTED_BY_ID = ["patients.poster", "patients.welcome", "cards.print_personal", "cards.personal_pdf"]


def test_what_is_printed_for_a_patient_by_id_has_the_patient_page_s_access(app):
    """The rule: printing for a patient (poster, slip, personal card) is open exactly to whoever may open their page."""
    assert {endpoint: ACCESS[endpoint] for endpoint in PRINTED_BY_ID} == dict.fromkeys(PRINTED_BY_ID,
                                                                                       ACCESS["patients.show"])
    assert ACCESS["patients.show"] is Access.STAFF


def test_desk_staff_of_any_branch_open_and_print_for_a_patient_of_another(app, make_staff):
    """Patients are the clinic's, not a branch's: a desk at South serves a patient enrolled at North (they came to
    the other site), so it opens the page, the poster and the personal card by the patient's id; an anonymous visitor
    guessing ids gets the login page."""
    from clinic.services import branches
    from clinic.services.patients import PatientDetails, enrol_patient
    from clinic.services.transaction import Actor

    north, south = (branches.create_branch(name, "", Actor()) for name in ("North", "South"))
    patient, _token = enrol_patient(PatientDetails(full_name="Wang Li", phone="13811112222"),
                                    Actor(branch_id=north.id))
    assert patient.branch_id == north.id
    desk_user = make_staff(email="south-desk@example.com")
    branches.assign_branches({desk_user.id: south.id}, Actor())
    desk = Browser(app.test_client())
    desk.login(desk_user.email)
    assert desk.get(f"/patients/{patient.id}").status_code == 200
    poster = desk.get(f"/patients/{patient.id}/poster.pdf")
    assert poster.status_code == 200 and poster.data.startswith(b"%PDF")
    printed = desk.post(f"/cards/personal/{patient.id}", {"design": "classic"})
    assert printed.status_code == 303
    card = desk.get(printed.headers["Location"])
    assert card.status_code == 200 and card.data.startswith(b"%PDF")

    anonymous = Browser(app.test_client())
    for url in (f"/patients/{patient.id}", f"/patients/{patient.id}/poster.pdf", printed.headers["Location"]):
        refused = anonymous.get(url)
        assert refused.status_code == 302 and "/login" in refused.headers["Location"], url


CSP_NEEDS = ["default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'",
             "base-uri 'none'", "form-action 'self'"]


def test_every_answer_carries_the_security_headers(app, manager_user):
    browser = Browser(app.test_client())
    browser.login(manager_user.email)
    for endpoint, method, url in every_request(app):
        if method != "GET":
            continue
        headers = browser.get(url).headers
        policy = headers.get("Content-Security-Policy", "")
        assert all(part in policy for part in CSP_NEEDS), (url, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, url
        assert headers.get("X-Content-Type-Options") == "nosniff", url
        assert headers.get("Referrer-Policy") in ("same-origin", "no-referrer"), url
        assert "Strict-Transport-Security" not in headers, url  # plain HTTP: HSTS would be meaningless
        if endpoint not in ("static", "public.brand_css", "public.upload", "public.invite", "honours.leaderboard"):
            assert "no-store" in headers.get("Cache-Control", ""), (url, headers.get("Cache-Control"))


def test_over_https_answers_ask_for_https_from_now_on(app, desk_user):
    client = app.test_client()
    response = client.get("/login", base_url="https://clinic.test")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_behind_a_trusted_https_proxy_hsts_and_secure_cookies_follow_the_proxy(app, desk_user, monkeypatch):
    from clinic import create_app

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://clinic.test")
    proxied = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                          "SECRET_KEY": "test-secret", "TRUSTED_PROXY_HOPS": 1, "RATELIMIT_ENABLED": False})
    assert proxied.config["SESSION_COOKIE_SECURE"] is True
    client = proxied.test_client()
    response = client.get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "Strict-Transport-Security" in response.headers


def test_the_session_cookie_is_httponly_and_samesite_lax(browser, desk_user):
    response = browser.post("/login", {"email": desk_user.email, "password": "correct horse battery"})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # the test app is served over plain HTTP


def test_htmx_is_configured_for_the_strict_policy(manager):
    page = manager.get("/desk/").get_data(as_text=True)
    config = re.search(r'<meta name="htmx-config" content=\'([^\']+)\'', page).group(1)
    assert '"allowEval":false' in config and '"includeIndicatorStyles":false' in config
    assert '"historyCacheSize":0' in config
    assert "<script>" not in page and " style=" not in page and "hx-on" not in page
